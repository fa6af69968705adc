"""Networks for flat data `(B, dim)`: the time-conditioned MLP every 2D notebook trains, and a
noise-aware classifier for classifier guidance.

One calling convention for every network of the course: `model(x, t, **cond)` with
`x: (B, *D)` and `t: (B,)` in [0, 1] (a float, or a 0-d tensor, is broadcast to the batch).
"""

from __future__ import annotations

import torch
from torch import nn

from ..tensors import check_input
from .embeddings import LabelEmbedding, SinusoidalTimeEmbedding, mlp


class TimeMLP(nn.Module):
    """A vector field / score / ε network for flat data: `(x: (B, dim), t: (B,)[, y: (B,)]) -> (B, dim)`.

    The input is `[x, emb(t)]`, and a learned label embedding when `num_classes` is set
    (`LabelEmbedding`: label `num_classes` is ∅, used for classifier-free guidance; in training
    labels are dropped to ∅ with probability `class_dropout`).
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, time_dim: int = 32,
                 num_classes: int | None = None, time_scale: float = 1000.0, class_dropout: float = 0.0):
        super().__init__()
        self.config = dict(dim=dim, hidden=hidden, depth=depth, time_dim=time_dim,
                           num_classes=num_classes, time_scale=time_scale, class_dropout=class_dropout)
        self.dim, self.num_classes = dim, num_classes
        self.time_embed = SinusoidalTimeEmbedding(time_dim, scale=time_scale)
        cond_dim = time_dim
        if num_classes is not None:
            self.label_embed = LabelEmbedding(num_classes, time_dim, class_dropout)
            cond_dim += time_dim
        self.net = mlp(dim + cond_dim, dim, hidden, depth)

    @property
    def null_label(self) -> int | None:
        return None if self.num_classes is None else self.label_embed.null_label

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None, *,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        t = check_input(type(self).__name__, x, t, shape=(self.dim,), like=self.net[0].weight)
        feats = [x, self.time_embed(t).to(x.dtype)]
        if self.num_classes is not None:
            feats.append(self.label_embed(y, drop=drop, batch=x.shape[0]).to(x.dtype))
        elif y is not None:
            raise ValueError("This network was built without classes (num_classes=None) but got labels y.")
        return self.net(torch.cat(feats, dim=1))


class TimeClassifier(nn.Module):
    """A noise-aware classifier `(x: (B, dim), t: (B,) in [0, 1]) -> logits (B, num_classes)`."""

    def __init__(self, dim: int = 2, num_classes: int = 2, hidden: int = 128, depth: int = 3,
                 time_dim: int = 32, time_scale: float = 1000.0):
        super().__init__()
        self.config = dict(dim=dim, num_classes=num_classes, hidden=hidden, depth=depth,
                           time_dim=time_dim, time_scale=time_scale)
        self.dim = dim
        self.time_embed = SinusoidalTimeEmbedding(time_dim, scale=time_scale)
        self.net = mlp(dim + time_dim, num_classes, hidden, depth)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        t = check_input(type(self).__name__, x, t, shape=(self.dim,), like=self.net[0].weight)
        return self.net(torch.cat([x, self.time_embed(t).to(x.dtype)], dim=1))
