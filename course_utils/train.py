"""One training loop for every notebook: progress bar, loss history, EMA, checkpoints, resume.

    result = fit(model, loss_fn, next_batch, TrainConfig(steps=2000, lr=1e-3))

`loss_fn(model, batch) -> scalar tensor`; `next_batch(step) -> batch` (anything
`loss_fn` accepts). With `TrainConfig(checkpoint="runs/x.pt")` the loop writes an
atomic checkpoint every `checkpoint_every` steps and at the end, and a later call with
the same path resumes from it. Ctrl-C (KeyboardInterrupt) saves the last completed step
before it stops the loop (`TrainingInterrupted`), so nothing trained is lost; a later call
resumes from there and ends with exactly the weights of an unbroken run.

A checkpoint is a plain dict, loadable with `torch.load(weights_only=True)`:
`format`, `model_class`, `model_config`, `model` (state dict), `ema`, `optimizer`,
`step`, `losses`, `metrics`, `train_config`.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import signal
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from .progress import tqdm  # tqdm.auto; in notebooks the saved text/plain ends at the final bar

CHECKPOINT_FORMAT = "course_utils.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, foreign, or for another model/config."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during `fit`, raised once the checkpoint (if there is one) is safe.

    `step`: the steps completed; `steps`: the steps asked for; `checkpoint`: the checkpoint
    path to resume from (None when there is none); `saved_step`: the step it holds (equal to
    `step` unless the interrupt tore a step that could not be saved).
    """

    def __init__(self, step: int, steps: int, checkpoint: str | None = None, saved_step: int | None = None):
        self.step, self.steps, self.checkpoint = step, steps, checkpoint
        self.saved_step = step if saved_step is None and checkpoint else saved_step
        if checkpoint is None:
            where = "nothing saved (no checkpoint path)"
        elif self.saved_step == step:
            where = f"saved {checkpoint}"
        else:
            where = f"{checkpoint} holds step {self.saved_step}"
        super().__init__(f"interrupted at step {step} of {steps}; {where}")


@dataclass
class TrainConfig:
    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.0
    ema_decay: float | None = None  # e.g. 0.999; None = no EMA copy
    grad_clip: float | None = 1.0
    checkpoint: str | None = None  # path; enables periodic checkpoints and resume
    checkpoint_every: int = 1000
    resume: bool = True
    progress: bool = True
    desc: str = "training"


@dataclass
class TrainResult:
    model: nn.Module
    ema_model: nn.Module | None
    losses: list[float]
    step: int
    metrics: dict = field(default_factory=dict)
    resumed_from: int = 0
    seconds: float = 0.0  # wall time of the steps run in this call
    optimizer: torch.optim.Optimizer | None = None  # its state as training left it

    @property
    def eval_model(self) -> nn.Module:
        """The model to evaluate and sample from: the EMA average of the weights when training kept
        one (`ema_decay`), else the trained model. No checkpoint is selected: it is the last state."""
        return self.ema_model if self.ema_model is not None else self.model


def _check_train_config(cfg: TrainConfig) -> None:
    if cfg.steps < 0:
        raise ValueError(f"steps must be >= 0, got {cfg.steps}.")
    if cfg.checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be an integer >= 1, got {cfg.checkpoint_every}.")
    if not cfg.lr > 0:
        raise ValueError(f"lr must be > 0, got {cfg.lr}.")
    if cfg.ema_decay is not None and not 0.0 < cfg.ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in (0, 1), got {cfg.ema_decay}.")
    if cfg.grad_clip is not None and not cfg.grad_clip > 0:
        raise ValueError(f"grad_clip must be > 0 (or None), got {cfg.grad_clip}.")


