"""Sampling the class-conditional DiT of notebook 10 (the network is `course_utils.models.dit`).

Flow time: noise x0 at t = 0, images at t = 1, dx/dt = ṽ(x, t, y), where ṽ is the guided
velocity (1 − ω) v(x, t, ∅) + ω v(x, t, y) (`guidance.ClassifierFreeGuidance`). ω = 1 is the
conditional model (one network call per evaluation); otherwise both halves run as one batch.
"""

from __future__ import annotations

import torch

from . import solvers
from .guidance import ClassifierFreeGuidance
from .models.dit import DiT


@torch.no_grad()
def sample(model: DiT, y: torch.Tensor, *, scale: float = 1.0, steps: int = 32, method: str = "euler",
           x0: torch.Tensor | None = None, grid: torch.Tensor | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Images for labels `y: (B,)`, integrating the guided velocity from x0 (t = 0) to t = 1.

    The grid is `solvers.uniform_grid(steps)` unless given (e.g. `solvers.shifted_grid`);
    NFE = steps for Euler, 2·steps for midpoint and Heun.
    """
    cfg = model.cfg
    if x0 is None:
        x0 = torch.randn((len(y), cfg.in_channels, cfg.image_size, cfg.image_size), generator=generator)
        x0 = x0.to(y.device)
    grid = solvers.uniform_grid(steps) if grid is None else grid
    return solvers.sample(ClassifierFreeGuidance(model, scale), x0, grid, method=method, y=y).x
