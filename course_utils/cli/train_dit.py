"""Train the course's DiT on MNIST with the rectified-flow objective, on one device or many.

    python -m course_utils train-dit --model tiny --steps 7000 --checkpoint runs/dit_mnist.pt --export runs/dit_mnist_export.pt
    python -m course_utils train-dit --config-file run.json         # the same flags as JSON
    torchrun --standalone --nproc_per_node=4 -m course_utils.cli.train_dit --model small ...

Without `--checkpoint` nothing is saved; `--export data/dit_mnist.pt --force` replaces the
shipped weights that notebook 10 loads. The command refuses to overwrite an existing export
without `--force`, and an export that is the checkpoint itself.

Objective (flow convention, x0 noise, x1 data): x_t = (1 − t) x0 + t x1 and
E ||v(x_t, t, y) − (x1 − x0)||² (`flow_matching.cfm_loss` on `OTPath()`), t uniform or
logit-normal (SD3). Labels are dropped (replaced by the null label) at the `class_dropout`
rate for classifier-free guidance.

Under torchrun each process takes a disjoint share of every global batch (a
DistributedSampler over the images), the model is wrapped in DistributedDataParallel
(gloo on CPU, NCCL on CUDA), and the noise and times of a step are drawn for the whole
global batch from one seed, and so is the label-dropout mask, so N processes take the
same step as one process would. On CUDA, bf16 autocast and `torch.compile` are on by default.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from .. import config as course_config
from ..mnist import SOURCES, default_data_dir, load_mnist
from ..models.dit import CONFIGS, DiT, get_config
from ..flow_matching import TIME_SAMPLINGS, OTPath, cfm_loss, sample_time
from ..train import TrainConfig, export_weights, fit
from ._config import check_outputs, check_paths, check_ranges, describe, parse_config, run, steps_note


PATH = OTPath()  # x_t = t x1 + (1 − t) x0, u = x1 − x0: the rectified-flow objective


@dataclass
class DiTTrainConfig:
    model: str = field(default="tiny", metadata={"choices": tuple(CONFIGS), "help": "a named DiT configuration"})
    hidden: int | None = field(default=None, metadata={"help": "override of the named configuration's width",
                                                       "min": 1})
    depth: int | None = field(default=None, metadata={"help": "override of its number of blocks", "min": 1})
    heads: int | None = field(default=None, metadata={"help": "override of its attention heads", "min": 1})
    qk_norm: bool = True
    class_dropout: float = field(default=0.1, metadata={"help": "rate at which labels become the null label",
                                                        "min": 0, "max": 1})
    steps: int = field(default=7000, metadata={"help": "total steps (a resumed run continues up to it)", "min": 1})
    batch_size: int = field(default=128, metadata={"help": "global batch, split over the processes", "min": 1})
    lr: float = field(default=3e-4, metadata={"range": (0, math.inf)})
    ema_decay: float = field(default=0.999, metadata={"range": (0, 1)})
    time_sampling: str = field(default="logit_normal", metadata={"choices": TIME_SAMPLINGS})
    logit_mean: float = 0.0
    logit_std: float = field(default=1.0, metadata={"range": (0, math.inf)})
    checkpoint: str | None = field(default=None, metadata={"help": "resumable checkpoint, e.g. runs/dit_mnist.pt"})
    export: str | None = field(default=None, metadata={
        "help": "where the EMA weights alone go when training ends, e.g. runs/dit_mnist_export.pt"})
    checkpoint_every: int = field(default=500, metadata={"help": "steps between checkpoints (Ctrl-C saves too)",
                                                         "min": 1})
    seed: int = 0
    data_source: str = field(default="auto", metadata={"choices": SOURCES, "help": "MNIST source"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:N or mps (None: the best available)"})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 autocast (None: on for CUDA)"})
    compile: bool | None = field(default=None, metadata={"help": "torch.compile (None: on for CUDA)"})
    progress: bool = True
    force: bool = field(default=False, metadata={"help": "let the command overwrite an existing --export"})

    def __post_init__(self):
        check_ranges(self)


def default_export_path():
    """The shipped EMA weights that notebook 10 loads: data/dit_mnist.pt."""
    return default_data_dir() / "dit_mnist.pt"


def model_overrides(cfg: DiTTrainConfig) -> dict:
    over = {k: getattr(cfg, k) for k in ("hidden", "depth", "heads") if getattr(cfg, k) is not None}
    return {**over, "qk_norm": cfg.qk_norm, "class_dropout": cfg.class_dropout}


def batch_stream(images, labels, cfg: DiTTrainConfig, rank: int, world: int):
    """`next_batch(step) -> (x1, y, x0, t, drop)`: this process's share of global batch `step`.

    Noise x0, times t and the label-dropout mask drop (True = null label) are drawn for the
    whole global batch from a generator seeded by (seed, step), then sliced [rank::world],
    the same interleaving by which the DistributedSampler deals out the images. So every
    sample of the global batch gets the same noise, time and label choice however many
    processes share it, and a resumed run draws what the uninterrupted run drew.
    """
    if cfg.batch_size % world:
        raise ValueError(f"The global batch {cfg.batch_size} must divide evenly over {world} processes.")
    local = cfg.batch_size // world
    dataset = TensorDataset(images, labels)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=local, sampler=sampler, drop_last=True)
    per_epoch = len(loader)
    if per_epoch == 0:
        raise ValueError(f"The data set ({len(dataset)} images) is smaller than one batch ({cfg.batch_size}).")
    state = {"epoch": None, "it": None, "pos": 0}

    def next_batch(step):
        epoch, pos = divmod(step, per_epoch)
        if state["epoch"] != epoch or state["pos"] != pos:
            sampler.set_epoch(epoch)
            state.update(epoch=epoch, it=itertools.islice(iter(loader), pos, None), pos=pos)
        x1, y = next(state["it"])
        state["pos"] += 1
        # noise and times for the whole global batch, then this process's interleaved share
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        x0 = torch.randn((cfg.batch_size, *images.shape[1:]), generator=gen)[rank::world]
        t = sample_time(cfg.batch_size, cfg.time_sampling, m=cfg.logit_mean, s=cfg.logit_std,
                        generator=gen)[rank::world]
        drop = (torch.rand(cfg.batch_size, generator=gen) < cfg.class_dropout)[rank::world]
        return x1, y, x0, t, drop

    return next_batch


def setup_distributed(cfg: DiTTrainConfig):
    """(rank, world size, device); starts the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, course_config.get_device(cfg.device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available() and (cfg.device in (None, "cuda")):
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=10))
    return dist.get_rank(), world, device