class EMA:
    """Exponential moving average of a model's parameters: θ_ema ← d·θ_ema + (1−d)·θ."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}.")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel and/or `torch.compile` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a distributed run."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def model_config(model: nn.Module) -> dict:
    """The constructor arguments a course model records in `model.config` (else {})."""
    cfg = getattr(model, "config", None)
    return dict(cfg) if isinstance(cfg, dict) else (asdict(cfg) if cfg is not None else {})


def orphan_temporaries(path: str | Path) -> list[Path]:
    """The files `atomic_save(..., path)` leaves when killed mid-write: `<name>XXXXXXXX.tmp`
    (mkstemp's eight random characters) in `path`'s folder; nothing else."""
    path = Path(path)
    pattern = re.compile(re.escape(path.name) + r"[a-z0-9_]{8}\.tmp")
    try:
        return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name) and p.is_file())
    except OSError:  # no folder yet (or not one): nothing left over
        return []


def remove_orphan_temporaries(path: str | Path) -> int:
    """Delete the temporary files a killed `atomic_save` to `path` left behind; their number."""
    removed = 0
    for tmp in orphan_temporaries(path):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed += 1
    return removed


def check_writable(path: str | Path, what: str = "checkpoint") -> None:
    """Make `path`'s folder and write (then delete) a temporary file in it, as `atomic_save` will;
    a one-line ValueError naming `what` if that fails: found before training, not after it."""
    path = Path(path)
    hint = f"choose another {what}" if what.startswith("--") else f"choose another {what} path"
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder, not a file; {hint}.")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise ValueError(f"{what} {path} cannot be written: {ancestor} is a file, not a folder; {hint}.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        reason = (err.strerror or type(err).__name__).lower()
        raise ValueError(f"{what} {path} cannot be written: {reason} ({err.filename or path.parent}); "
                         f"{hint}.") from None


def atomic_save(obj: Any, path: str | Path) -> None:
    """`torch.save` to a temporary file in the same folder, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_checkpoint(path, model, *, optimizer=None, ema=None, step=0, losses=(), metrics=None,
                    train_config=None) -> None:
    atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "model_class": type(model).__name__,
            "model_config": model_config(model),
            "model": model.state_dict(),
            "ema": ema.model.state_dict() if ema is not None else None,
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "step": int(step),
            "losses": [float(v) for v in losses],
            "metrics": dict(metrics or {}),
            "train_config": asdict(train_config) if train_config is not None else {},
        },
        path,
    )


def read_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load and validate a course checkpoint (weights only); clear errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle, zip and unpickling errors all mean the same here
        raise CheckpointError(
            f"{path} could not be read as a checkpoint (corrupt, truncated, or not a "
            f"PyTorch file): {type(err).__name__}."
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is a PyTorch file but not a course checkpoint (no '{CHECKPOINT_FORMAT}' format tag)."
        )
    return ckpt


def check_compatible(ckpt: dict, model: nn.Module, path="checkpoint") -> None:
    """Raise `CheckpointError` unless `ckpt` was written for this model class, config and shapes."""
    name, cfg = type(model).__name__, model_config(model)
    if ckpt["model_class"] != name:
        raise CheckpointError(f"{path} holds a {ckpt['model_class']}, not a {name}.")
    if ckpt["model_config"] != cfg:
        diff = {k: (ckpt["model_config"].get(k), cfg.get(k))
                for k in set(cfg) | set(ckpt["model_config"])
                if ckpt["model_config"].get(k) != cfg.get(k)}
        raise CheckpointError(
            f"{path} was written for a {name} with another config; differing (checkpoint, model): {diff}."
        )
    own = model.state_dict()
    for key, value in ckpt["model"].items():
        if key not in own or own[key].shape != value.shape:
            raise CheckpointError(f"{path}: parameter {key!r} does not fit this {name}.")
    missing = set(own) - set(ckpt["model"])
    if missing:
        raise CheckpointError(f"{path} lacks parameters {sorted(missing)[:3]} of this {name}.")


def load_model(path: str | Path, model: nn.Module, *, ema: bool = True) -> dict:
    """Load a checkpoint's weights (its EMA weights when present and `ema`) into `model`."""
    ckpt = read_checkpoint(path)
    check_compatible(ckpt, model, path)
    state = ckpt["ema"] if ema and ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(state)
    return ckpt


