"""One sampler for every model of the course, on `(B, *D)` states, and torchdiffeq for the ODE lessons.

The sampler (k-diffusion's and flow_matching's shape):

    sample(model, x, t_grid, method=..., generator=..., return_trajectory=..., **cond) -> Solution

walks an explicit time grid t_0, t_1, ..., t_K (increasing or decreasing) and at each
interval applies one *step* `step(f, x, t_k, t_{k+1}, generator=..., last=...)`, where
`f(x, t) = model(x, t, **cond)` with `t: (B,)`. A step is a named ODE method ("euler",
"heun", "midpoint", "rk4": `model` is a velocity dx/dt) or any callable with that signature:
Euler–Maruyama (`EulerMaruyama`, `model` is the drift), DDPM and DDIM steps
(`diffusion.GaussianDiffusion.step`, `model` predicts ε), annealed Langevin
(`langevin.AnnealedLangevin`, `model` is the score, the grid holds noise levels). The result
is one `Solution(x, t, trajectory, nfe)`. Grids: `uniform_grid`, `shifted_grid` (SD3),
`edm_grid` (Karras et al.'s ρ-spacing), `logit_grid`; each runs from the noise end
`t_start` to the data end `t_end`, so one helper serves flow time (0 → 1) and diffusion
time (1 → 0). The grid is checked once per call; nothing inside the loop waits on the device.

- `odeint(f, x0, ...)`: torchdiffeq's solvers (euler, midpoint, rk4 on a fixed grid;
  dopri5 adaptive; the adjoint method) for `f(t, x)`, torchdiffeq's argument order, as the
  Neural ODE lessons use it. `model_field(model, **cond)` turns a network into such an `f`.
- `euler_maruyama(drift, diffusion, x0, ...)`: x_{n+1} = x_n + f(x_n, t_n) Δt + g(t_n) √|Δt| z_n,
  the sampler with an `EulerMaruyama` step on a uniform grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchdiffeq

from .tensors import append_dims, batch_time, randn_like

FIXED_METHODS = ("euler", "midpoint", "rk4")
ADAPTIVE_METHODS = ("dopri5", "bosh3", "adaptive_heun", "dopri8")


@dataclass
class Solution:
    """What every sampler returns."""

    x: torch.Tensor  # final state (B, *D)
    t: torch.Tensor  # the times of the trajectory (K + 1,): the grid, or the two end points
    trajectory: torch.Tensor | None  # (K + 1, B, *D), or None
    nfe: int  # evaluations of the model


class _Counted(torch.nn.Module):
    """Wraps f(t, x) and counts its calls (a Module so the adjoint method accepts it)."""

    def __init__(self, f):
        super().__init__()
        self.f = f
        self.nfe = 0

    def forward(self, t, x):
        self.nfe += 1
        dx = self.f(t, x)
        if not isinstance(dx, torch.Tensor) or dx.shape != x.shape:
            raise ValueError(
                f"The vector field f(t, x) must return a tensor shaped like x {tuple(x.shape)}, "
                f"got {tuple(dx.shape) if isinstance(dx, torch.Tensor) else type(dx).__name__}."
            )
        return dx


def _equal_grid(steps: int):
    """torchdiffeq grid constructor: `steps` equal steps between the first and last output time."""

    def grid(func, y0, t):
        return torch.linspace(t[0].item(), t[-1].item(), steps + 1, dtype=t.dtype, device=t.device)

    return grid


def model_field(model, **cond):
    """`f(t, x) = model(x, t·1_B, **cond)`: a network with batch time as an ODE right-hand side."""

    def f(t, x):
        return model(x, batch_time(t, x), **cond)

    return f


def odeint(
    f,
    x0: torch.Tensor,
    t_span: tuple[float, float] | None = None,
    *,
    method: str = "rk4",
    steps: int = 32,
    t_eval: torch.Tensor | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    return_trajectory: bool = False,
    adjoint: bool = False,
    adjoint_params=None,
) -> Solution:
    """Integrate dx/dt = f(t, x) from `t_span[0]` to `t_span[1]` (either direction).

    `t_span` defaults to (0, 1), or to the first and last times of `t_eval` when that is given.

    Fixed-grid methods take `steps` equal steps (NFE = steps × stages); adaptive methods
    choose their own steps to meet `rtol`/`atol`. The trajectory is recorded on the
    fixed grid, or on `t_eval` (adaptive), or at the two end points (then `t` holds just
    those two, and the fixed grid is still used internally).
    `adjoint=True` uses `torchdiffeq.odeint_adjoint` (memory O(1) in the steps); give
    `adjoint_params` when `f` is not an `nn.Module` holding the parameters.
    """
    if method not in FIXED_METHODS + ADAPTIVE_METHODS:
        raise ValueError(
            f"Unknown ODE method {method!r}: use one of {', '.join(FIXED_METHODS + ADAPTIVE_METHODS)}."
        )
    if not isinstance(x0, torch.Tensor) or x0.ndim < 2:
        raise ValueError(f"x0 must be a (B, *D) tensor, got {getattr(x0, 'shape', type(x0))}.")
    if t_eval is not None:
        t_eval = torch.as_tensor(t_eval)
        if t_eval.ndim != 1 or t_eval.numel() < 2:
            raise ValueError(f"t_eval must be a 1-D tensor of at least two times, got shape {tuple(t_eval.shape)}.")
        gaps = t_eval.diff()
        if not ((gaps > 0).all() or (gaps < 0).all()):
            raise ValueError("t_eval must be strictly increasing or strictly decreasing.")
        ends = (float(t_eval[0]), float(t_eval[-1]))
        if t_span is not None and any(abs(float(a) - b) > 1e-9 * max(1.0, abs(b)) for a, b in zip(t_span, ends)):
            raise ValueError(f"t_eval runs from {ends[0]} to {ends[1]} but t_span is {tuple(t_span)}: "
                             "give one of them, or make them agree.")
        t_span = ends
    t0, t1 = (0.0, 1.0) if t_span is None else (float(t_span[0]), float(t_span[1]))
    kw = dict(device=x0.device, dtype=x0.dtype)
    if method in FIXED_METHODS and steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    options = {}
    if t_eval is not None:
        t = torch.as_tensor(t_eval, **kw)
        if method in FIXED_METHODS:
            options["step_size"] = abs(t1 - t0) / steps
    elif method in FIXED_METHODS and return_trajectory:
        t = torch.linspace(t0, t1, steps + 1, **kw)
    else:
        # Only the end points are output: torchdiffeq's adjoint then saves two states, not
        # one per step. Fixed-grid methods still step on the equal grid.
        t = torch.tensor([t0, t1], **kw)
        if method in FIXED_METHODS:
            options["grid_constructor"] = _equal_grid(steps)
    counted = _Counted(f)
    if adjoint:
        params = tuple(adjoint_params) if adjoint_params is not None else tuple(counted.parameters())
        traj = torchdiffeq.odeint_adjoint(counted, x0, t, method=method, rtol=rtol, atol=atol,
                                          options=options or None, adjoint_params=params)
    else:
        traj = torchdiffeq.odeint(counted, x0, t, method=method, rtol=rtol, atol=atol,
                                  options=options or None)
    return Solution(traj[-1], t, traj if return_trajectory else None, counted.nfe)


# --- time grids -------------------------------------------------------------------------------


def _grid_from_fractions(u: torch.Tensor, t_start: float, t_end: float) -> torch.Tensor:
    """t = t_start + u (t_end − t_start) for fractions u in [0, 1] of the way from noise to data."""
    return t_start + u * (t_end - t_start)  # float64; the sampler casts to the state's dtype


def _check_steps(steps) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}.")


def uniform_grid(steps: int, t_start: float = 0.0, t_end: float = 1.0) -> torch.Tensor:
    """`steps + 1` equally spaced times from `t_start` (noise) to `t_end` (data): (steps + 1,)."""
    _check_steps(steps)
    return _grid_from_fractions(torch.linspace(0, 1, steps + 1, dtype=torch.float64), t_start, t_end)


def shifted_grid(steps: int, shift: float = 3.0, t_start: float = 0.0, t_end: float = 1.0) -> torch.Tensor:
    """SD3's time shift (Esser et al. 2024, §5.3.2): the noise left, n = 1 − u on a uniform u, becomes
    n' = shift·n / (1 + (shift − 1) n). shift > 1 spends more steps near the noise end."""
    _check_steps(steps)
    if shift <= 0:
        raise ValueError(f"The time shift must be positive, got {shift}.")
    n = 1 - torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    n = shift * n / (1 + (shift - 1) * n)
    return _grid_from_fractions(1 - n, t_start, t_end)


