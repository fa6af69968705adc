"""Checks for notebook 03 (continuous normalizing flows): Hutchinson's estimator, augmented dynamics,
the log-likelihood by backward integration."""

from __future__ import annotations

import math

import torch

from ._core import AUTOGRAD_CRASH, Case, Exercise, Mistake, randint, random_state

# ---------------------------------------------------------------------------- shared


def _random_map(gen, dim):
    """A nonlinear map f(x) or f(x, t) with a non-symmetric Jacobian whose diagonal is far from zero."""
    W1 = torch.randn(8, dim, generator=gen, dtype=torch.float64)
    W2 = torch.randn(dim, 8, generator=gen, dtype=torch.float64) / 3
    D = torch.rand(dim, generator=gen, dtype=torch.float64) + 0.5

    def f(x, t=None):
        flat = x.flatten(1)
        h = flat @ W1.T if t is None else flat @ W1.T + t[:, None]
        return (torch.tanh(h) @ W2.T + D * torch.sin(flat)).reshape(x.shape)

    return f


def _vjp(f, x, v, *args):
    """vᵀ ∂f/∂x for every sample, shaped like x."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(f(x, *args), x, v)[0]


def _exact_div(f, x, *args):
    """tr ∂f/∂x per sample, (B,): one vector–Jacobian product per coordinate, keeping the diagonal entry."""
    basis = torch.eye(x[0].numel(), dtype=x.dtype).reshape(-1, 1, *x.shape[1:])
    return sum(_vjp(f, x, e.expand_as(x), *args).flatten(1)[:, i] for i, e in enumerate(basis))


# ---------------------------------------------------------------------------- Hutchinson


def reference_hutchinson_divergence(f, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """epsᵀ (∂f/∂x) eps per sample, for a map f: (B, *D) -> (B, *D) acting sample by sample: (B,)."""
    return (_vjp(f, x, eps) * eps).flatten(1).sum(1)


def _hutchinson_inputs(gen):
    x = random_state(gen)
    f = _random_map(gen, x[0].numel())
    eps = torch.randn(x.shape, generator=gen, dtype=torch.float64).sign()
    return (f, x, eps)


HUTCHINSON_DIVERGENCE = Exercise(
    "hutchinson_divergence", reference_hutchinson_divergence, _hutchinson_inputs, atol=1e-8, rtol=1e-6,
    crashes=[AUTOGRAD_CRASH], mistakes=[
        Mistake(lambda f, x, eps: _exact_div(f, x),
                "this is the exact divergence tr(∂f/∂x); Hutchinson's estimate uses the probe: "
                "epsᵀ (∂f/∂x) eps, one vector–Jacobian product and a dot product with eps."),
        Mistake(lambda f, x, eps: (f(x) * eps).flatten(1).sum(1),
                "it returns epsᵀ f(x); the estimator needs the Jacobian: epsᵀ (∂f/∂x) eps, "
                "with epsᵀ ∂f/∂x = torch.autograd.grad(f(x), x, grad_outputs=eps)."),
        Mistake(lambda f, x, eps: _vjp(f, x, eps).flatten(1).sum(1),
                "it sums the entries of epsᵀ ∂f/∂x; multiply by eps first, then sum: (eps_J * eps).sum."),
        Mistake(lambda f, x, eps: _vjp(f, x, eps) * eps,
                "it returns the products epsᵀ(∂f/∂x) ⊙ eps, shaped like x; sum them over every dimension but "
                "the batch: (eps_J * eps).flatten(1).sum(1)."),
    ])


def check_hutchinson_divergence(student_fn) -> None:
    """`hutchinson_divergence(f, x, eps)`: epsᵀ (∂f/∂x) eps for every sample, shape (B,)."""
    HUTCHINSON_DIVERGENCE.check(student_fn)


# ---------------------------------------------------------------------------- augmented dynamics


def reference_augmented_dynamics(field, x: torch.Tensor, t: torch.Tensor):
    """(dx/dt, d log p/dt) = (f(x, t), −tr ∂f/∂x (x, t)) with the exact trace: shapes (B, *D), (B,)."""
    return field(x, t), -_exact_div(field, x, t)


def _augmented_inputs(gen):
    x = random_state(gen)
    field = _random_map(gen, x[0].numel())
    t = torch.rand(x.shape[0], generator=gen, dtype=torch.float64)
    return (field, x, t)


def _with_log_density_rate(rate):
    """The augmented dynamics with d log p/dt computed by `rate(field, x, t)`."""
    return lambda field, x, t: (field(x, t), rate(field, x, t))


AUGMENTED_DYNAMICS = Exercise(
    "augmented_dynamics", reference_augmented_dynamics, _augmented_inputs, atol=1e-8, rtol=1e-6,
    crashes=[AUTOGRAD_CRASH], mistakes=[
        Mistake(_with_log_density_rate(_exact_div),
                "the log-density's derivative has the wrong sign: d log p/dt = −tr(∂f/∂x), "
                "mass spreads out (log p falls) where the field diverges."),
        Mistake(_with_log_density_rate(lambda field, x, t: -field(x, t).flatten(1).sum(1)),
                "it uses −Σ_i f_i(x); the divergence is Σ_i ∂f_i/∂x_i, a sum of derivatives (autograd), "
                "not of the field's values."),
        Mistake(_with_log_density_rate(lambda field, x, t: -_vjp(field, x, torch.ones_like(x), t).flatten(1).sum(1)),
                "it sums every entry of the Jacobian (1ᵀ J 1); keep only the diagonal ∂f_i/∂x_i."),
        Mistake(lambda field, x, t: reference_augmented_dynamics(field, x, t)[::-1],
                "the two outputs are swapped: return (dx/dt, d log p/dt) = (f(x, t), −tr ∂f/∂x), in that order."),
    ])


def check_augmented_dynamics(student_fn) -> None:
    """`augmented_dynamics(field, x, t)`: (f(x, t), −div f(x, t)) for every sample, exact trace."""
    AUGMENTED_DYNAMICS.check(student_fn)


# ---------------------------------------------------------------------------- log-likelihood by backward integration


def _standard_normal_log_prob(z):
    return -0.5 * (z.pow(2).sum(1) + z.shape[1] * math.log(2 * math.pi))


def _backward_log_prob(field, div, x, steps, *, sign=-1.0, start=1.0, base_at_end=True, with_base=True,
                       field_time_forward=False, euler=False):
    """log p_1(x) by `steps` RK4 steps of the augmented state [x, ℓ] from t = `start` to 1 − `start`;
    the keyword arguments switch on the usual mistakes (the reference uses the defaults)."""
    h = (1.0 - 2 * start) / steps  # −1/steps from t = 1 back to 0; +1/steps for the wrong direction
    b = x.shape[0]

    def rhs(t, z):
        tt = torch.full((b,), (1.0 - t) if field_time_forward else t, dtype=z.dtype)
        return field(z, tt), sign * div(z, tt)

    z, ell = x, torch.zeros(b, dtype=x.dtype)
    for k in range(steps):
        t = start + k * h
        k1 = rhs(t, z)
        if euler:
            z, ell = z + h * k1[0], ell + h * k1[1]
            continue
        k2 = rhs(t + h / 2, z + h / 2 * k1[0])
        k3 = rhs(t + h / 2, z + h / 2 * k2[0])
        k4 = rhs(t + h, z + h * k3[0])
        z = z + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        ell = ell + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
    base = _standard_normal_log_prob(z if base_at_end else x) if with_base else 0.0
    return base - ell


def reference_ffjord_log_prob(field, div, x: torch.Tensor, steps: int) -> torch.Tensor:
    """log p_1(x) = log N(x_0; 0, I) − ℓ_0, with [x_t, ℓ_t] integrated by `steps` RK4 steps from
    [x, 0] at t = 1 back to t = 0 under d/dt [x, ℓ] = [f(x, t), −div f(x, t)]: x (B, D) -> (B,)."""
    return _backward_log_prob(field, div, x, steps)


def _linear_field_inputs(gen):
    dim = randint(2, 4, gen)
    A = torch.randn(dim, dim, generator=gen, dtype=torch.float64) / 2
    x = torch.randn(randint(3, 8, gen), dim, generator=gen, dtype=torch.float64)
    return (lambda z, t: z @ A.T, lambda z, t: torch.trace(A).expand(z.shape[0]), x, randint(8, 17, gen))


def _time_dependent_inputs(gen):
    dim = randint(2, 4, gen)
    f = _random_map(gen, dim)
    x = torch.randn(randint(3, 8, gen), dim, generator=gen, dtype=torch.float64)
    return (f, lambda z, t: _exact_div(f, z, t), x, randint(8, 17, gen))


def _mistake(**wrong):
    return lambda field, div, x, steps: _backward_log_prob(field, div, x, steps, **wrong)


FFJORD_LOG_PROB = Exercise(
    "ffjord_log_prob", reference_ffjord_log_prob,
    [Case(_linear_field_inputs, "a linear field f(x) = Ax, whose p_1 is a Gaussian"),
     Case(_time_dependent_inputs, "a nonlinear field that depends on t")],
    atol=1e-8, rtol=1e-6, mistakes=[
        Mistake(_mistake(sign=1.0),
                "the divergence integral has the wrong sign: dℓ/dt = −div f, so log p_1(x) = log N(x_0) − ℓ_0 "
                "= log N(x_0) + ∫_0^1 div f dt (a field that spreads points out lowers their density)."),
        Mistake(_mistake(start=0.0),
                "it integrates in the wrong direction: x is data at t = 1; step from t = 1 back to t = 0 "
                "(h = −1/steps) to reach the base point x_0."),
        Mistake(_mistake(field_time_forward=True),
                "the state steps back from t = 1 to 0 but the field is evaluated at the times of a forward "
                "run (0, h, 2h, ...); call f(x, t) at the current time, which falls from 1 to 0."),
        Mistake(_mistake(with_base=False),
                "it forgets the base log-density: log p_1(x) = log N(x_0; 0, I) − ℓ_0, not −ℓ_0 alone."),
        Mistake(_mistake(base_at_end=False),
                "the base log-density is evaluated at the data point x; evaluate it at x_0, where the "
                "backward integration ends."),
        Mistake(_mistake(euler=True),
                "these are Euler steps; take RK4 steps of the augmented state: k1 … k4 for x and ℓ together, "
                "then [x, ℓ] += h/6 (k1 + 2 k2 + 2 k3 + k4)."),
    ])


def check_ffjord_log_prob(student_fn) -> None:
    """`ffjord_log_prob(field, div, x, steps)`: log p_1(x) by RK4 integration of [x, ℓ] from t = 1 back to 0."""
    FFJORD_LOG_PROB.check(student_fn)
