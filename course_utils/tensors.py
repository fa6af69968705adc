"""Shape and noise helpers that every module uses: one code path for `(B, 2)` points and `(B, C, H, W)` images."""

from __future__ import annotations

import torch


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


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like `x`, drawn from `generator` (on its own device), moved to x's device."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
