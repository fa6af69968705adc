"""Checks for notebook 02 (Neural ODEs): one RK4 step, and the adjoint's right-hand side."""

from __future__ import annotations

import torch

from .. import neural_odes as ref
from ._core import ExerciseError, check, diagnose_known_mistakes, random_state


def _random_field(gen, dim):
    """A nonlinear, time-dependent f(t, x) with a non-symmetric Jacobian, on flattened samples."""
    W1 = torch.randn(8, dim, generator=gen, dtype=torch.float64)
    W2 = torch.randn(dim, 8, generator=gen, dtype=torch.float64) / 3
    c = torch.randn(dim, generator=gen, dtype=torch.float64)

    def f(t, x):
        flat = x.flatten(1)
        out = torch.tanh(flat @ W1.T + torch.as_tensor(t, dtype=x.dtype)) @ W2.T + torch.cos(3 * t) * c
        return out.reshape(x.shape)

    return f


def _random_state(gen):
    x = random_state(gen)
    return x, x[0].numel()


# ----------------------------------------------------------------------------- RK4


def _rk4_inputs(gen):
    x, dim = _random_state(gen)
    f = _random_field(gen, dim)
    t = torch.rand((), generator=gen, dtype=torch.float64) * 2 - 1
    h = float(torch.rand((), generator=gen) * 0.6 + 0.1) * (1 if torch.rand((), generator=gen) < 0.7 else -1)
    return (f, t, x, h)


def _rk4_variant(stage_time, weights, half=0.5):
    def step(f, t, x, h):
        k1 = f(t, x)
        k2 = f(t + stage_time[0] * h, x + half * h * k1)
        k3 = f(t + stage_time[1] * h, x + half * h * k2)
        k4 = f(t + stage_time[2] * h, x + h * k3)
        w = weights
        return x + h * (w[0] * k1 + w[1] * k2 + w[2] * k3 + w[3] * k4)
    return step


def _rk38(f, t, x, h):
    k1 = f(t, x)
    k2 = f(t + h / 3, x + h * k1 / 3)
    k3 = f(t + 2 * h / 3, x + h * (k2 - k1 / 3))
    k4 = f(t + h, x + h * (k1 - k2 + k3))
    return x + h * (k1 + 3 * k2 + 3 * k3 + k4) / 8


RK4_MISTAKES = [
    (lambda f, t, x, h: ref.rk4_step(f, t, x, h) - x,
     "it returns the increment h·(k1 + 2k2 + 2k3 + k4)/6; the step should return x plus that increment."),
    (ref.euler_step, "this is an Euler step x + h·f(t, x); RK4 averages four slopes k1..k4."),
    (_rk4_variant((0, 0, 0), (1 / 6, 1 / 3, 1 / 3, 1 / 6)),
     "every slope is evaluated at time t; k2 and k3 belong at t + h/2 and k4 at t + h."),
    (_rk4_variant((0.5, 0.5, 1), (1 / 4, 1 / 4, 1 / 4, 1 / 4)),
     "the four slopes are weighted equally; RK4 weights them 1/6, 2/6, 2/6, 1/6 (Simpson's rule)."),
    (_rk4_variant((0.5, 0.5, 1), (1 / 6, 1 / 3, 1 / 3, 1 / 6), half=1.0),
     "k2 and k3 are taken at x + h·k instead of the half step x + (h/2)·k."),
    (_rk38, "this is Kutta's 3/8 rule (what torchdiffeq calls 'rk4'), also of order 4; "
            "the exercise asks for the classical RK4 with weights 1/6, 2/6, 2/6, 1/6."),
]


def check_rk4_step(student_fn) -> None:
    """`rk4_step(f, t, x, h)`: one classical Runge–Kutta step for a time-dependent field."""
    try:
        check("rk4_step", student_fn, ref.rk4_step, _rk4_inputs, atol=1e-6, rtol=1e-5)
    except ExerciseError as err:
        diagnose_known_mistakes("rk4_step", student_fn, _rk4_inputs, RK4_MISTAKES, err)


# ------------------------------------------------------------------------- adjoint


def _adjoint_inputs(gen):
    x, dim = _random_state(gen)
    f = _random_field(gen, dim)
    t = torch.rand((), generator=gen, dtype=torch.float64)
    a = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    return (f, t, x, a)


def _jacobian_times_a(f, t, x, a):
    """J a (a Jacobian–vector product), the transpose mistake."""
    _, jvp = torch.func.jvp(lambda y: f(t, y), (x,), (a,))
    return -jvp


ADJOINT_MISTAKES = [
    (_jacobian_times_a, "it computes J·a (a Jacobian–vector product); the adjoint needs aᵀJ, "
                        "a vector–Jacobian product: torch.autograd.grad(f(t, x), x, grad_outputs=a)."),
    (lambda f, t, x, a: f(t, x),
     "it returns f(t, x), the state's derivative; the adjoint's derivative is −aᵀ ∂f/∂x."),
]


def check_adjoint_rhs(student_fn) -> None:
    """`adjoint_rhs(f, t, x, a)`: da/dt = −aᵀ ∂f/∂x for every sample, shaped like x."""
    try:
        check("adjoint_rhs", student_fn, ref.adjoint_rhs, _adjoint_inputs, atol=1e-8, rtol=1e-6)
    except ExerciseError as err:
        if "does not require grad" in str(err):
            raise ExerciseError(
                "`adjoint_rhs` raised an autograd error: x must require gradients before f is applied, "
                "e.g. `x = x.detach().requires_grad_(True)` inside `with torch.enable_grad():`."
            ) from None
        diagnose_known_mistakes("adjoint_rhs", student_fn, _adjoint_inputs, ADJOINT_MISTAKES, err)
