"""Train the course's FFJORD continuous normalizing flow on a 2D toy set (the checkerboard by default).

    python -m course_utils train-ffjord --steps 3000
    python -m course_utils train-ffjord --steps 3000 --export data/ffjord_checkerboard.pt --force   # replace the shipped file
    python -m course_utils train-ffjord --config-file run.json          # the same options as JSON

writes a resumable checkpoint (weights, EMA, optimiser) to `--checkpoint` (runs/ffjord_checkerboard.pt,
every `--checkpoint-every` steps and on Ctrl-C; run the command again to resume) and, when training ends,
the EMA weights alone to `--export` (runs/ffjord_checkerboard_export.pt, about 180 kB; notebook 03 loads
the shipped data/ffjord_checkerboard.pt).

Maximum likelihood through the ODE solver (Grathwohl et al. 2019): the field is a `TimeMLP`
`f(x, t)`, and each step minimises the batch mean of −log p_1(x) = −log N(x_0; 0, I) + ℓ_0,
`cnf.nll_loss`, with the augmented ODE integrated from the data at t = 1 back to the base at t = 0
by `--ode-steps` fixed steps of `--method` (an adaptive solver buys nothing at this tolerance and
makes a step's cost grow as the field bends). In 2D the exact divergence costs two backward
passes, so it is the default (`--trace hutchinson` uses one Rademacher probe per step instead).
EMA weights, resumable checkpoints. Batch `step` (points and probe) is drawn from a generator
seeded by (seed, step), so a resumed run takes exactly the steps of an unbroken one.

The shipped file is the second command with the defaults: 3000 steps, about 0.5 s each on one
thread of a busy 2-core CPU (about 25 minutes).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import cnf
from .. import config as course_config
from .. import data as toy_data
from ..mnist import default_data_dir
from ..models import TimeMLP
from ..train import TrainConfig, export_weights, fit, read_checkpoint
from ._config import check_paths, check_ranges, config_from, run, run_summary, runs_dir, train_command

def default_path() -> Path:
    """The shipped EMA weights that notebook 03 loads: data/ffjord_checkerboard.pt."""
    return default_data_dir() / "ffjord_checkerboard.pt"


def default_run_path() -> Path:
    """The resumable training checkpoint, runs/ffjord_checkerboard.pt (git ignores runs/)."""
    return runs_dir() / "ffjord_checkerboard.pt"


@dataclass
class FFJORDTrainConfig:
    steps: int = field(default=3000, metadata={"help": "total steps (a resumed run continues up to it)", "min": 1})
    data: str = field(default="checkerboard", metadata={"choices": toy_data.TOY_DATASETS, "help": "2D toy set"})
    batch_size: int = field(default=256, metadata={"min": 1})
    hidden: int = field(default=128, metadata={"help": "width of the field's MLP", "min": 1})
    depth: int = field(default=3, metadata={"help": "hidden layers of the field's MLP", "min": 1})
    time_dim: int = field(default=16, metadata={"help": "size of the sinusoidal time embedding", "min": 2})
    time_scale: float = field(default=10.0, metadata={"help": "frequency scale of the time embedding",
                                                      "range": (0, math.inf)})
    lr: float = field(default=3e-3, metadata={"range": (0, math.inf)})
    ema_decay: float = field(default=0.995, metadata={"range": (0, 1)})
    method: str = field(default="rk4", metadata={"choices": ("euler", "midpoint", "rk4"),
                                                 "help": "fixed-step solver of the augmented ODE"})
    ode_steps: int = field(default=8, metadata={"help": "solver steps from t = 1 back to t = 0", "min": 1})
    trace: str = field(default="exact", metadata={"choices": cnf.TRACES, "help": "divergence in training"})
    seed: int = field(default=0, metadata={"help": "initial weights; batch `step` is drawn from seed (seed, step)"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:N or mps (None: $COURSE_DEVICE, "
                                                               "else the best available)"})
    checkpoint: str | None = field(default_factory=lambda: str(default_run_path()),
                                   metadata={"help": "resumable checkpoint"})
    export: str | None = field(default_factory=lambda: str(runs_dir() / "ffjord_checkerboard_export.pt"),
                               metadata={"help": "where the EMA weights alone go when training ends ('' for none)"})
    checkpoint_every: int = field(default=250, metadata={"help": "steps between checkpoints (Ctrl-C saves too)",
                                                         "min": 1})
    progress: bool = True
    force: bool = field(default=False, metadata={"help": "let the command overwrite an existing --export"})

    def __post_init__(self):
        check_ranges(self)

    @property
    def solver(self) -> dict:
        """The keyword arguments of `cnf.log_prob` that training uses."""
        return dict(method=self.method, steps=self.ode_steps)


def make_model(cfg: FFJORDTrainConfig | None = None, **overrides) -> TimeMLP:
    """The field `f(x, t)` the config describes (fresh weights)."""
    cfg = config_from(FFJORDTrainConfig, cfg, overrides)
    return TimeMLP(dim=2, hidden=cfg.hidden, depth=cfg.depth, time_dim=cfg.time_dim, time_scale=cfg.time_scale)


def batch_stream(cfg: FFJORDTrainConfig):
    """`next_batch(step) -> (x, generator)`, a function of the step alone.

    A generator seeded by (seed, step) draws the step's points; the loss goes on drawing the
    Hutchinson probe from it (unused with the exact trace).
    """
    def next_batch(step):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        return toy_data.sample_toy(cfg.data, cfg.batch_size, generator=gen), gen

    return next_batch


def train_ffjord(cfg: FFJORDTrainConfig | str | Path | None = None, **overrides):
    """Train (or resume) FFJORD as `cfg` says; return `train.fit`'s result.

    `cfg` may also be a checkpoint path (then nothing is exported), and keyword arguments
    override its fields: `train_ffjord(path, steps=2, hidden=16)` (run again, it resumes).
    `checkpoint=""` trains in memory alone.
    """
    cfg = config_from(FFJORDTrainConfig, cfg, overrides)
    check_paths(cfg.checkpoint, cfg.export)
    device = course_config.get_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = make_model(cfg).to(device)
    next_batch = batch_stream(cfg)

    def loss_fn(net, batch):
        x, gen = batch
        return cnf.nll_loss(net, x.to(device), trace=cfg.trace, generator=gen, **cfg.solver)

    result = fit(model, loss_fn, next_batch, TrainConfig(
        steps=cfg.steps, lr=cfg.lr, ema_decay=cfg.ema_decay, checkpoint=cfg.checkpoint or None,
        checkpoint_every=cfg.checkpoint_every, progress=cfg.progress, desc=f"FFJORD on {cfg.data}"),
        metrics_fn=lambda net: {"config": dataclasses.asdict(cfg)})
    if cfg.export:
        export_weights(cfg.checkpoint, cfg.export)
        print(f"exported the EMA weights to {cfg.export}")
    return result


def load_ffjord(path: str | Path | None = None, device=None) -> tuple[TimeMLP, dict]:
    """The field stored in checkpoint `path` (default: the shipped data/ffjord_checkerboard.pt), in eval
    mode with its EMA weights, and the config it was trained with (a dict of `FFJORDTrainConfig` fields)."""
    path = Path(path) if path is not None else default_path()
    ckpt = read_checkpoint(path)
    model = TimeMLP(**ckpt["model_config"])
    model.load_state_dict(ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"])
    return model.to(course_config.get_device(device)).eval(), dict((ckpt.get("metrics") or {}).get("config") or {})


def main(argv=None):
    """`python -m course_utils train-ffjord`."""
    def summary(cfg, result):
        ran = result.step - result.resumed_from
        return run_summary(cfg, result, f"{max(result.seconds, 1e-9) / max(ran, 1):.3f} s/step")

    train_command(FFJORDTrainConfig, train_ffjord, argv, "train-ffjord", __doc__.splitlines()[0], summary)


if __name__ == "__main__":
    sys.exit(run(main))
