"""Checks for notebook 03 (continuous normalizing flows): Hutchinson's estimator, augmented dynamics."""

from __future__ import annotations

import torch

from .. import cnf as ref
from ._core import ExerciseError, check, diagnose_known_mistakes, random_state

# ---------------------------------------------------------------------------- shared


def _random_map(gen, dim, with_time=False):
    """A nonlinear map with a non-symmetric Jacobian whose diagonal is far from zero."""
    W1 = torch.randn(8, dim, generator=gen, dtype=torch.float64)
    W2 = torch.randn(dim, 8, generator=gen, dtype=torch.float64) / 3
    D = torch.rand(dim, generator=gen, dtype=torch.float64) + 0.5

    def f(x, t=None):
        flat = x.flatten(1)
        h = flat @ W1.T if t is None else flat @ W1.T + t[:, None]
        return (torch.tanh(h) @ W2.T + D * torch.sin(flat)).reshape(x.shape)

    return f


def _autograd_hint(err: ExerciseError) -> None:
    msg = str(err)
    if "does not require grad" in msg or "element 0 of tensors" in msg or "One of the differentiated" in msg:
        raise ExerciseError(
            f"{msg.split(' raised')[0]} raised an autograd error: make x require gradients before applying "
            "f, e.g. `x = x.detach().requires_grad_(True)` inside `with torch.enable_grad():`."
        ) from None


def _diagnose(name, student_fn, inputs, mistakes, err: ExerciseError, output=None):
    if "not implemented" not in str(err):
        _autograd_hint(err)
    diagnose_known_mistakes(name, student_fn, inputs, mistakes, err, output=output)


def _exact_div(f, x, *args):
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        return ref.divergence_exact(f(x, *args), x, create_graph=False).detach()


# ---------------------------------------------------------------------------- Hutchinson


def reference_hutchinson_divergence(f, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """epsᵀ (∂f/∂x) eps per sample, for a map f: (B, *D) -> (B, *D) acting sample by sample: (B,)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        return ref.divergence_hutchinson(f(x), x, eps, create_graph=False).detach()


def _hutchinson_inputs(gen):
    x = random_state(gen)
    f = _random_map(gen, x[0].numel())
    eps = torch.randn(x.shape, generator=gen, dtype=torch.float64).sign()
    return (f, x, eps)


def _jvp_without_dot(f, x, eps):
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(f(x), x, eps)[0]


HUTCHINSON_MISTAKES = [
    (lambda f, x, eps: _exact_div(f, x),
     "this is the exact divergence tr(∂f/∂x); Hutchinson's estimate uses the probe: "
     "epsᵀ (∂f/∂x) eps, one vector–Jacobian product and a dot product with eps."),
    (lambda f, x, eps: (f(x) * eps).flatten(1).sum(1),
     "it returns epsᵀ f(x); the estimator needs the Jacobian: epsᵀ (∂f/∂x) eps, "
     "with epsᵀ ∂f/∂x = torch.autograd.grad(f(x), x, grad_outputs=eps)."),
    (lambda f, x, eps: _jvp_without_dot(f, x, eps).flatten(1).sum(1),
     "it sums the entries of epsᵀ ∂f/∂x; multiply by eps first, then sum: (eps_J * eps).sum."),
]


def check_hutchinson_divergence(student_fn) -> None:
    """`hutchinson_divergence(f, x, eps)`: epsᵀ (∂f/∂x) eps for every sample, shape (B,)."""
    try:
        check("hutchinson_divergence", student_fn, reference_hutchinson_divergence, _hutchinson_inputs,
              atol=1e-8, rtol=1e-6)
    except ExerciseError as err:
        _diagnose("hutchinson_divergence", student_fn, _hutchinson_inputs, HUTCHINSON_MISTAKES, err)


# ---------------------------------------------------------------------------- augmented dynamics


def reference_augmented_dynamics(field, x: torch.Tensor, t: torch.Tensor):
    """(dx/dt, d log p/dt) = (f(x, t), −tr ∂f/∂x (x, t)) with the exact trace: shapes (B, *D), (B,)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        f_x = field(x, t)
        div = ref.divergence_exact(f_x, x, create_graph=False)
    return f_x.detach(), -div.detach()


def _augmented_inputs(gen):
    x = random_state(gen)
    field = _random_map(gen, x[0].numel(), with_time=True)
    t = torch.rand(x.shape[0], generator=gen, dtype=torch.float64)
    return (field, x, t)


AUGMENTED_MISTAKES = [
    (lambda field, x, t: _exact_div(field, x, t),
     "the log-density's derivative has the wrong sign: d log p/dt = −tr(∂f/∂x), "
     "mass spreads out (log p falls) where the field diverges."),
    (lambda field, x, t: -(field(x, t).flatten(1).sum(1)),
     "it uses −Σ_i f_i(x); the divergence is Σ_i ∂f_i/∂x_i, a sum of derivatives (autograd), "
     "not of the field's values."),
    (lambda field, x, t: -reference_hutchinson_divergence(lambda y: field(y, t), x, torch.ones_like(x)),
     "it sums every entry of the Jacobian (1ᵀ J 1); keep only the diagonal ∂f_i/∂x_i."),
]


def check_augmented_dynamics(student_fn) -> None:
    """`augmented_dynamics(field, x, t)`: (f(x, t), −div f(x, t)) for every sample, exact trace."""
    try:
        check("augmented_dynamics", student_fn, reference_augmented_dynamics, _augmented_inputs,
              atol=1e-8, rtol=1e-6)
    except ExerciseError as err:
        _diagnose("augmented_dynamics", student_fn, _augmented_inputs, AUGMENTED_MISTAKES, err, output=1)