def logit_grid(steps: int, m: float = 0.0, s: float = 1.0, t_start: float = 0.0, t_end: float = 1.0) -> torch.Tensor:
    """Times at the quantiles k/steps of the logit-normal π_ln(·; m, s) (SD3's training density), so
    that each step covers equal probability of it: dense where π_ln is, sparse near the ends."""
    _check_steps(steps)
    if s <= 0:
        raise ValueError(f"The logit-normal scale s must be positive, got {s}.")
    q = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    u = torch.sigmoid(m + s * math.sqrt(2) * torch.erfinv(2 * q - 1))  # ±inf at the ends → exactly 0 and 1
    return _grid_from_fractions(u, t_start, t_end)


def edm_grid(steps: int, schedule, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022, eq. 5): noise-to-signal ratios σ_i = (σ_max^{1/ρ} + i/(N−1) (σ_min^{1/ρ} −
    σ_max^{1/ρ}))^ρ, i = 0..N−1 (N = `steps`), turned into times of `schedule` (`schedule.time_at_ratio`),
    then the data end of the schedule: (steps + 1,)."""
    _check_steps(steps)
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"Need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}.")
    i = torch.arange(steps, dtype=torch.float64) / max(steps - 1, 1)
    ratios = (sigma_max ** (1 / rho) + i * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    times = schedule.time_at_ratio(ratios)
    data_end = 1.0 if schedule.direction == "noise_to_data" else 0.0
    return torch.cat([times, times.new_full((1,), data_end)])


def check_grid(t, x: torch.Tensor) -> torch.Tensor:
    """The grid as a 1-D tensor on x's device and dtype, checked once: ≥ 2 times, strictly monotone."""
    t = torch.as_tensor(t, dtype=torch.float64)
    if t.ndim != 1 or t.numel() < 2:
        raise ValueError(f"The time grid must be a 1-D tensor of at least two times, got shape {tuple(t.shape)}.")
    gaps = t.diff()
    if not ((gaps > 0).all() or (gaps < 0).all()):
        raise ValueError("The time grid must be strictly increasing or strictly decreasing.")
    return t.to(device=x.device, dtype=x.dtype)


