"""Networks shared by the notebooks, and the two shape helpers every module uses.

One calling convention for every network: `model(x, t, **cond)` with `x: (B, *D)` and
`t: (B,)` (a float, or a 0-d tensor, is broadcast to the batch).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def append_dims(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append singleton dims to `t: (B,)` so it broadcasts against a `(B, *D)` tensor of `ndim` dims."""
    if t.ndim > ndim:
        raise ValueError(f"Cannot broadcast a {t.ndim}-d tensor to {ndim} dims.")
    return t.reshape(*t.shape, *([1] * (ndim - t.ndim)))


def batch_time(t, x: torch.Tensor) -> torch.Tensor:
    """Time as a `(B,)` tensor on `x`'s device and dtype: a float or 0-d/1-element tensor is broadcast."""
    t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
    if t.ndim == 0 or t.numel() == 1:
        return t.reshape(()).expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(
            f"Time must be a scalar or have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}."
        )
    return t


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


def mlp(in_dim: int, out_dim: int, hidden: int = 128, depth: int = 3, act=nn.SiLU) -> nn.Sequential:
    """`depth` hidden layers of width `hidden` with activation `act`, then a linear output."""
    layers, width = [], in_dim
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), act()]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class TimeMLP(nn.Module):
    """A vector field / score network for flat data: `(x: (B, dim), t: (B,)) -> (B, dim)`.

    The input is `[x, emb(t)]` (and a learned class embedding when `num_classes` is set;
    label `num_classes` is the "no label" token for classifier-free guidance).
    """

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 128,
        depth: int = 3,
        time_dim: int = 32,
        num_classes: int | None = None,
        time_scale: float = 1000.0,
    ):
        super().__init__()
        self.config = dict(
            dim=dim, hidden=hidden, depth=depth, time_dim=time_dim,
            num_classes=num_classes, time_scale=time_scale,
        )
        self.dim, self.num_classes = dim, num_classes
        self.time_embed = SinusoidalTimeEmbedding(time_dim, scale=time_scale)
        cond_dim = time_dim
        if num_classes is not None:
            self.label_embed = nn.Embedding(num_classes + 1, time_dim)
            cond_dim += time_dim
        self.net = mlp(dim + cond_dim, dim, hidden, depth)

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"{type(self).__name__} expects x of shape (B, {self.dim}), got {tuple(x.shape)}."
            )
        t = batch_time(t, x)
        feats = [x, self.time_embed(t).to(x.dtype)]
        if self.num_classes is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
            if y.min() < 0 or y.max() > self.num_classes:
                raise ValueError(
                    f"Class labels must lie in 0..{self.num_classes - 1} "
                    f"({self.num_classes} = no label), got {y.min().item()}..{y.max().item()}."
                )
            feats.append(self.label_embed(y).to(x.dtype))
        elif y is not None:
            raise ValueError("This network was built without classes (num_classes=None) but got labels y.")
        return self.net(torch.cat(feats, dim=1))
