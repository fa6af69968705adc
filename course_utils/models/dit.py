"""A small diffusion transformer (DiT, Peebles & Xie 2023) for MNIST-sized images.

The image is cut into p×p patches, each patch becomes a token, the tokens pass through
transformer blocks whose LayerNorms are modulated by the time and class embedding
(adaLN-Zero), and the final layer turns tokens back into an image-shaped output:

    x (B, C, H, W) --patchify--> (B, N, p²C) --linear + pos--> (B, N, d)
      --DiTBlock × depth (conditioned on c = emb(t) + emb(y))--> FinalLayer --unpatchify--> (B, C, H, W)

adaLN-Zero: every block computes shift, scale and gate vectors from c; the gates start at
zero, so each block starts as the identity (and the final layer outputs zeros).
QK-norm (Esser et al. 2024, SD3): RMSNorm on queries and keys before attention.

Notation: d = `hidden`, N = (H/p)(W/p) tokens, the null label `num_classes` means "no label"
(used for classifier-free guidance).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..tensors import check_input
from .embeddings import LabelEmbedding, SinusoidalTimeEmbedding


@dataclass(frozen=True)
class DiTConfig:
    image_size: int = 28
    patch_size: int = 4
    in_channels: int = 1
    hidden: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 10
    class_dropout: float = 0.1
    qk_norm: bool = True


CONFIGS = {
    # trains on 2 CPU cores: 49 tokens of width 128, about 1.2 M parameters
    "tiny": DiTConfig(patch_size=4, hidden=128, depth=4, heads=4),
    # one GPU: 196 tokens of width 256
    "small": DiTConfig(patch_size=2, hidden=256, depth=8, heads=8),
}


def get_config(name: str, **overrides) -> DiTConfig:
    if name not in CONFIGS:
        raise ValueError(f"Unknown DiT configuration {name!r}: choose one of {', '.join(CONFIGS)}.")
    return DiTConfig(**{**asdict(CONFIGS[name]), **overrides})


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p·p·C), patches in row-major order, each flattened as (p, p, C)."""
    b, c, h, w = x.shape
    if h % p or w % p:
        raise ValueError(f"Image size {h}x{w} is not divisible by the patch size {p}.")
    x = x.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: torch.Tensor, p: int, channels: int, height: int, width: int) -> torch.Tensor:
    """The inverse of `patchify`: (B, N, p·p·C) -> (B, C, H, W)."""
    if tokens.ndim != 3:
        raise ValueError(f"unpatchify expects tokens of shape (B, N, p·p·C), got {tuple(tokens.shape)}.")
    if height % p or width % p:
        raise ValueError(f"Image size {height}x{width} is not divisible by the patch size {p}.")
    b, n, dim = tokens.shape
    hp, wp = height // p, width // p
    if n != hp * wp or dim != p * p * channels:
        raise ValueError(
            f"A {channels}x{height}x{width} image in {p}x{p} patches is {hp * wp} tokens of {p * p * channels} "
            f"numbers, got {n} tokens of {dim}."
        )
    x = tokens.reshape(b, hp, wp, p, p, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, height, width)


def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2D sine-cosine position embedding (grid×grid tokens, (N, dim)): half the
    channels encode the row, half the column, each as [sin, cos] of geometric frequencies."""
    if dim % 4:
        raise ValueError(f"The width must be divisible by 4 for a 2D sin-cos embedding, got {dim}.")
    freqs = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    pos = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")

    def embed(coord):
        angles = coord.reshape(-1, 1) * freqs[None]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    return torch.cat([embed(rows), embed(cols)], dim=1).float()


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x·(1 + scale) + shift, with (B, d) shift/scale broadcast over the N tokens."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    """t in [0, 1] -> sinusoidal features (256) -> MLP -> (B, d)."""

    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq = SinusoidalTimeEmbedding(freq_dim, scale=1000.0)
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t):
        return self.mlp(self.freq(t))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    """Multi-head self-attention through `F.scaled_dot_product_attention`, optional QK-norm."""

    def __init__(self, hidden: int, heads: int, qk_norm: bool):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"Width {hidden} is not divisible by {heads} heads.")
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        head_dim = hidden // heads
        self.q_norm = RMSNorm(head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(head_dim) if qk_norm else nn.Identity()

    def forward(self, x):  # (B, N, d)
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DiTBlock(nn.Module):
    """x + gate_a·Attn(modulate(LN(x))) then x + gate_m·MLP(modulate(LN(x))), all from c."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, qk_norm: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, heads, qk_norm)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        width = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, width), nn.GELU(approximate="tanh"), nn.Linear(width, hidden))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x, c):
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_a.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_a, scale_a))
        return x + gate_m.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, patch: int, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch * patch * channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """`DiT(config)(x, t, y=None) -> (B, C, H, W)`: a velocity (or ε) for images x at times t."""

    def __init__(self, config: DiTConfig | None = None, **overrides):
        super().__init__()
        cfg = config or DiTConfig()
        cfg = DiTConfig(**{**asdict(cfg), **overrides})
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"Image size {cfg.image_size} is not divisible by the patch size {cfg.patch_size}.")
        self.cfg, self.config = cfg, asdict(cfg)
        self.grid = cfg.image_size // cfg.patch_size
        self.x_embedder = nn.Linear(cfg.patch_size**2 * cfg.in_channels, cfg.hidden)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(cfg.hidden, self.grid)[None], persistent=False)
        self.t_embedder = TimestepEmbedder(cfg.hidden)
        self.y_embedder = LabelEmbedding(cfg.num_classes, cfg.hidden, cfg.class_dropout)
        self.blocks = nn.ModuleList(
            DiTBlock(cfg.hidden, cfg.heads, cfg.mlp_ratio, cfg.qk_norm) for _ in range(cfg.depth)
        )
        self.final_layer = FinalLayer(cfg.hidden, cfg.patch_size, cfg.in_channels)
        self.initialize_weights()

    def initialize_weights(self):
        """Xavier for linear layers, N(0, 0.02) for embeddings; zero for every adaLN
        modulation and the final linear (adaLN-Zero: each block starts as the identity)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.y_embedder.weight, std=0.02)
        for mlp_layer in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(mlp_layer.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None, *,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        """`drop: (B,)` bool, optional: which labels to replace by the null label (see
        `LabelEmbedding`); without it, training mode drops each at `class_dropout`."""
        cfg = self.cfg
        t = check_input("DiT", x, t, shape=(cfg.in_channels, cfg.image_size, cfg.image_size),
                        like=self.x_embedder.weight, what="images")
        c = self.t_embedder(t) + self.y_embedder(y, drop=drop, batch=x.shape[0])
        h = self.x_embedder(patchify(x, cfg.patch_size)) + self.pos_embed
        for block in self.blocks:
            h = block(h, c)
        out = self.final_layer(h, c)
        return unpatchify(out, cfg.patch_size, cfg.in_channels, cfg.image_size, cfg.image_size)

    @property
    def null_label(self) -> int:
        return self.y_embedder.null_label


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
