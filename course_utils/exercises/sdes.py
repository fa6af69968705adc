"""Checks for notebook 04 (SDEs and Fokker–Planck)."""

from __future__ import annotations

import math

import torch

from ._core import Case, Exercise, Mistake, away_from_one, randint, uniform


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
        Mistake(lambda *a: _em_step(*a, g_power=0),
                "the noise is missing its factor g(t): the increment of g dW over a step is g(t) √Δt z."),
        Mistake(lambda *a: _em_step(*a, drift_dt=-a[4]),
                "the drift has the wrong sign: the step moves along f, x + f(x, t) Δt."),
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


# ---------------------------------------------------------------------------- the reverse-time family
def _family(drift, diffusion, score, x, t, lam, *, c=None, score_sign=-1.0, g_power=2, drift_sign=1.0):
    """drift_sign·f + score_sign·c·g^g_power·score; the defaults, c = ½(1 + λ²), are the right drift."""
    c = 0.5 * (1 + lam**2) if c is None else c
    return drift_sign * drift(x, t) + score_sign * c * diffusion(t)[:, None] ** g_power * score(x, t)


def reference_family_drift(drift, diffusion, score, x, t, lam):
    """The drift, in t with dt < 0, of the reverse-time SDE with noise λ g(t) dW̄ whose marginals are the
    forward p_t: f(x, t) − ½(1 + λ²) g(t)² ∇log p_t(x), for `x: (B, d)`, `t: (B,)`."""
    return drift(x, t) - 0.5 * (1 + lam**2) * diffusion(t)[:, None] ** 2 * score(x, t)


def _family_inputs(lam_of):
    def make(gen):
        b, d = randint(3, 9, gen), randint(1, 4, gen)
        A = torch.randn(d, d, generator=gen, dtype=torch.float64)
        P = torch.randn(d, d, generator=gen, dtype=torch.float64)
        m = torch.randn(d, generator=gen, dtype=torch.float64)
        c0, c1 = 1.5 + torch.rand(2, generator=gen, dtype=torch.float64)  # g(t) ∈ [1.5, 5]: g² ≠ g

        def drift(x, t):  # a linear, time-dependent drift
            return x @ A.T * (1 + t[:, None])

        def diffusion(t):  # g(t) of shape (B,)
            return c0 + c1 * t

        def score(x, t):  # an affine, time-dependent stand-in for ∇log p_t
            return (m - x @ P @ P.T) / (1 + t[:, None])

        x = torch.randn(b, d, generator=gen, dtype=torch.float64)
        t = 0.05 + 0.9 * torch.rand(b, generator=gen, dtype=torch.float64)
        return (drift, diffusion, score, x, t, lam_of(gen))

    return make


def _generic_lam(gen):
    """λ in [0.25, 0.75] or [1.3, 2.5]: away from 0 and 1, where ½(1 + λ) and ½(1 + λ²) agree."""
    return uniform(0.25, 0.75, gen) if torch.rand(1, generator=gen) < 0.5 else uniform(1.3, 2.5, gen)


FAMILY_DRIFT = Exercise(
    "family_drift", reference_family_drift, [
        Case(_family_inputs(_generic_lam), "λ = 0.25…0.75 or 1.3…2.5"),
        Case(_family_inputs(lambda gen: 1.0), "λ = 1, the reverse SDE"),
        Case(_family_inputs(lambda gen: 0.0), "λ = 0, the probability-flow ODE"),
    ], atol=1e-8, rtol=1e-6, mistakes=[
        Mistake(lambda *a: _family(*a, score_sign=1.0),
                "the score term has the wrong sign: running backwards, the drift must push mass UP the density, "
                "f − c g² ∇log p_t with c > 0."),
        Mistake(lambda *a: _family(*a, drift_sign=-1.0, score_sign=1.0),
                "this is the drift in the reversed time 1 − t; the course writes the reverse equations in t itself, "
                "run with dt < 0 (as `vp.reverse` does), so f keeps its sign."),
        Mistake(lambda *a: _family(*a, g_power=1),
                "the score term is multiplied by g(t), but the diffusion enters Fokker–Planck as g(t)² (D = ½ g²)."),
        Mistake(lambda *a: _family(*a, c=0.5 * (1 + a[5])),
                "the coefficient is linear in λ, but the noise λ g dW̄ spreads mass at the rate ½ (λ g)²: "
                "λ enters squared."),
        Mistake(lambda *a: _family(*a, c=0.5 * (1 - a[5] ** 2)),
                "this is the drift of the FORWARD-time SDE with noise λ g; reversing it (Anderson, section 6) "
                "subtracts a further (λ g)² ∇log p_t."),
        Mistake(lambda *a: _family(*a, c=1 + a[5] ** 2),
                "the coefficient is twice too large: a ½ is missing (D = ½ g²)."),
        Mistake(lambda *a: _family(*a, c=1.0),
                "the drift does not depend on λ: that is the reverse SDE (λ = 1) for every λ; the less noise the "
                "sampler injects, the less of the score term it needs."),
        Mistake(lambda *a: _family(*a, c=0.5),
                "the drift does not depend on λ: that is the probability-flow ODE (λ = 0) for every λ; the noise "
                "λ g dW̄ spreads mass, and the drift must undo that too."),
        Mistake(lambda *a: _family(*a, c=0.0),
                "the score term is missing: read backwards, the forward drift alone keeps spreading mass."),
    ])


def check_family_drift(student_fn) -> None:
    """Exercise: the drift of the reverse-time SDE with noise λ g that keeps the forward marginals."""
    FAMILY_DRIFT.check(student_fn)
