"""Run mode, device and seeding: the one place where the course's sizes scale.

`COURSE_MODE=fast` (the default, and what the tests use) keeps every notebook short on a
laptop CPU; `COURSE_MODE=full` is the real run. Notebooks read their sizes from `sizes()`
instead of testing the mode themselves.

`COURSE_DEVICE` overrides the device (`cpu`, `cuda`, `cuda:1`, `mps`); otherwise CUDA,
then Apple MPS, then CPU.

`set_threads(workload)` sets PyTorch's CPU threads, once, in a notebook's setup cell (before
any training). `"2d"` (small 2D models) gets 1 thread: their ops are too small to share (a
RealNVP step took 5.6 ms with 1 or 2 threads on 2 cores), and with another busy process on the
machine a second thread fights it for a core (OpenMP oversubscription: 91 ms). `"image"` (the
MNIST U-Net and DiT) gets the usable physical cores, minus one kept free for the rest of the
machine when there are more than 2, at least 1 (on 2 cores, 2 threads made a DiT step 1.8x
faster, but 5x slower with one busy process beside it). `$COURSE_THREADS` (a positive integer)
overrides either choice; the tests set it to 1, as pytest-xdist runs one notebook per core.
`python -m course_utils bench threads` measures this on your machine.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, replace

import numpy as np
import torch

MODES = ("fast", "full")
WORKLOADS = ("2d", "image")
THREADS_ENV = "COURSE_THREADS"


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
    train_steps=4000,  # full mode: every 2D notebook within 10 minutes on 2 CPU cores (README, "How long it takes")
    hidden=128,  # 2D MLPs: toys are learned at 64–128 (FFJORD and TorchCFM use 64); 256 costs 2.4x per step for nothing visible
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


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def physical_cores() -> int:
    """An estimate of the physical cores among the usable CPUs (hyper-threads counted once).

    Linux: the distinct (package, core) pairs of the usable CPUs in /sys. Elsewhere psutil's
    physical count if it is installed, else the logical count; never more than `usable_cpus()`.
    """
    usable = usable_cpus()
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = None
    if cpus:
        cores = set()
        try:
            for cpu in cpus:
                topo = f"/sys/devices/system/cpu/cpu{cpu}/topology"
                with open(f"{topo}/core_id") as f_core, open(f"{topo}/physical_package_id") as f_pkg:
                    cores.add((f_pkg.read().strip(), f_core.read().strip()))
        except OSError:
            cores = set()
        if cores:
            return max(1, min(usable, len(cores)))
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        logical = psutil.cpu_count(logical=True)
        if physical and logical:  # scale to the affinity mask: same share of hyper-threads
            return max(1, min(usable, round(usable * physical / logical)))
    except ImportError:
        pass
    return usable


def _default_threads(workload: str) -> int:
    if workload == "2d":
        return 1
    cores = physical_cores()
    headroom = 1 if cores > 2 else 0  # keep a core for JupyterLab, the browser and the OS
    return max(1, cores - headroom)


def _threads_from_env() -> int | None:
    raw = os.environ.get(THREADS_ENV)
    if raw is None or raw.strip() == "":
        return None
    try:
        n = int(raw.strip())
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(
            f"{THREADS_ENV}={raw!r} is not a positive integer: set it to a thread count "
            f"such as 1 or 4, or unset it to let the course choose."
        )
    return n


_threads_choice: tuple[str, int, bool] | None = None  # (workload, threads, from COURSE_THREADS)


def set_threads(workload: str) -> int:
    """Set PyTorch's CPU threads for a workload, `"2d"` or `"image"`; return the count.

    `"2d"`: 1 thread. `"image"`: the usable physical cores, minus one when there are more than
    2, at least 1. `$COURSE_THREADS` (a positive integer) overrides both. Call it once in the
    setup cell, before any tensor work: the inter-op pool can only be sized before parallel
    work starts (later calls leave it as it is), and OpenMP's pool is sized at its first use.
    """
    global _threads_choice
    key = workload.strip().lower() if isinstance(workload, str) else workload
    if key not in WORKLOADS:
        raise ValueError(
            f"Unknown thread workload {workload!r}: use one of {', '.join(repr(w) for w in WORKLOADS)}."
        )
    override = _threads_from_env()
    n = override if override is not None else _default_threads(key)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # parallel work already started, or set once before: keep the pool
        pass
    _threads_choice = (key, n, override is not None)
    return n


def describe(device: torch.device | None = None) -> str:
    """One line: the mode, the device, the CPU threads (and the workload that chose them), torch."""
    device = device if device is not None else get_device()
    n = torch.get_num_threads()
    threads = f"threads: {n}"
    if _threads_choice is not None and _threads_choice[1] == n:
        workload, _, overridden = _threads_choice
        threads += f" ({workload}, {THREADS_ENV})" if overridden else f" ({workload})"
    return f"course mode: {get_mode()} | device: {device} | {threads} | torch {torch.__version__}"
