"""Training curves of a small DiT under three settings, for notebook 10's comparison.

    python -m course_utils dit-ablation --steps 1500                 # report in runs/dit_ablation.json
    python -m course_utils dit-ablation --steps 1500 --out data/dit_ablation.json --force   # replace the shipped one

Trains the same small DiT (`train_dit`, rectified flow on MNIST) three times:

- `logit_normal`: logit-normal time sampling (SD3, m = 0, s = 1) and QK-norm;
- `uniform`: uniform time sampling, QK-norm;
- `no_qk_norm`: logit-normal time sampling without QK-norm.

Every `--eval-every` steps it measures one yardstick that does not depend on how training
draws t: the rectified-flow loss per pixel on fixed held-out digits, fixed noise and an
even grid of t over (0, 1), so that the curves compare. At the end it samples each model
(guided, Euler) and records the course classifier's accuracy. The result is a small JSON
file that notebook 10 plots; full mode reruns this command.

The runs keep their checkpoints and curves in `--workdir` (`<report name>.work` beside the
report; in runs/ for a report in data/), so that a run stopped by Ctrl-C (which saves the
last step) or a crash goes on where it stopped when the same command runs again; the folder
goes once the report is written. The shipped report is replaced only with `--force`.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import metrics
from ..models import classifier
from ..dit import sample
from ..mnist import default_data_dir, load_mnist
from ..train import TrainingInterrupted, check_writable, read_checkpoint
from ._config import check_ranges, parse_config, run, runs_dir, same_file
from .train_dit import PATH, DiTTrainConfig, train

VARIANTS = {
    "logit_normal": dict(time_sampling="logit_normal", qk_norm=True),
    "uniform": dict(time_sampling="uniform", qk_norm=True),
    "no_qk_norm": dict(time_sampling="logit_normal", qk_norm=False),
}


def default_path() -> Path:
    return default_data_dir() / "dit_ablation.json"


def load(path: str | Path | None = None) -> dict:
    """The report that `main` wrote, checked for the fields notebook 10 plots."""
    path = Path(path) if path is not None else default_path()
    if not path.is_file():
        raise FileNotFoundError(f"No ablation report at {path}: run `python -m course_utils dit-ablation`.")
    try:
        report = json.loads(path.read_text())
        runs = report["variants"]
        for name, run in runs.items():
            if len(run["steps"]) != len(run["held_out_loss"]) or not run["steps"]:
                raise ValueError(f"variant {name!r} has a malformed curve")
            float(run["accuracy_w3_16_steps"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path} is not a report of `python -m course_utils dit-ablation` ({err}).") from None
    return report


@torch.no_grad()
def held_out_loss(model, x1: torch.Tensor, x0: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over pixels of ||v(x_t, t, y) − (x1 − x0)||² with t on an even grid over (0, 1)."""
    device = next(model.parameters()).device
    x1, x0, y = x1.to(device), x0.to(device), y.to(device)
    t = (torch.arange(len(x1), dtype=x1.dtype, device=device) + 0.5) / len(x1)
    path = PATH.sample(x0, x1, t)
    return (model(path.x_t, t, y) - path.u_t).pow(2).mean().item()


