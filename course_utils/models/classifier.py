"""The course's MNIST classifier: a small CNN whose accuracy and features judge generated digits.

`python -m course_utils train-classifier` trains it (`course_utils.cli.train_classifier`);
`load_classifier()` loads the shipped weights, data/mnist_classifier.pt. The metrics built on it, `class_accuracy(clf, images,
labels)` and `image_fd(clf, images_a, images_b)`, live in `course_utils.metrics`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..mnist import default_data_dir
from ..tensors import check_input
from ..train import load_model

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
        check_input("MNISTClassifier", x, shape=(1, 28, 28), like=self.head.weight, what="images")
        return self.fc(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def default_path() -> Path:
    """The shipped EMA weights (data/mnist_classifier.pt) that notebooks 07b and 10 load."""
    return default_data_dir() / "mnist_classifier.pt"


def load_classifier(path: str | Path | None = None, device="cpu") -> MNISTClassifier:
    """The trained classifier from its checkpoint (default: the one shipped in data/)."""
    path = Path(path) if path is not None else default_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"No classifier checkpoint at {path}: train one with `python -m course_utils train-classifier`."
        )
    model = MNISTClassifier()
    load_model(path, model)
    return model.to(device).eval()
