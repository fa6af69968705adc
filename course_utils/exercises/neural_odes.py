"""Checks for notebook 02 (Neural ODEs): one RK4 step, and the adjoint's right-hand side."""

from __future__ import annotations

import torch

from ._core import AUTOGRAD_CRASH, Exercise, Mistake, random_state, uniform


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


def _state_and_field(gen):
    x = random_state(gen)
    return x, _random_field(gen, x[0].numel())


# ----------------------------------------------------------------------------- RK4


def _runge_kutta(stage_time=(0.5, 0.5, 1.0), weights=(1 / 6, 1 / 3, 1 / 3, 1 / 6), half=0.5):
    """A four-stage step whose stage times, weights and half-step can be changed (the mistakes below)."""

    def step(f, t, x, h):
        k1 = f(t, x)
        k2 = f(t + stage_time[0] * h, x + half * h * k1)
        k3 = f(t + stage_time[1] * h, x + half * h * k2)
        k4 = f(t + stage_time[2] * h, x + h * k3)
        return x + h * (weights[0] * k1 + weights[1] * k2 + weights[2] * k3 + weights[3] * k4)

    return step


reference_rk4_step = _runge_kutta()
reference_rk4_step.__doc__ = """The classical RK4 step: k1 = f(t, x), k2 = f(t + h/2, x + h k1/2),
k3 = f(t + h/2, x + h k2/2), k4 = f(t + h, x + h k3), x + h (k1 + 2 k2 + 2 k3 + k4) / 6."""


def _rk4_inputs(gen):
    x, f = _state_and_field(gen)
    t = torch.rand((), generator=gen, dtype=torch.float64) * 2 - 1
    h = uniform(0.1, 0.7, gen) * (1 if torch.rand((), generator=gen) < 0.7 else -1)
    return (f, t, x, h)


def _k3_from_k1(f, t, x, h):
    k1 = f(t, x)
    k2 = f(t + h / 2, x + h / 2 * k1)
    k3 = f(t + h / 2, x + h / 2 * k1)
    k4 = f(t + h, x + h * k3)
    return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def _k4_from_k2(f, t, x, h):
    k1 = f(t, x)
    k2 = f(t + h / 2, x + h / 2 * k1)
    k3 = f(t + h / 2, x + h / 2 * k2)
    k4 = f(t + h, x + h * k2)
    return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def _rk38(f, t, x, h):
    k1 = f(t, x)
    k2 = f(t + h / 3, x + h * k1 / 3)
    k3 = f(t + 2 * h / 3, x + h * (k2 - k1 / 3))
    k4 = f(t + h, x + h * (k1 - k2 + k3))
    return x + h * (k1 + 3 * k2 + 3 * k3 + k4) / 8


RK4_STEP = Exercise("rk4_step", reference_rk4_step, _rk4_inputs, atol=1e-6, rtol=1e-5, mistakes=[
    Mistake(lambda f, t, x, h: reference_rk4_step(f, t, x, h) - x,
            "it returns the increment h·(k1 + 2k2 + 2k3 + k4)/6; the step should return x plus that increment."),
    Mistake(lambda f, t, x, h: x + h * f(t, x),
            "this is an Euler step x + h·f(t, x); RK4 averages four slopes k1..k4."),
    Mistake(_runge_kutta(stage_time=(0, 0, 0)),
            "every slope is evaluated at time t; k2 and k3 belong at t + h/2 and k4 at t + h."),
    Mistake(_runge_kutta(weights=(1 / 4, 1 / 4, 1 / 4, 1 / 4)),
            "the four slopes are weighted equally; RK4 weights them 1/6, 2/6, 2/6, 1/6 (Simpson's rule)."),
    Mistake(_runge_kutta(half=1.0), "k2 and k3 are taken at x + h·k instead of the half step x + (h/2)·k."),
    Mistake(_k3_from_k1, "k3 is evaluated at x + (h/2)·k1; each stage starts from the previous slope: "
                         "k3 = f(t + h/2, x + (h/2)·k2)."),
    Mistake(_k4_from_k2, "k4 is evaluated at x + h·k2; the last stage uses the third slope: k4 = f(t + h, x + h·k3)."),
    Mistake(_rk38, "this is Kutta's 3/8 rule (what torchdiffeq calls 'rk4'), also of order 4; "
                   "the exercise asks for the classical RK4 with weights 1/6, 2/6, 2/6, 1/6."),
])


def check_rk4_step(student_fn) -> None:
    """`rk4_step(f, t, x, h)`: one classical Runge–Kutta step for a time-dependent field."""
    RK4_STEP.check(student_fn)


# ------------------------------------------------------------------------- adjoint


def _vjp(f, t, x, a):
    """aᵀ ∂f(t, x)/∂x for every sample (f acts on each sample separately)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (a_J,) = torch.autograd.grad(f(t, x), x, grad_outputs=a)
    return a_J


def reference_adjoint_rhs(f, t, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """da/dt = −aᵀ ∂f(t, x)/∂x, one vector–Jacobian product for the whole batch: shaped like x."""
    return -_vjp(f, t, x, a)


def _adjoint_inputs(gen):
    x, f = _state_and_field(gen)
    t = torch.rand((), generator=gen, dtype=torch.float64)
    a = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    return (f, t, x, a)


def _jacobian_times_a(f, t, x, a):
    """−J a (a Jacobian–vector product), the transpose mistake."""
    _, jvp = torch.func.jvp(lambda y: f(t, y), (x,), (a,))
    return -jvp


ADJOINT_RHS = Exercise("adjoint_rhs", reference_adjoint_rhs, _adjoint_inputs, atol=1e-8, rtol=1e-6,
                       crashes=[AUTOGRAD_CRASH], mistakes=[
    Mistake(_jacobian_times_a, "it computes J·a (a Jacobian–vector product); the adjoint needs aᵀJ, "
                               "a vector–Jacobian product: torch.autograd.grad(f(t, x), x, grad_outputs=a)."),
    Mistake(lambda f, t, x, a: f(t, x),
            "it returns f(t, x), the state's derivative; the adjoint's derivative is −aᵀ ∂f/∂x."),
    Mistake(_vjp, "the minus sign is missing: the adjoint obeys da/dt = −aᵀ ∂f/∂x (it is integrated backwards "
                  "in time, from the loss to the input)."),
])


def check_adjoint_rhs(student_fn) -> None:
    """`adjoint_rhs(f, t, x, a)`: da/dt = −aᵀ ∂f/∂x for every sample, shaped like x."""
    ADJOINT_RHS.check(student_fn)
