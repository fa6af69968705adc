"""Checks for notebook 09 (rectified flow and reflow)."""

from __future__ import annotations

import math

import torch

from .. import rectified_flow as rf
from .. import solvers
from ..tensors import batch_time
from ._core import ExerciseError, check


def _check_with_hints(name, student_fn, reference_fn, inputs, hints, **kw) -> None:
    """`check`, and when it fails, name a known mistake if the student's output matches one."""
    try:
        check(name, student_fn, reference_fn, inputs, **kw)
    except ExerciseError as err:
        gen = torch.Generator().manual_seed(1234)
        args = inputs(gen)
        try:
            got = torch.as_tensor(student_fn(*args)).double()
        except Exception:
            raise err from None
        for mistake, hint in hints:
            want = torch.as_tensor(mistake(*args)).double()
            if got.shape == want.shape and torch.allclose(got, want, rtol=1e-4, atol=1e-6):
                raise ExerciseError(f"{err} Hint: {hint}") from None
        raise


# 1. the logit-normal density -------------------------------------------------------------
def _density_inputs(gen):
    t = torch.rand(64, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    m = float(torch.randn(1, generator=gen)) * 0.7
    s = float(torch.rand(1, generator=gen)) * 1.5 + 0.4
    return (t, m, s)


def check_logit_normal_density(student_fn) -> None:
    """π_ln(t; m, s) = 1/(s√(2π)) · 1/(t(1−t)) · exp(−(logit t − m)²/(2s²))."""

    def no_jacobian(t, m, s):
        return rf.logit_normal_density(t, m, s) * t * (1 - t)

    def variance_for_scale(t, m, s):
        return rf.logit_normal_density(t, m, math.sqrt(s))

    _check_with_hints(
        "logit_normal_density", student_fn, rf.logit_normal_density, _density_inputs,
        [(no_jacobian, "you have the normal density of logit(t); the change of variables "
                       "u = logit(t) adds the factor |du/dt| = 1/(t(1−t))."),
         (variance_for_scale, "s is the standard deviation of logit(t), not its variance.")],
        rtol=1e-5,
    )


# 2. reflow pairs -------------------------------------------------------------------------
def reference_reflow_targets(velocity, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """Z1 of dZ/dt = velocity(Z, t), Z0 = x0, with `steps` equal Euler steps on [0, 1]."""
    f = lambda t, x: velocity(x, batch_time(t, x))  # noqa: E731
    return solvers.odeint(f, x0, (0.0, 1.0), method="euler", steps=steps).x


def _linear_field(gen):
    """A random field v(x, t) = x A + t b + c, smooth enough for Euler to be tested exactly."""
    a = 0.6 * torch.randn(2, 2, generator=gen, dtype=torch.float64)
    b, c = torch.randn(2, generator=gen, dtype=torch.float64), torch.randn(2, generator=gen, dtype=torch.float64)

    def velocity(x, t):
        if t.shape != (x.shape[0],):
            raise ValueError(f"velocity(x, t) expects t of shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
        return x @ a + t[:, None] * b + c

    return velocity


def check_reflow_targets(student_fn) -> None:
    """Euler-integrate the learned flow from noise: the new partner x1 of each x0."""

    def inputs(gen):
        x0 = torch.randn(int(torch.randint(5, 40, (1,), generator=gen)), 2, generator=gen, dtype=torch.float64)
        return (_linear_field(gen), x0, int(torch.randint(1, 9, (1,), generator=gen)))

    def time_stuck_at_zero(velocity, x0, steps):
        return reference_reflow_targets(lambda x, t: velocity(x, torch.zeros_like(t)), x0, steps)

    def one_step_too_few(velocity, x0, steps):
        return reference_reflow_targets(velocity, x0, steps - 1) if steps > 1 else x0

    _check_with_hints(
        "reflow_targets", student_fn, reference_reflow_targets, inputs,
        [(time_stuck_at_zero, "the time passed to velocity must advance: t_k = k / steps."),
         (one_step_too_few, "take exactly `steps` steps of size 1 / steps, from t = 0 to t = 1.")],
        atol=1e-8, rtol=1e-6,
    )


# 3. the straightness estimate ------------------------------------------------------------
def reference_straightness_estimate(trajectory, velocity, t) -> torch.Tensor:
    """S = trapezoid_t( mean_b ||(Z1 − Z0) − v_t||² ) for (T, B, D) paths and velocities."""
    return torch.tensor(rf.straightness_integral(trajectory, velocity, t).value, dtype=torch.float64)


def _straightness_inputs(gen):
    n_t, b = int(torch.randint(5, 20, (1,), generator=gen)), int(torch.randint(4, 30, (1,), generator=gen))
    t = torch.linspace(0, 1, n_t, dtype=torch.float64)
    trajectory = torch.randn(n_t, b, 2, generator=gen, dtype=torch.float64).cumsum(0) / n_t
    velocity = torch.randn(n_t, b, 2, generator=gen, dtype=torch.float64)
    return (trajectory, velocity, t)


def check_straightness_estimate(student_fn) -> None:
    """S = ∫₀¹ E||(Z1 − Z0) − v(Z_t, t)||² dt by the trapezoid rule on the trajectory's grid."""

    def profile(trajectory, velocity):
        return (trajectory[-1] - trajectory[0] - velocity).pow(2).sum(-1)  # (T, B)

    def left_riemann(trajectory, velocity, t):
        return (profile(trajectory, velocity).mean(1)[:-1] * t.diff()).sum()

    def batch_sum(trajectory, velocity, t):
        return torch.trapezoid(profile(trajectory, velocity).sum(1), t)

    def no_square(trajectory, velocity, t):
        return torch.trapezoid(profile(trajectory, velocity).sqrt().mean(1), t)

    _check_with_hints(
        "straightness_estimate", student_fn, reference_straightness_estimate, _straightness_inputs,
        [(left_riemann, "integrate with the trapezoid rule (torch.trapezoid), not a left Riemann sum."),
         (batch_sum, "average over the batch (the expectation E), do not sum."),
         (no_square, "use the squared norm ||·||², not the norm.")],
        atol=1e-8, rtol=1e-6,
    )
