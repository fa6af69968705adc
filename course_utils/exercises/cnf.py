"""Checks for notebook 03 (continuous normalizing flows): Hutchinson's estimator, augmented dynamics."""

from __future__ import annotations

import torch

from ._core import AUTOGRAD_CRASH, Exercise, Mistake, random_state

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
