"""A small U-shaped convolutional score network for MNIST (notebook 06's NCSN)."""

from __future__ import annotations

import torch
from torch import nn

from ..tensors import check_input
from .embeddings import SinusoidalTimeEmbedding


class _Block(nn.Module):
    """conv → GroupNorm → + time bias → SiLU."""

    def __init__(self, c_in, c_out, t_dim, stride=1, transpose=False):
        super().__init__()
        conv = nn.ConvTranspose2d if transpose else nn.Conv2d
        kw = dict(kernel_size=4, stride=2, padding=1) if stride == 2 else dict(kernel_size=3, padding=1)
        self.conv = conv(c_in, c_out, **kw)
        self.norm = nn.GroupNorm(8, c_out)
        self.time = nn.Linear(t_dim, c_out)

    def forward(self, h, emb):
        return nn.functional.silu(self.norm(self.conv(h)) + self.time(emb)[:, :, None, None])


class ConvScoreNet(nn.Module):
    """A small U-shaped conv net `(x: (B, 1, 28, 28), t: (B,)) -> (B, 1, 28, 28)` (28 → 14 → 7 → 28)."""

    def __init__(self, channels: int = 32, time_dim: int = 64):
        super().__init__()
        self.config = dict(channels=channels, time_dim=time_dim)
        c = channels
        self.embed = nn.Sequential(SinusoidalTimeEmbedding(time_dim), nn.Linear(time_dim, time_dim), nn.SiLU())
        self.inc = _Block(1, c, time_dim)
        self.down1 = _Block(c, 2 * c, time_dim, stride=2)
        self.down2 = _Block(2 * c, 2 * c, time_dim, stride=2)
        self.up2 = _Block(2 * c, 2 * c, time_dim, stride=2, transpose=True)
        self.up1 = _Block(4 * c, c, time_dim, stride=2, transpose=True)
        self.out = nn.Conv2d(2 * c, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        emb = self.embed(check_input("ConvScoreNet", x, t, shape=(1, 28, 28), like=self.out.weight))
        h0 = self.inc(x, emb)
        h1 = self.down1(h0, emb)
        h2 = self.down2(h1, emb)
        u1 = self.up2(h2, emb)
        u0 = self.up1(torch.cat([u1, h1], 1), emb)
        return self.out(torch.cat([u0, h0], 1))