def train(cfg: DiTTrainConfig):
    if cfg.time_sampling not in TIME_SAMPLINGS:
        raise ValueError(f"Unknown time sampling {cfg.time_sampling!r}: use one of {', '.join(TIME_SAMPLINGS)}.")
    check_paths(cfg.checkpoint, cfg.export)  # checked before training, not after it
    rank, world, device = setup_distributed(cfg)
    try:
        torch.manual_seed(cfg.seed)  # the same initial weights in every process
        model = DiT(get_config(cfg.model, **model_overrides(cfg))).to(device)
        data = load_mnist("train", source=cfg.data_source, quiet=rank != 0)
        next_batch = batch_stream(data.images, data.labels, cfg, rank, world)
        on_cuda = device.type == "cuda"
        bf16 = on_cuda if cfg.bf16 is None else cfg.bf16
        net = model
        # Compile the plain module, then wrap it in DDP: PyTorch's guide "Where to apply
        # torch.compile?" advises applying compile to the inner module passed to DDP.
        if (on_cuda if cfg.compile is None else cfg.compile):
            net = torch.compile(net)
        if world > 1:
            net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if on_cuda else None)

        def loss_fn(net, batch):
            x1, y, x0, t, drop = (v.to(device, non_blocking=True) for v in batch)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                return cfm_loss(net, PATH, x0, x1, t, y=y, drop=drop)

        result = fit(net, loss_fn, next_batch, TrainConfig(
            steps=cfg.steps, lr=cfg.lr, ema_decay=cfg.ema_decay, checkpoint=cfg.checkpoint,
            checkpoint_every=cfg.checkpoint_every, progress=cfg.progress, desc=f"DiT-{cfg.model}"))
        if rank == 0 and cfg.export:
            export_weights(cfg.checkpoint, cfg.export)
            print(f"exported the EMA weights to {cfg.export}")
        ran = result.step - result.resumed_from
        if rank == 0 and ran > 0:
            rate = ran * cfg.batch_size / result.seconds
            print(f"{ran} steps of global batch {cfg.batch_size} on {world} x {device}: "
                  f"{rate:.1f} images/s (bf16={bf16}); last loss {result.losses[-1]:.4f}")
        if world > 1:
            # Free the DDP wrapper while its process group lives, and let every rank finish its
            # work (rank 0 writes the checkpoint) before any of them tears the group down.
            del net
            dist.barrier()
        return result
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def parse_args(argv=None) -> DiTTrainConfig:
    return parse_config(DiTTrainConfig, argv, prog="python -m course_utils train-dit",
                        description=__doc__.splitlines()[0])


def main(argv=None):
    """`python -m course_utils train-dit` (also under torchrun)."""
    cfg = parse_args(argv)
    check_outputs(cfg.checkpoint, cfg.export, cfg.force)
    if int(os.environ.get("RANK", "0")) == 0:
        print(describe(cfg))
    result = train(cfg)
    note = steps_note(result, cfg.checkpoint, cfg.steps)
    if note and int(os.environ.get("RANK", "0")) == 0:
        print(note)


if __name__ == "__main__":
    sys.exit(run(main))