def _write_json(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def run_variant(name: str, steps: int, eval_every: int, base: DiTTrainConfig, held_out, workdir: Path,
                clf, checkpoint_every: int | None = None) -> dict:
    """Train variant `name` in stretches of `eval_every` steps, measuring the held-out loss after each.

    The checkpoint (`workdir/name.pt`) and the curve so far (`workdir/name.json`) survive a
    stopped run: called again with the same settings, it goes on from them.
    """
    cfg = DiTTrainConfig(**{**asdict(base), **VARIANTS[name], "checkpoint": str(workdir / f"{name}.pt"),
                            "checkpoint_every": min(eval_every, checkpoint_every or eval_every)})
    state_path = workdir / f"{name}.json"
    settings = {k: v for k, v in asdict(cfg).items()
                if k not in ("steps", "checkpoint", "export", "force", "progress", "device")}
    settings["eval_every"] = eval_every
    last = (steps // eval_every) * eval_every
    ckpt_path = Path(cfg.checkpoint)
    try:
        state = json.loads(state_path.read_text())
        fresh = state["settings"] != settings or (ckpt_path.is_file() and read_checkpoint(ckpt_path)["step"] > last)
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or unreadable
        fresh = True
    if fresh:  # nothing to go on from, or another run's leftovers: start afresh
        workdir.mkdir(parents=True, exist_ok=True)
        ckpt_path.unlink(missing_ok=True)
        state = {"settings": settings, "curve": [], "seconds": 0.0}
        _write_json(state, state_path)
    done = {s for s, _ in state["curve"]}
    result = None
    for stop in range(eval_every, steps + 1, eval_every):  # train in stretches, resuming each time
        if stop in done:
            continue
        started = time.perf_counter()
        result = train(DiTTrainConfig(**{**asdict(cfg), "steps": stop}))
        state["curve"].append([stop, held_out_loss(result.model.eval(), *held_out)])
        state["seconds"] += time.perf_counter() - started
        _write_json(state, state_path)
    if result is None or result.step != last:  # every stretch was done before: load the last one
        result = train(DiTTrainConfig(**{**asdict(cfg), "steps": last}))
    model = result.model.eval()
    curve = sorted(c for c in state["curve"] if c[0] <= last)
    labels = torch.arange(10).repeat_interleave(10).to(next(model.parameters()).device)
    images = sample(model, labels, scale=3.0, steps=16, generator=torch.Generator().manual_seed(1))
    return {"steps": [s for s, _ in curve], "held_out_loss": [v for _, v in curve],
            "train_loss": result.losses, "accuracy_w3_16_steps": metrics.class_accuracy(clf, images, labels),
            "seconds": state["seconds"], **VARIANTS[name]}


@dataclass
class AblationConfig:
    out: str = field(default_factory=lambda: str(runs_dir() / "dit_ablation.json"),
                     metadata={"help": f"the JSON report (notebook 10 loads the shipped {default_path()})"})
    steps: int = field(default=1500, metadata={"min": 1})
    eval_every: int = field(default=100, metadata={"help": "steps between held-out measurements", "min": 1})
    checkpoint_every: int = field(default=100, metadata={
        "help": "steps between checkpoints (at most --eval-every; Ctrl-C saves too)", "min": 1})
    hidden: int = field(default=64, metadata={"min": 1})
    depth: int = field(default=2, metadata={"min": 1})
    batch_size: int = field(default=64, metadata={"min": 1})
    lr: float = field(default=1e-3, metadata={"range": (0, math.inf)})
    variants: list[str] = field(default_factory=lambda: list(VARIANTS), metadata={"choices": tuple(VARIANTS)})
    device: str | None = None
    workdir: str | None = field(default=None, metadata={
        "help": "where the runs keep their checkpoints until the report is written (None: <out name>.work "
                "beside --out, in runs/ when --out is in data/)"})
    force: bool = field(default=False, metadata={"help": "let the command replace the shipped report"})

    def __post_init__(self):
        check_ranges(self)
        if self.steps < self.eval_every:
            raise ValueError("--steps must be at least --eval-every, and --eval-every at least 1.")

    def work_path(self) -> Path:
        """`--workdir`, else `<out name>.work` beside the report (in runs/ when the report goes to data/)."""
        if self.workdir:
            return Path(self.workdir)
        out = Path(self.out)
        folder = runs_dir() if same_file(out.parent, default_data_dir()) else out.parent
        return folder / f"{out.stem}.work"


def main(argv=None):
    """`python -m course_utils dit-ablation`."""
    args = parse_config(AblationConfig, argv, prog="python -m course_utils dit-ablation",
                        description=__doc__.splitlines()[0])
    out, workdir = Path(args.out), args.work_path()
    if same_file(out, default_path()) and out.exists() and not args.force:
        raise ValueError(f"--out {out} is the shipped report; pass --force to replace it, or another --out.")
    check_writable(out, "--out")  # before hours of training, not after
    check_writable(workdir / "variant.pt", "--workdir")
    base = DiTTrainConfig(model="tiny", hidden=args.hidden, depth=args.depth, batch_size=args.batch_size,
                          lr=args.lr, progress=False, device=args.device)
    test = load_mnist("test", quiet=True)
    gen = torch.Generator().manual_seed(123)
    idx = torch.randperm(len(test), generator=gen)[:256]
    held_out = (test.images[idx], torch.randn(test.images[idx].shape, generator=gen), test.labels[idx])
    clf = classifier.load_classifier(device=args.device or "cpu")
    report = {"config": {**asdict(base), "steps": args.steps, "eval_every": args.eval_every,
                         "source": test.source}, "variants": {}}
    for name in args.variants:
        try:
            report["variants"][name] = run_variant(name, args.steps, args.eval_every, base, held_out, workdir, clf,
                                                   args.checkpoint_every)
        except TrainingInterrupted as err:  # the step of the whole run, not of the stretch
            raise TrainingInterrupted(err.step, args.steps, err.checkpoint, err.saved_step) from None
        v = report["variants"][name]
        print(f"{name:>13s}: held-out loss {v['held_out_loss'][-1]:.4f}, accuracy {v['accuracy_w3_16_steps']:.2f}, "
              f"{v['seconds']:.0f} s", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(report, indent=1))
    tmp_out.replace(out)
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(run(main))