def export_weights(src: str | Path, dst: str | Path, *, ema: bool = True) -> dict:
    """Write the weights of checkpoint `src` (its EMA weights when present and `ema`) to `dst`
    as a small checkpoint for shipping: no optimiser state and no second copy of the weights.

    `load_model` reads it like any checkpoint; training from it starts a fresh optimiser.
    """
    ckpt = read_checkpoint(src)
    use_ema = ema and ckpt.get("ema") is not None
    if use_ema:
        ckpt["model"] = ckpt["ema"]
    ckpt.update(ema=None, optimizer=None, metrics={**ckpt.get("metrics", {}), "weights": "ema" if use_ema else "model"})
    remove_orphan_temporaries(dst)
    atomic_save(ckpt, dst)
    return ckpt


class _SigintGuard:
    """Lets Ctrl-C land between training steps, never inside one.

    While installed (main thread, Python's own SIGINT handler in place: a terminal, a Jupyter
    kernel), a SIGINT that arrives inside `deferred()` is held until the block ends, so that
    an optimiser step, the EMA update and the loss record are done all or not at all.
    Elsewhere (another thread, a custom handler) nothing is installed, and `torn` says
    that an interrupt cut a step in two (its state is then not saved).
    """

    def __init__(self):
        self.installed = self.inside = self.pending = self.torn = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError, TypeError):
                if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                    self._previous = signal.signal(signal.SIGINT, self._handle)
                    self.installed = True
        return self

    def __exit__(self, *exc):
        if self.installed:
            signal.signal(signal.SIGINT, self._previous)
            self.installed = False
        return False

    def _handle(self, signum, frame):
        if self.inside:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self, *, hold: bool = False):
        """Hold a SIGINT until the block ends; then raise it (or, with `hold`, drop it)."""
        outer, self.inside = self.inside, True
        try:
            yield
        except KeyboardInterrupt:
            self.torn = self.torn or not hold  # it cut the block short: the step may be half done
            raise
        finally:
            self.inside = outer
        if self.pending and not outer:
            self.pending = False
            if not hold:
                raise KeyboardInterrupt


_HYPERPARAMETERS = ("lr", "weight_decay")  # what a TrainConfig sets and a resumed run may change


