"""Checks for notebook 09 (rectified flow and reflow)."""

from __future__ import annotations

import math

import torch

from ._core import Exercise, Mistake, Symptom, randint, uniform


# 1. the logit-normal density -------------------------------------------------------------
def reference_logit_normal_density(t: torch.Tensor, m: float, s: float) -> torch.Tensor:
    """π_ln(t; m, s) = 1/(s√(2π)) · 1/(t(1−t)) · exp(−(logit t − m)²/(2s²)) on (0, 1)."""
    logit = torch.log(t) - torch.log1p(-t)
    return torch.exp(-0.5 * ((logit - m) / s) ** 2) / (s * math.sqrt(2 * math.pi) * t * (1 - t))


def _density_inputs(gen):
    t = torch.rand(64, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    m = float(torch.randn(1, generator=gen)) * 0.7
    s = uniform(0.4, 1.9, gen)
    return (t, m, s)


LOGIT_NORMAL_DENSITY = Exercise("logit_normal_density", reference_logit_normal_density, _density_inputs, rtol=1e-5,
                                mistakes=[
    Mistake(lambda t, m, s: reference_logit_normal_density(t, m, s) * t * (1 - t),
            "it is the normal density of logit(t); the change of variables u = logit(t) adds the factor "
            "|du/dt| = 1/(t(1−t))."),
    Mistake(lambda t, m, s: reference_logit_normal_density(t, m, math.sqrt(s)),
            "s is the standard deviation of logit(t), not its variance."),
    Mistake(lambda t, m, s: reference_logit_normal_density(t, m, s) * s * math.sqrt(2 * math.pi),
            "the normal density's constant 1/(s√(2π)) is missing."),
])


def check_logit_normal_density(student_fn) -> None:
    """π_ln(t; m, s) = 1/(s√(2π)) · 1/(t(1−t)) · exp(−(logit t − m)²/(2s²))."""
    LOGIT_NORMAL_DENSITY.check(student_fn)


# 2. reflow pairs -------------------------------------------------------------------------
def _euler(velocity, x0, steps, *, n_steps=None, time=lambda k, steps: k / steps, dt=None):
    """`n_steps` (default `steps`) Euler steps of size `dt` (default 1/steps), velocity taken at `time(k, steps)`."""
    z, dt = x0, 1.0 / steps if dt is None else dt
    for k in range(steps if n_steps is None else n_steps):
        z = z + dt * velocity(z, torch.full((x0.shape[0],), time(k, steps), dtype=x0.dtype))
    return z


def reference_reflow_targets(velocity, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """Z1 of dZ/dt = velocity(Z, t), Z0 = x0, with `steps` equal Euler steps on [0, 1], t_k = k/steps."""
    return _euler(velocity, x0, steps)


def _linear_field(gen):
    """A random field v(x, t) = x A + t b + c, smooth enough for Euler to be tested exactly."""
    a = 0.6 * torch.randn(2, 2, generator=gen, dtype=torch.float64)
    b, c = torch.randn(2, generator=gen, dtype=torch.float64), torch.randn(2, generator=gen, dtype=torch.float64)

    def velocity(x, t):
        if t.shape != (x.shape[0],):
            raise ValueError(f"velocity(x, t) expects t of shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
        return x @ a + t[:, None] * b + c

    return velocity


def _reflow_inputs(gen):
    x0 = torch.randn(randint(5, 40, gen), 2, generator=gen, dtype=torch.float64)
    return (_linear_field(gen), x0, randint(2, 9, gen))  # steps ≥ 2: with one step, time never advances


def _starts_elsewhere(got, velocity, x0, steps) -> bool:
    """Whether `got` is the Euler end point of other starting points than `x0` (fresh noise, shuffled rows).

    The inputs' field is linear, so `steps` Euler steps are an affine map z1 = z0 M + b: invert it to find
    where each output row started, and see whether those starts are unrelated to x0."""
    d = x0.shape[1]
    b = reference_reflow_targets(velocity, torch.zeros(1, d, dtype=x0.dtype), steps)
    m = reference_reflow_targets(velocity, torch.eye(d, dtype=x0.dtype), steps) - b
    start = torch.linalg.solve(m.T, (got.to(x0.dtype) - b).T).T
    if not torch.isfinite(start).all():
        return False
    nearest = torch.cdist(start, x0).min(1)
    if (nearest.values < 1e-6).all():  # the rows of x0, in another order
        return bool((nearest.indices != torch.arange(len(x0))).any())
    corr = (start * x0).sum() / (start.norm() * x0.norm())
    return bool(corr < 0.5 and 0.3 < start.std() < 3)  # noise-like starts, unrelated to x0


def _fresh_noise_targets(velocity, x0, steps):
    return reference_reflow_targets(velocity, torch.randn_like(x0), steps)


REFLOW_TARGETS = Exercise("reflow_targets", reference_reflow_targets, _reflow_inputs, atol=1e-8, rtol=1e-6,
                          mistakes=[
    Mistake(lambda v, x0, steps: _euler(v, x0, steps, time=lambda k, n: 0.0),
            "the time passed to velocity must advance: t_k = k / steps."),
    Mistake(lambda v, x0, steps: _euler(v, x0, steps, time=lambda k, n: (k + 1) / n),
            "the velocity is taken at the end of each step, t_(k+1); explicit Euler uses the start, t_k = k / steps "
            "(from t = 0)."),
    Mistake(lambda v, x0, steps: _euler(v, x0, steps, n_steps=steps - 1),
            "take exactly `steps` steps of size 1 / steps, from t = 0 to t = 1."),
    Mistake(lambda v, x0, steps: _euler(v, x0, steps, dt=1.0),
            "each step moves by the whole velocity; multiply it by the step size 1 / steps."),
    Symptom(_starts_elsewhere,
            "the outputs are end points of other starting points than `x0` (fresh noise or reordered rows); reflow "
            "pairs each x0 with the end of its own path, Z_0 = x0, else the pairs are independent again.",
            example=_fresh_noise_targets),
])


def check_reflow_targets(student_fn) -> None:
    """Euler-integrate the learned flow from noise: the new partner x1 of each x0."""
    REFLOW_TARGETS.check(student_fn)


# 3. the straightness estimate ------------------------------------------------------------
def _profile(trajectory, velocity, chord=None):
    """||(Z1 − Z0) − v_t||² for every time and sample: (T, B)."""
    chord = trajectory[-1] - trajectory[0] if chord is None else chord
    return (chord - velocity).flatten(2).pow(2).sum(-1)


def reference_straightness_estimate(trajectory, velocity, t) -> torch.Tensor:
    """S = trapezoid_t( mean_b ||(Z1 − Z0) − v_t||² ) for (T, B, D) paths and velocities."""
    return torch.trapezoid(_profile(trajectory, velocity).mean(1), t)


def _straightness_inputs(gen):
    n_t, b = randint(5, 20, gen), randint(4, 30, gen)
    t = torch.linspace(0, 1, n_t, dtype=torch.float64)
    trajectory = torch.randn(n_t, b, 2, generator=gen, dtype=torch.float64).cumsum(0) / n_t
    velocity = torch.randn(n_t, b, 2, generator=gen, dtype=torch.float64)
    return (trajectory, velocity, t)


STRAIGHTNESS_ESTIMATE = Exercise(
    "straightness_estimate", reference_straightness_estimate, _straightness_inputs, atol=1e-8, rtol=1e-6, mistakes=[
        Mistake(lambda tr, v, t: (_profile(tr, v).mean(1)[:-1] * t.diff()).sum(),
                "integrate with the trapezoid rule (torch.trapezoid), not a left Riemann sum."),
        Mistake(lambda tr, v, t: _profile(tr, v).mean(),
                "it averages the profile over the time points; integrate it over t with the trapezoid rule, "
                "torch.trapezoid(profile, t)."),
        Mistake(lambda tr, v, t: torch.trapezoid(_profile(tr, v).sum(1), t),
                "average over the batch (the expectation E), do not sum."),
        Mistake(lambda tr, v, t: torch.trapezoid(_profile(tr, v).sqrt().mean(1), t),
                "use the squared norm ||·||², not the norm."),
        Mistake(lambda tr, v, t: torch.trapezoid(_profile(tr, v, chord=tr[1] - tr[0]).mean(1), t),
                "the chord is the whole displacement Z1 − Z0 = trajectory[-1] − trajectory[0], not the first step."),
    ])


def check_straightness_estimate(student_fn) -> None:
    """S = ∫₀¹ E||(Z1 − Z0) − v(Z_t, t)||² dt by the trapezoid rule on the trajectory's grid."""
    STRAIGHTNESS_ESTIMATE.check(student_fn)
