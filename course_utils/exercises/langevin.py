"""Checks for notebook 06 (Langevin and NCSN): a Langevin step and the geometric noise levels."""

from __future__ import annotations

import torch

from ..langevin import geometric_sigmas, langevin_step
from ._core import check


def check_langevin_step(student_fn) -> None:
    """langevin_step(x, score, step_size, noise) = x + (α/2)·score + √α·noise."""

    def inputs(gen):
        b, d = int(torch.randint(3, 9, (1,), generator=gen)), int(torch.randint(1, 4, (1,), generator=gen))
        x = torch.randn(b, d, generator=gen)
        score = torch.randn(b, d, generator=gen)
        step_size = float(torch.rand(1, generator=gen)) * 0.5 + 0.05
        noise = torch.randn(b, d, generator=gen)
        return (x, score, step_size, noise)

    check("langevin_step", student_fn, langevin_step, inputs)


def check_geometric_sigmas(student_fn) -> None:
    """geometric_sigmas(sigma_max, sigma_min, n_levels): (L,) from σ_max down to σ_min, constant ratio."""

    def inputs(gen):
        sigma_min = float(torch.rand(1, generator=gen)) * 0.5 + 0.01
        sigma_max = sigma_min * (float(torch.rand(1, generator=gen)) * 100 + 2)
        n_levels = int(torch.randint(3, 15, (1,), generator=gen))
        return (sigma_max, sigma_min, n_levels)

    check("geometric_sigmas", student_fn, geometric_sigmas, inputs, rtol=1e-4, atol=1e-6)
