"""Run mode, device and seeding: the one place where the course's sizes scale.

`COURSE_MODE=fast` (the default, and what the tests use) keeps every notebook short on a
laptop CPU; `COURSE_MODE=full` is the real run. Notebooks read their sizes from `sizes()`
instead of testing the mode themselves.

`COURSE_DEVICE` overrides the device (`cpu`, `cuda`, `cuda:1`, `mps`); otherwise CUDA,
then Apple MPS, then CPU.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, replace

import numpy as np
import torch

MODES = ("fast", "full")


@dataclass(frozen=True)
class Sizes:
    """How big each kind of experiment is in one mode.

    Notebooks use these fields (and simple multiples of them) instead of writing
    `if fast:` branches.
    """

    mode: str
    n_samples: int  # points drawn for figures and sample-based metrics (W2, MMD)
    n_test: int  # held-out points for test NLL
    batch_size: int  # minibatch of a 2D model
    train_steps: int  # optimiser steps of a small 2D model
    hidden: int  # width of 2D MLPs
    depth: int  # hidden layers of 2D MLPs
    ode_steps: int  # fixed-grid solver steps for sampling
    grid: int  # points per axis of density heat maps
    mnist_steps: int  # optimiser steps of an MNIST model
    mnist_batch: int
    n_images: int  # generated images for image metrics


FAST = Sizes(
    mode="fast",
    n_samples=1000,
    n_test=2000,
    batch_size=256,
    train_steps=600,
    hidden=64,
    depth=3,
    ode_steps=32,
    grid=100,
    mnist_steps=60,
    mnist_batch=64,
    n_images=256,
)

FULL = Sizes(
    mode="full",
    n_samples=4000,
    n_test=20000,
    batch_size=512,
    train_steps=6000,
    hidden=256,
    depth=3,
    ode_steps=100,
    grid=200,
    mnist_steps=20000,
    mnist_batch=128,
    n_images=5000,
)


def get_mode(mode: str | None = None) -> str:
    """The run mode: the argument if given, else `$COURSE_MODE`, else `"fast"`."""
    mode = mode if mode is not None else os.environ.get("COURSE_MODE", "fast")
    mode = mode.strip().lower()
    if mode not in MODES:
        raise ValueError(
            f"Unknown course mode {mode!r}: set COURSE_MODE to one of {', '.join(MODES)}."
        )
    return mode


def sizes(mode: str | None = None) -> Sizes:
    """The `Sizes` of the current (or given) mode."""
    return FAST if get_mode(mode) == "fast" else FULL


def with_sizes(base: Sizes, **changes) -> Sizes:
    """A copy of `base` with some fields changed (for a notebook's own experiment)."""
    return replace(base, **changes)


def get_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: the argument, else `$COURSE_DEVICE`, else CUDA, MPS, CPU."""
    requested = device if device is not None else os.environ.get("COURSE_DEVICE")
    if requested is None or str(requested).strip() == "":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(str(requested).strip().lower())
    except RuntimeError:
        raise ValueError(
            f"Unknown device {requested!r}: use 'cpu', 'cuda', 'cuda:N' or 'mps' "
            "(COURSE_DEVICE or the device argument)."
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {requested!r} was asked for, but this PyTorch sees no CUDA GPU.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"Device {requested!r} was asked for, but only {torch.cuda.device_count()} GPU(s) exist."
        )
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ValueError(f"Device {requested!r} was asked for, but Apple MPS is not available here.")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"Unsupported device {requested!r}: use 'cpu', 'cuda', 'cuda:N' or 'mps'.")
    return dev


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and CUDA); return a CPU generator with that seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def describe(device: torch.device | None = None) -> str:
    """One line saying the mode, the device and the PyTorch version."""
    device = device if device is not None else get_device()
    return f"course mode: {get_mode()} | device: {device} | torch {torch.__version__}"