# --- steps ------------------------------------------------------------------------------------
# A step maps x at time t to time s: `step(f, x, t, s, *, generator, last)`, t and s 0-d tensors.


def euler(f, x, t, s, **_):
    """x + h f(x, t), h = s − t (first order)."""
    return x + (s - t) * f(x, t)


def heun(f, x, t, s, **_):
    """Heun's method (Karras et al. 2022, Alg. 1): the Euler guess, then the mean of the two slopes."""
    h = s - t
    d = f(x, t)
    x_euler = x + h * d
    return x + h * 0.5 * (d + f(x_euler, s))


def midpoint(f, x, t, s, **_):
    """x + h f(x + h/2 f(x, t), t + h/2) (second order)."""
    h = s - t
    return x + h * f(x + 0.5 * h * f(x, t), t + 0.5 * h)


def rk4(f, x, t, s, **_):
    """The classical Runge–Kutta step (fourth order)."""
    h = s - t
    k1 = f(x, t)
    k2 = f(x + 0.5 * h * k1, t + 0.5 * h)
    k3 = f(x + 0.5 * h * k2, t + 0.5 * h)
    k4 = f(x + h * k3, s)
    return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


ODE_STEPS = {"euler": euler, "heun": heun, "midpoint": midpoint, "rk4": rk4}