def fit(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    next_batch: Callable[[int], Any],
    config: TrainConfig | None = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    metrics_fn: Callable[[nn.Module], dict] | None = None,
) -> TrainResult:
    """Train `model` for `config.steps` steps (resuming from `config.checkpoint` if present).

    `model` may be wrapped in DistributedDataParallel or `torch.compile`: the EMA copy and
    the checkpoints hold the plain module, and only rank 0 writes or shows progress.

    Before the first step the checkpoint's folder must be writable (ValueError otherwise) and
    the temporary files of an earlier, killed write to it are removed. On resume the
    optimiser keeps its state but takes this call's learning rate and weight decay (a note
    says so when they changed). Ctrl-C saves the last completed step and raises
    `TrainingInterrupted` (a KeyboardInterrupt).
    """
    cfg = config or TrainConfig()
    net, main = unwrap(model), is_main_process()
    _check_train_config(cfg)
    if cfg.checkpoint and main:
        remove_orphan_temporaries(cfg.checkpoint)
        check_writable(cfg.checkpoint)
    opt = optimizer or torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses: list[float] = []
    start, ckpt = 0, None
    if cfg.checkpoint and cfg.resume and Path(cfg.checkpoint).is_file():
        ckpt = read_checkpoint(cfg.checkpoint)
        check_compatible(ckpt, net, cfg.checkpoint)
        net.load_state_dict(ckpt["model"])
        if ckpt.get("optimizer") is not None:
            # load_state_dict also restores the saved lr and weight decay: this call's values win
            wanted = [{k: g[k] for k in _HYPERPARAMETERS if k in g} for g in opt.param_groups]
            opt.load_state_dict(ckpt["optimizer"])
            changed = {}
            for group, values in zip(opt.param_groups, wanted):
                for key, value in values.items():
                    if group.get(key) != value:
                        changed.setdefault(key, (group.get(key), value))
                        group[key] = value
            if changed and main:
                print("; ".join(f"{k} changed from {float(old):g} to {float(new):g}" for k, (old, new) in changed.items())
                      + f" on resume from {cfg.checkpoint} (the optimiser's other state is kept)", flush=True)
        start, losses = ckpt["step"], list(ckpt["losses"])
    # The EMA copy starts from the weights training resumes from (a checkpoint without an
    # EMA, such as an exported one, starts it from its weights), then takes the saved average.
    ema = EMA(net, cfg.ema_decay) if cfg.ema_decay is not None else None
    if ema is not None and ckpt is not None and ckpt.get("ema") is not None:
        ema.model.load_state_dict(ckpt["ema"])

    done = start  # steps whose update is complete: `losses` holds `done` values
    saved = start if ckpt is not None else None  # the step the checkpoint file holds

    def checkpoint(step, metrics=None):
        nonlocal saved
        if cfg.checkpoint and main:
            if metrics is None:
                metrics = metrics_fn(ema.model if ema else net) if metrics_fn else {}
            save_checkpoint(cfg.checkpoint, net, optimizer=opt, ema=ema, step=step,
                            losses=losses, metrics=metrics, train_config=cfg)
            saved = step

    model.train()
    guard = _SigintGuard()
    bar = tqdm(range(start, cfg.steps), desc=cfg.desc, disable=not (cfg.progress and main),
               initial=start, total=cfg.steps, mininterval=0.5)
    with guard:
        try:
            started = time.perf_counter()
            for step in bar:
                loss = loss_fn(model, next_batch(step))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"The loss became {loss.item()} at step {step}; lower the learning rate.")
                with guard.deferred():  # a Ctrl-C in here lands once the step is complete
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip is not None:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    opt.step()
                    if ema is not None:
                        ema.update(net)
                    if dist.is_available() and dist.is_initialized():  # log the global batch's loss
                        loss = loss.detach().clone()
                        dist.all_reduce(loss)
                        loss /= dist.get_world_size()
                    losses.append(loss.item())
                    done = step + 1
                if step % 50 == 0:
                    bar.set_postfix(loss=f"{losses[-1]:.4f}")
                if cfg.checkpoint and done % cfg.checkpoint_every == 0:
                    checkpoint(done)
            bar.close()
            seconds = time.perf_counter() - started
            model.eval()
            final_metrics = metrics_fn(ema.model if ema else net) if metrics_fn else {}
            # (a checkpoint saved on Ctrl-C after the last step still lacks its final metrics)
            if cfg.checkpoint and (cfg.steps > start or (ckpt is not None and (ckpt.get("metrics") or {}).get("interrupted"))):
                checkpoint(max(cfg.steps, start), final_metrics)
        except KeyboardInterrupt as err:
            bar.close()
            if cfg.checkpoint and main and done > (saved or 0) and not guard.torn:
                with guard.deferred(hold=True):  # a second Ctrl-C does not cut the save short
                    checkpoint(done, {"interrupted": True})
            path = cfg.checkpoint if cfg.checkpoint and saved is not None else None
            raise TrainingInterrupted(done, cfg.steps, path, saved if path else None) from err
    return TrainResult(net, ema.model if ema else None, losses, max(cfg.steps, start),
                       final_metrics, resumed_from=start, seconds=seconds, optimizer=opt)


def smooth(values, window: int = 50) -> torch.Tensor:
    """Moving average of a loss curve (for plots and for 'the loss fell' asserts)."""
    v = torch.as_tensor(values, dtype=torch.float64)
    window = max(1, min(window, len(v)))
    kernel = torch.ones(window, dtype=torch.float64) / window
    return torch.nn.functional.conv1d(v[None, None], kernel[None, None])[0, 0]
