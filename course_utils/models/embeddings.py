"""Building blocks shared by every network: time features, the label table, a plain MLP."""

from __future__ import annotations

import math

import torch
from torch import nn

_LABEL_DTYPES = (torch.int64, torch.int32)
_compiling = getattr(torch.compiler, "is_compiling", None) or torch._dynamo.is_compiling


class SinusoidalTimeEmbedding(nn.Module):
    """Transformer-style features of a time t in [0, 1]: [cos(ω_k s t), sin(ω_k s t)], s = `scale`.

    Frequencies ω_k = exp(-log(10000) k / (dim/2)), k = 0..dim/2-1 (Vaswani et al. 2017;
    Ho et al. 2020). `scale=1000` gives times in [0, 1] the resolution of 1000 steps.
    """

    def __init__(self, dim: int, scale: float = 1000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"Time-embedding dimension must be even, got {dim}.")
        self.dim, self.scale = dim, scale
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
        self.register_buffer("freqs", freqs.float(), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, dim)
        angles = self.scale * t.float()[:, None] * self.freqs[None]
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class LabelEmbedding(nn.Embedding):
    """Class label -> (B, dim): a table of `num_classes + 1` rows, the last one the null label ∅.

    The null label `null_label = num_classes` means "no label": one network then learns both
    p(x | y) and p(x), which classifier-free guidance combines (Ho & Salimans 2022). In
    training each label is replaced by ∅ with probability `dropout` (10–20 % is usual). A
    training loop that draws the choice itself passes `drop: (B,)` bool (True = ∅); it is used
    instead of a fresh draw, in training and evaluation alike.

    A network calls `label_embed(y, drop=drop, batch=B)`: `y` must then be an integer tensor
    `(B,)` (checked from its dtype and shape, free), and `y=None` means ∅ for every item. Given
    labels are checked to lie in 0..num_classes with one device read per call (none for `y=None`,
    none inside `torch.compile`, where an out-of-range index fails in the lookup itself).
    """

    def __init__(self, num_classes: int, dim: int, dropout: float = 0.0):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"Label dropout is a probability in [0, 1], got {dropout}.")
        super().__init__(num_classes + 1, dim)
        self.num_classes, self.dropout = num_classes, dropout

    @property
    def null_label(self) -> int:
        return self.num_classes

    def labels(self, y: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        """`y` checked for type, dtype and shape (an integer tensor `(batch,)`), or ∅ for every item
        when None. Free: it reads no values (the range is checked once, in `forward`)."""
        if y is None:
            return torch.full((batch,), self.null_label, device=device, dtype=torch.long)
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"Class labels must be an integer tensor of shape ({batch},), got {type(y).__name__}.")
        if y.dtype not in _LABEL_DTYPES:
            raise ValueError(f"Class labels must be an integer tensor of shape ({batch},): y is {y.dtype}; "
                             "pass class indices as y.long().")
        if y.shape != (batch,):
            raise ValueError(f"Class labels must be an integer tensor of shape ({batch},), one per item of the batch: "
                             f"y has shape {tuple(y.shape)}.")
        return y

    def forward(self, y: torch.Tensor | None, *, drop: torch.Tensor | None = None,
                generator: torch.Generator | None = None, batch: int | None = None) -> torch.Tensor:
        given = y is not None
        if batch is not None:
            y = self.labels(y, batch, self.weight.device)
        elif not given:
            raise ValueError("LabelEmbedding needs labels y, or batch=B for a batch of null labels.")
        if given and y.numel() and not _compiling():  # one device read; compiled graphs leave it to the lookup
            lo, hi = torch.stack(torch.aminmax(y)).tolist()
            if lo < 0 or hi > self.num_classes:
                raise ValueError(
                    f"Class labels must lie in 0..{self.num_classes - 1} ({self.null_label} = no label), "
                    f"got {lo}..{hi}."
                )
        if drop is not None:
            if drop.dtype != torch.bool or drop.shape != y.shape:
                raise ValueError(f"drop must be a bool mask shaped like the labels {tuple(y.shape)}, "
                                 f"got {drop.dtype} {tuple(drop.shape)}.")
        elif self.training and self.dropout > 0:
            drop = torch.rand(y.shape, generator=generator, device=getattr(generator, "device", y.device))
            drop = drop.to(y.device) < self.dropout
        if drop is not None:
            y = torch.where(drop.to(y.device), torch.full_like(y, self.null_label), y)
        return super().forward(y)


def mlp(in_dim: int, out_dim: int, hidden: int = 128, depth: int = 3, act=nn.SiLU) -> nn.Sequential:
    """`depth` hidden layers of width `hidden` with activation `act`, then a linear output."""
    layers, width = [], in_dim
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), act()]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)
