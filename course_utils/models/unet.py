"""A small U-Net for 28×28 images: the score / noise network of the MNIST diffusion lessons.

    UNet(channels=32)(x: (B, 1, 28, 28), t: (B,), y: (B,) | None) -> (B, 1, 28, 28)

Resolutions 28 → 14 → 7 and back, with skip connections. Each residual block takes the
embedding of time (sinusoidal, then an MLP) plus class label (label `num_classes` = no
label, for classifier-free guidance) and applies it as a scale and shift after GroupNorm
(Ho et al. 2020; Dhariwal & Nichol 2021). Self-attention at 7×7. SiLU activations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..tensors import check_input
from .embeddings import LabelEmbedding, SinusoidalTimeEmbedding


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


class ResBlock(nn.Module):
    """h = conv(SiLU(GN(x))); h = GN(h)·(1 + scale(e)) + shift(e); out = x' + conv(SiLU(h))."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x, e):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(e))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.dropout(F.silu(h)))


class AttnBlock(nn.Module):
    """Self-attention over the H·W positions, residual."""

    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm, self.qkv, self.proj = _norm(ch), nn.Conv2d(ch, 3 * ch, 1), nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, c/heads)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    def __init__(self, channels: int = 32, mults: tuple = (1, 2, 2), num_classes: int | None = 10,
                 dropout: float = 0.0, in_channels: int = 1):
        super().__init__()
        self.config = dict(channels=channels, mults=tuple(mults), num_classes=num_classes,
                           dropout=dropout, in_channels=in_channels)
        self.num_classes, self.in_channels = num_classes, in_channels
        emb = 4 * channels
        self.time_embed = nn.Sequential(SinusoidalTimeEmbedding(channels), nn.Linear(channels, emb),
                                        nn.SiLU(), nn.Linear(emb, emb))
        self.label_embed = LabelEmbedding(num_classes, emb) if num_classes is not None else None
        widths = [channels * m for m in mults]
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        c = channels
        for i, w in enumerate(widths):
            self.down.append(ResBlock(c, w, emb, dropout))
            c = w
            last = i == len(widths) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid1, self.mid_attn, self.mid2 = ResBlock(c, c, emb, dropout), AttnBlock(c), ResBlock(c, c, emb, dropout)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            self.up.append(ResBlock(c + w, w, emb, dropout))
            c = w
            self.upsample.append(nn.Identity() if i == 0 else nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, widths[i - 1], 3, padding=1)))
            c = w if i == 0 else widths[i - 1]
        self.out = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @property
    def null_label(self) -> int | None:
        return None if self.label_embed is None else self.label_embed.null_label

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None, *,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        """`drop: (B,)` bool, optional: labels to replace by ∅ (label dropout, drawn by the trainer)."""
        note = " with H, W divisible by 4"
        t = check_input("UNet", x, t, shape=(self.in_channels, None, None), like=self.stem.weight, note=note)
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"UNet expects x of shape (B, {self.in_channels}, H, W){note}, got {tuple(x.shape)}.")
        e = self.time_embed(t)
        if self.label_embed is not None:
            e = e + self.label_embed(y, drop=drop, batch=x.shape[0])
        elif y is not None:
            raise ValueError("This UNet was built without classes (num_classes=None) but got labels y.")
        h, skips = self.stem(x), []
        for block, down in zip(self.down, self.downsample):
            h = block(h, e)
            skips.append(h)
            h = down(h)
        h = self.mid2(self.mid_attn(self.mid1(h, e)), e)
        for block, up in zip(self.up, self.upsample):
            h = up(block(torch.cat([h, skips.pop()], dim=1), e))
        return self.out(h)
