"""Checks for notebook 06 (Langevin and NCSN): a Langevin step and the geometric noise levels."""

from __future__ import annotations

import math

import torch

from ._core import Exercise, Mistake, randint, uniform


# ---------------------------------------------------------------------------- one Langevin step
def reference_langevin_step(x: torch.Tensor, score: torch.Tensor, step_size: float, noise: torch.Tensor):
    """One unadjusted Langevin step x + (α/2)·score + √α·noise, with α = `step_size`."""
    return x + 0.5 * step_size * score + math.sqrt(step_size) * noise


def _langevin_inputs(gen):
    b, d = randint(3, 9, gen), randint(1, 4, gen)
    x = torch.randn(b, d, generator=gen)
    score = torch.randn(b, d, generator=gen)
    step_size = uniform(0.05, 0.55, gen)
    noise = torch.randn(b, d, generator=gen)
    return (x, score, step_size, noise)


def _step(drift, noise_scale):
    """x + drift(α)·score + noise_scale(α)·noise: a Langevin step with other coefficients."""
    return lambda x, score, a, noise: x + drift(a) * score + noise_scale(a) * noise


LANGEVIN_STEP = Exercise("langevin_step", reference_langevin_step, _langevin_inputs, mistakes=[
    Mistake(_step(lambda a: a, math.sqrt),
            "the drift is α·score; the step moves by half the step size, "
            "(α/2)·score, so that with noise √α·noise it samples p exactly as α → 0."),
    Mistake(_step(lambda a: a, lambda a: math.sqrt(2 * a)),
            "this is the other convention, x + α·score + √(2α)·noise (step α for the drift); the course "
            "writes the step as x + (α/2)·score + √α·noise."),
    Mistake(_step(lambda a: a / 2, lambda a: a),
            "the noise is scaled by α; its variance is α, so scale it by √α."),
    Mistake(_step(lambda a: a / 2, lambda a: 0.0),
            "the noise term √α·noise is missing: without it this is gradient ascent on log p, which collapses "
            "onto a mode instead of sampling."),
    Mistake(_step(lambda a: -a / 2, math.sqrt),
            "the score term has the wrong sign: the step climbs the log-density, x + (α/2)·score."),
])


def check_langevin_step(student_fn) -> None:
    """langevin_step(x, score, step_size, noise) = x + (α/2)·score + √α·noise."""
    LANGEVIN_STEP.check(student_fn)


# ---------------------------------------------------------------------------- geometric noise levels
def reference_geometric_sigmas(sigma_max: float, sigma_min: float, n_levels: int) -> torch.Tensor:
    """σ_i = σ_max (σ_min/σ_max)^{i/(L−1)}, i = 0..L−1: (L,) float32, from σ_max down to σ_min."""
    frac = torch.linspace(0, 1, n_levels, dtype=torch.float64)
    return (sigma_max * (sigma_min / sigma_max) ** frac).float()


def _sigma_inputs(gen):
    sigma_min = uniform(0.01, 0.51, gen)
    sigma_max = sigma_min * uniform(2, 102, gen)
    return (sigma_max, sigma_min, randint(3, 15, gen))


GEOMETRIC_SIGMAS = Exercise("geometric_sigmas", reference_geometric_sigmas, _sigma_inputs, atol=1e-6, rtol=1e-4,
                            mistakes=[
    Mistake(lambda hi, lo, n: reference_geometric_sigmas(hi, lo, n).flip(0),
            "the levels increase from σ_min to σ_max; annealing starts at the largest noise: σ_max first, "
            "decreasing to σ_min."),
    Mistake(lambda hi, lo, n: torch.linspace(hi, lo, n),
            "the levels are equally spaced; geometric levels have a constant ratio σ_(i+1)/σ_i: "
            "σ_max·(σ_min/σ_max)^(i/(L−1)), e.g. torch.logspace or an exponent from torch.linspace(0, 1, L)."),
    Mistake(lambda hi, lo, n: (hi * (lo / hi) ** (torch.arange(n, dtype=torch.float64) / n)).float(),
            "the last level is not σ_min: the exponent is i/(L − 1) for i = 0..L − 1 (torch.linspace(0, 1, L)), "
            "not i/L."),
])


def check_geometric_sigmas(student_fn) -> None:
    """geometric_sigmas(sigma_max, sigma_min, n_levels): (L,) from σ_max down to σ_min, constant ratio."""
    GEOMETRIC_SIGMAS.check(student_fn)
