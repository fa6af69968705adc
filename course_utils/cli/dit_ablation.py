"""Training curves of a small DiT under three settings, for notebook 10's comparison.

    python -m course_utils dit-ablation --steps 1500                 # report in runs/dit_ablation.json
    python -m course_utils dit-ablation --steps 1500 --out data/dit_ablation.json   # replace the shipped one

Trains the same small DiT (`train_dit`, rectified flow on MNIST) three times:

- `logit_normal`: logit-normal time sampling (SD3, m = 0, s = 1) and QK-norm;
- `uniform`: uniform time sampling, QK-norm;
- `no_qk_norm`: logit-normal time sampling without QK-norm.

Every `--eval-every` steps it measures one yardstick that does not depend on how training
draws t: the rectified-flow loss per pixel on fixed held-out digits, fixed noise and an
even grid of t over (0, 1), so that the curves compare. At the end it samples each model
(guided, Euler) and records the course classifier's accuracy. The result is a small JSON
file that notebook 10 plots; full mode reruns this command.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import metrics
from ..models import classifier
from ..dit import sample
from ..mnist import default_data_dir, load_mnist
from ._config import parse_config, run, runs_dir
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


def run_variant(name: str, steps: int, eval_every: int, base: DiTTrainConfig, held_out, workdir: Path,
                clf) -> dict:
    cfg = DiTTrainConfig(**{**asdict(base), **VARIANTS[name], "checkpoint": str(workdir / f"{name}.pt"),
                            "checkpoint_every": eval_every})
    curve, started = [], time.perf_counter()
    for stop in range(eval_every, steps + 1, eval_every):  # train in stretches, resuming each time
        result = train(DiTTrainConfig(**{**asdict(cfg), "steps": stop}))
        model = result.model.eval()
        curve.append([stop, held_out_loss(model, *held_out)])
    labels = torch.arange(10).repeat_interleave(10).to(next(model.parameters()).device)
    images = sample(model, labels, scale=3.0, steps=16, generator=torch.Generator().manual_seed(1))
    return {"steps": [s for s, _ in curve], "held_out_loss": [v for _, v in curve],
            "train_loss": result.losses, "accuracy_w3_16_steps": metrics.class_accuracy(clf, images, labels),
            "seconds": time.perf_counter() - started, **VARIANTS[name]}


@dataclass
class AblationConfig:
    out: str = field(default_factory=lambda: str(runs_dir() / "dit_ablation.json"),
                     metadata={"help": f"the JSON report (notebook 10 loads the shipped {default_path()})"})
    steps: int = 1500
    eval_every: int = field(default=100, metadata={"help": "steps between held-out measurements"})
    hidden: int = 64
    depth: int = 2
    batch_size: int = 64
    lr: float = 1e-3
    variants: list[str] = field(default_factory=lambda: list(VARIANTS), metadata={"choices": tuple(VARIANTS)})
    device: str | None = None

    def __post_init__(self):
        if self.eval_every < 1 or self.steps < self.eval_every:
            raise ValueError("--steps must be at least --eval-every, and --eval-every at least 1.")


def main(argv=None):
    """`python -m course_utils dit-ablation`."""
    args = parse_config(AblationConfig, argv, prog="python -m course_utils dit-ablation",
                        description=__doc__.splitlines()[0])
    base = DiTTrainConfig(model="tiny", hidden=args.hidden, depth=args.depth, batch_size=args.batch_size,
                          lr=args.lr, progress=False, device=args.device)
    test = load_mnist("test", quiet=True)
    gen = torch.Generator().manual_seed(123)
    idx = torch.randperm(len(test), generator=gen)[:256]
    held_out = (test.images[idx], torch.randn(test.images[idx].shape, generator=gen), test.labels[idx])
    clf = classifier.load_classifier(device=args.device or "cpu")
    report = {"config": {**asdict(base), "steps": args.steps, "eval_every": args.eval_every,
                         "source": test.source}, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants:
            report["variants"][name] = run_variant(name, args.steps, args.eval_every, base, held_out, Path(tmp), clf)
            v = report["variants"][name]
            print(f"{name:>13s}: held-out loss {v['held_out_loss'][-1]:.4f}, accuracy {v['accuracy_w3_16_steps']:.2f}, "
                  f"{v['seconds']:.0f} s", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(report, indent=1))
    tmp_out.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(run(main))
