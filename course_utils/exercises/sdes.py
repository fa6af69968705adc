"""Checks for notebook 04 (SDEs and Fokker–Planck)."""

from __future__ import annotations

import math

import torch

from ._core import ExerciseError, check


# ---------------------------------------------------------------------------- Euler–Maruyama
def reference_euler_maruyama_step(drift, diffusion, x, t, dt, z):
    """One step x + f(x, t) Δt + g(t) √Δt z for `x: (B, D)`, `t: (B,)`, Δt > 0, `z ~ N(0, I)` like x."""
    return x + drift(x, t) * dt + diffusion(t)[:, None] * math.sqrt(dt) * z


def _em_inputs(gen):
    b, d = int(torch.randint(3, 9, (1,), generator=gen)), int(torch.randint(1, 4, (1,), generator=gen))
    A = torch.randn(d, d, generator=gen, dtype=torch.float64)
    c0, c1 = 0.5 + torch.rand(2, generator=gen, dtype=torch.float64)

    def drift(x, t):  # a linear, time-dependent drift
        return x @ A.T * (1 + t[:, None])

    def diffusion(t):  # g(t) of shape (B,)
        return c0 + c1 * t

    x = torch.randn(b, d, generator=gen, dtype=torch.float64)
    t = torch.rand(b, generator=gen, dtype=torch.float64)
    dt = 0.01 + 0.2 * float(torch.rand(1, generator=gen))
    z = torch.randn(b, d, generator=gen, dtype=torch.float64)
    return (drift, diffusion, x, t, dt, z)


def _em_mistakes(drift, diffusion, x, t, dt, z):
    g = diffusion(t)[:, None]
    return {
        "the noise must be scaled by √Δt, not Δt: a Brownian increment over Δt has variance Δt.":
            x + drift(x, t) * dt + g * dt * z,
        "the noise term g(t) √Δt z is missing: without it this is an Euler step of an ODE.":
            x + drift(x, t) * dt,
        "the drift must be multiplied by Δt.":
            x + drift(x, t) + g * math.sqrt(dt) * z,
        "the noise must be multiplied by g(t) (the diffusion), not g(t)².":
            x + drift(x, t) * dt + g**2 * math.sqrt(dt) * z,
    }


def check_euler_maruyama_step(student_fn) -> None:
    """Exercise: one Euler–Maruyama step of dx = f(x, t) dt + g(t) dW."""
    _diagnose("euler_maruyama_step", student_fn, _em_inputs, _em_mistakes)
    check("euler_maruyama_step", student_fn, reference_euler_maruyama_step, _em_inputs, atol=1e-8, rtol=1e-6)


# ---------------------------------------------------------------------------- stationary density
def reference_stationary_density(U, beta, x):
    """p(x) = exp(−β U(x)) / Z on a uniform 1D grid `x: (N,)`, normalised so that Σ p Δx = 1."""
    log_p = -beta * U(x)
    dx = x[1] - x[0]
    return torch.exp(log_p - torch.logsumexp(log_p, 0)) / dx


def _stationary_inputs(gen):
    a, b, c = torch.rand(3, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 3.0, 1.0], dtype=torch.float64)
    a = a + 0.3

    def U(x):  # a random (tilted) double well
        return a * x**4 - b * x**2 + c * x

    beta = 0.5 + 2.5 * float(torch.rand(1, generator=gen))
    n = int(torch.randint(50, 200, (1,), generator=gen))
    x = torch.linspace(-3.0, 3.0, n, dtype=torch.float64)
    return (U, beta, x)


def _stationary_mistakes(U, beta, x):
    ref = lambda log_p: torch.exp(log_p - torch.logsumexp(log_p, 0)) / (x[1] - x[0])
    return {
        "the sign is wrong: the density is largest where the potential is smallest, p ∝ exp(−β U).":
            ref(beta * U(x)),
        "β is missing: p ∝ exp(−β U), and β sets how sharply p concentrates in the wells.":
            ref(-U(x)),
        "the temperature enters as exp(−U/β); here β is the inverse temperature, p ∝ exp(−β U).":
            ref(-U(x) / beta),
        "normalise with the grid spacing: Σ p Δx = 1 (a density), not Σ p = 1.":
            ref(-beta * U(x)) * (x[1] - x[0]),
    }


def check_stationary_density(student_fn) -> None:
    """Exercise: the stationary density of dx = −U'(x) dt + √(2/β) dW on a grid."""
    _diagnose("stationary_density", student_fn, _stationary_inputs, _stationary_mistakes)
    check("stationary_density", student_fn, reference_stationary_density, _stationary_inputs,
          atol=1e-8, rtol=1e-5)


# ---------------------------------------------------------------------------- shared
def _diagnose(name, student_fn, make_inputs, mistakes) -> None:
    """If the student's answer equals a known mistake on one input, say which one."""
    if not callable(student_fn):
        return  # `check` explains
    inputs = make_inputs(torch.Generator().manual_seed(12345))
    try:
        got = student_fn(*inputs)
    except Exception:  # not implemented, or crashes: `check` reports it
        return
    if not isinstance(got, torch.Tensor):
        return
    for message, wrong in mistakes(*inputs).items():
        if got.shape == wrong.shape and torch.allclose(got.double(), wrong, atol=1e-8, rtol=1e-6):
            raise ExerciseError(f"`{name}`: {message}")
