"""ODE and SDE integration for any vector field, on `(B, *D)` states.

- `odeint(f, x0, ...)`: torchdiffeq's solvers (euler, midpoint, rk4 on a fixed grid;
  dopri5 adaptive) for `f(t, x)` with scalar `t`; returns the final state, optionally the
  trajectory on the grid, and the number of function evaluations (NFE).
- `model_field(model, **cond)`: turns a network `model(x, t_batch, **cond)` into `f(t, x)`.
- `euler_maruyama(drift, diffusion, x0, ...)`: x_{n+1} = x_n + f(x_n, t_n) Δt + g(t_n) √|Δt| z_n,
  forward (t0 < t1) or backward (t0 > t1) in time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchdiffeq

from .nn import append_dims, batch_time

FIXED_METHODS = ("euler", "midpoint", "rk4")
ADAPTIVE_METHODS = ("dopri5", "bosh3", "adaptive_heun", "dopri8")


@dataclass
class ODESolution:
    x: torch.Tensor  # final state (B, *D)
    t: torch.Tensor  # times of the trajectory (T,)
    trajectory: torch.Tensor | None  # (T, B, *D) or None
    nfe: int  # number of evaluations of f


@dataclass
class SDESolution:
    x: torch.Tensor
    t: torch.Tensor
    trajectory: torch.Tensor | None


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
) -> ODESolution:
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
    return ODESolution(traj[-1], t, traj if return_trajectory else None, counted.nfe)


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like `x`, drawn from `generator` (on its own device), moved to x's device."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


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
) -> SDESolution:
    """Simulate dx = drift(x, t) dt + diffusion(t) dW with `steps` Euler–Maruyama steps.

    `drift(x, t)` gets `t: (B,)`; `diffusion(t)` returns g(t) as a `(B,)` tensor or a float.
    With t0 > t1 time runs backward (Δt < 0), as for a reverse-time SDE whose `drift` is
    already the reverse drift f − g²∇log p. `noise_last_step=False` leaves out the noise
    of the final step (common when sampling, so the output is the mean of the last step).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    if not isinstance(x0, torch.Tensor) or x0.ndim < 2:
        raise ValueError(f"x0 must be a (B, *D) tensor, got {getattr(x0, 'shape', type(x0))}.")
    t0, t1 = float(t_span[0]), float(t_span[1])
    times = torch.linspace(t0, t1, steps + 1, device=x0.device, dtype=x0.dtype)
    dt = (t1 - t0) / steps
    x = x0
    path = [x0] if return_trajectory else None
    for n in range(steps):
        t = times[n].expand(x.shape[0])
        g = torch.as_tensor(diffusion(t), device=x.device, dtype=x.dtype)
        g = append_dims(g.expand(x.shape[0]) if g.ndim == 0 else g, x.ndim)
        f = drift(x, t)
        if isinstance(f, torch.Tensor) and f.shape != x.shape:
            raise ValueError(f"drift(x, t) must return a tensor shaped like x {tuple(x.shape)}, got {tuple(f.shape)}.")
        x = x + f * dt
        if noise_last_step or n < steps - 1:
            z = randn_like(x, generator)
            x = x + g * abs(dt) ** 0.5 * z
        if return_trajectory:
            path.append(x)
    return SDESolution(x, times, torch.stack(path) if return_trajectory else None)