class EulerMaruyama:
    """x_s = x_t + f(x_t, t) h + g(t) √|h| z, h = s − t: `model` is the drift f; `diffusion(t: (B,))` is g.

    With t decreasing the step runs a reverse-time SDE whose drift is already f − g²∇log p.
    `noise_last_step=False` leaves out the noise of the final step (the output is its mean).
    """

    def __init__(self, diffusion, noise_last_step: bool = True):
        self.diffusion, self.noise_last_step = diffusion, noise_last_step

    def __call__(self, f, x, t, s, *, generator=None, last=False):
        h = s - t
        tb = t.expand(x.shape[0])
        g = torch.as_tensor(self.diffusion(tb), device=x.device, dtype=x.dtype)
        g = append_dims(g.expand(x.shape[0]) if g.ndim == 0 else g, x.ndim)
        x = x + f(x, t) * h
        if self.noise_last_step or not last:
            x = x + g * h.abs().sqrt() * randn_like(x, generator)
        return x


# --- the sampler ------------------------------------------------------------------------------


class _Model:
    """f(x, t) = model(x, t·1_B, **cond), counting calls (a Python counter: no device sync)."""

    def __init__(self, model, cond):
        self.model, self.cond, self.nfe = model, cond, 0

    def __call__(self, x, t):
        self.nfe += 1
        out = self.model(x, t.expand(x.shape[0]) if t.ndim == 0 else t, **self.cond)
        if out.shape != x.shape:
            raise ValueError(f"The model must return a tensor shaped like x {tuple(x.shape)}, got {tuple(out.shape)}.")
        return out


@torch.no_grad()
def sample(model, x: torch.Tensor, t, *, method="euler", generator: torch.Generator | None = None,
           return_trajectory: bool = False, **cond) -> Solution:
    """Walk the grid `t: (K + 1,)` from x (at t[0]) with `method`, calling `model(x, t: (B,), **cond)`.

    `method` is a name in `ODE_STEPS` or a step callable (see the module docstring). Runs without
    gradients. Returns the final state, the grid, the trajectory (K + 1, B, *D) if asked, and the NFE.
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError(f"x must be a (B, *D) tensor, got {getattr(x, 'shape', type(x))}.")
    if isinstance(method, str):
        if method not in ODE_STEPS:
            raise ValueError(f"Unknown method {method!r}: use one of {', '.join(ODE_STEPS)} or a step callable.")
        method = ODE_STEPS[method]
    grid = check_grid(t, x)
    f = _Model(model, cond)
    path = [x] if return_trajectory else None
    K = grid.numel() - 1
    for k in range(K):
        x = method(f, x, grid[k], grid[k + 1], generator=generator, last=k == K - 1)
        if return_trajectory:
            path.append(x)
    return Solution(x, grid, torch.stack(path) if return_trajectory else None, f.nfe)


def euler_maruyama(
    drift,
    diffusion,
    x0: torch.Tensor,
    t_span: tuple[float, float] = (0.0, 1.0),
    *,
    steps: int = 100,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
    noise_last_step: bool = True,
) -> Solution:
    """Simulate dx = drift(x, t) dt + diffusion(t) dW with `steps` Euler–Maruyama steps over `t_span`.

    `drift(x, t)` gets `t: (B,)`; `diffusion(t)` returns g(t) as a `(B,)` tensor or a float.
    With t0 > t1 time runs backward (Δt < 0), as for a reverse-time SDE. The sampler with an
    `EulerMaruyama` step on `uniform_grid(steps, *t_span)`.
    """
    return sample(drift, x0, uniform_grid(steps, *t_span), method=EulerMaruyama(diffusion, noise_last_step),
                  generator=generator, return_trajectory=return_trajectory)
