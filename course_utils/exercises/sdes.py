"""Checks for notebook 04 (SDEs and Fokker–Planck)."""

from __future__ import annotations

import math

import torch

from ._core import Exercise, Mistake, away_from_one, randint, uniform


# ---------------------------------------------------------------------------- Euler–Maruyama
def _em_step(drift, diffusion, x, t, dt, z, *, drift_dt=None, noise_scale=None, g_power=1):
    """x + f(x, t)·drift_dt + g(t)^g_power·noise_scale·z; the defaults (Δt and √Δt) are the right step."""
    drift_dt = dt if drift_dt is None else drift_dt
    noise_scale = math.sqrt(dt) if noise_scale is None else noise_scale
    return x + drift(x, t) * drift_dt + diffusion(t)[:, None] ** g_power * noise_scale * z


def reference_euler_maruyama_step(drift, diffusion, x, t, dt, z):
    """One step x + f(x, t) Δt + g(t) √Δt z for `x: (B, D)`, `t: (B,)`, Δt > 0, `z ~ N(0, I)` like x."""
    return x + drift(x, t) * dt + diffusion(t)[:, None] * math.sqrt(dt) * z


def _em_inputs(gen):
    b, d = randint(3, 9, gen), randint(1, 4, gen)
    A = torch.randn(d, d, generator=gen, dtype=torch.float64)
    c0, c1 = 0.5 + torch.rand(2, generator=gen, dtype=torch.float64)

    def drift(x, t):  # a linear, time-dependent drift
        return x @ A.T * (1 + t[:, None])

    def diffusion(t):  # g(t) of shape (B,)
        return c0 + c1 * t

    x = torch.randn(b, d, generator=gen, dtype=torch.float64)
    t = torch.rand(b, generator=gen, dtype=torch.float64)
    dt = uniform(0.01, 0.21, gen)
    z = torch.randn(b, d, generator=gen, dtype=torch.float64)
    return (drift, diffusion, x, t, dt, z)


EULER_MARUYAMA_STEP = Exercise(
    "euler_maruyama_step", reference_euler_maruyama_step, _em_inputs, atol=1e-8, rtol=1e-6, mistakes=[
        Mistake(lambda *a: _em_step(*a, noise_scale=a[4]),
                "the noise must be scaled by √Δt, not Δt: a Brownian increment over Δt has variance Δt."),
        Mistake(lambda *a: _em_step(*a, noise_scale=0.0),
                "the noise term g(t) √Δt z is missing: without it this is an Euler step of an ODE."),
        Mistake(lambda *a: _em_step(*a, drift_dt=1.0), "the drift must be multiplied by Δt."),
        Mistake(lambda *a: _em_step(*a, g_power=2),
                "the noise must be multiplied by g(t) (the diffusion), not g(t)²."),
    ])


def check_euler_maruyama_step(student_fn) -> None:
    """Exercise: one Euler–Maruyama step of dx = f(x, t) dt + g(t) dW."""
    EULER_MARUYAMA_STEP.check(student_fn)


# ---------------------------------------------------------------------------- stationary density
def _normalised(log_p, x):
    """exp(log_p) normalised as a density on the uniform grid x: Σ p Δx = 1."""
    return torch.exp(log_p - torch.logsumexp(log_p, 0)) / (x[1] - x[0])


def reference_stationary_density(U, beta, x):
    """p(x) = exp(−β U(x)) / Z on a uniform 1D grid `x: (N,)`, normalised so that Σ p Δx = 1."""
    return _normalised(-beta * U(x), x)


def _stationary_inputs(gen):
    a, b, c = torch.rand(3, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 3.0, 1.0], dtype=torch.float64)
    a = a + 0.3

    def U(x):  # a random (tilted) double well
        return a * x**4 - b * x**2 + c * x

    beta = away_from_one(gen)  # β = 1 would hide a missing β
    n = randint(50, 200, gen)
    x = torch.linspace(-3.0, 3.0, n, dtype=torch.float64)
    return (U, beta, x)


STATIONARY_DENSITY = Exercise(
    "stationary_density", reference_stationary_density, _stationary_inputs, atol=1e-8, rtol=1e-5, mistakes=[
        Mistake(lambda U, beta, x: _normalised(beta * U(x), x),
                "the sign is wrong: the density is largest where the potential is smallest, p ∝ exp(−β U)."),
        Mistake(lambda U, beta, x: _normalised(-U(x), x),
                "β is missing: p ∝ exp(−β U), and β sets how sharply p concentrates in the wells."),
        Mistake(lambda U, beta, x: _normalised(-U(x) / beta, x),
                "the temperature enters as exp(−U/β); here β is the inverse temperature, p ∝ exp(−β U)."),
        Mistake(lambda U, beta, x: _normalised(-beta * U(x), x) * (x[1] - x[0]),
                "normalise with the grid spacing: Σ p Δx = 1 (a density), not Σ p = 1."),
        Mistake(lambda U, beta, x: torch.exp(-beta * U(x)),
                "it is not normalised: divide exp(−β U) by Z = Σ exp(−β U) Δx so that Σ p Δx = 1."),
    ])


def check_stationary_density(student_fn) -> None:
    """Exercise: the stationary density of dx = −U'(x) dt + √(2/β) dW on a grid."""
    STATIONARY_DENSITY.check(student_fn)
