"""Rectified flow and reflow (Liu, Gong & Liu 2022), with SD3's logit-normal time sampling.

Flow time (CONCEPTS.md): x0 ~ N(0, I) is noise, x1 is data, and the straight path is

    x_t = t x1 + (1 − t) x0,        u = dx_t/dt = x1 − x0        (`LinearSchedule()`).

- `rectified_flow_loss`: E_t E ||v(x_t, t) − (x1 − x0)||², t uniform or logit-normal.
- `reflow_pairs`: a new coupling (x0, Z1(x0)) by integrating a learned flow from noise.
- `straightness`: S = ∫₀¹ E ||(Z1 − Z0) − v(Z_t, t)||² dt along the flow's own paths
  (Liu et al. 2022, Def. 3.5); 0 exactly when every path is a straight line at constant speed.
- `distillation_loss` / `one_step`: fit x0 ↦ x0 + v(x0, 0) to a coupling's pairs.

Notation: Liu et al. write X0, X1 for the coupling and Z_t for the flow; SD3 (Esser et al.
2024) runs time the other way, z_t = (1 − t) x + t ε, so their t is our 1 − t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import solvers
from .tensors import batch_time
from .schedules import LinearSchedule
from .train import TrainConfig, TrainResult, fit

PATH = LinearSchedule()  # alpha_t = t (data), sigma_t = 1 − t (noise)
TIME_SAMPLINGS = ("uniform", "logit_normal")


# time sampling ---------------------------------------------------------------------------
def logit_normal_density(t: torch.Tensor, m: float = 0.0, s: float = 1.0) -> torch.Tensor:
    """π_ln(t; m, s) = 1 / (s √(2π)) · 1 / (t (1 − t)) · exp(−(logit t − m)² / (2 s²)) on (0, 1)."""
    if s <= 0:
        raise ValueError(f"The logit-normal scale s must be positive, got {s}.")
    logit = torch.log(t) - torch.log1p(-t)
    return torch.exp(-0.5 * ((logit - m) / s) ** 2) / (s * math.sqrt(2 * math.pi) * t * (1 - t))


def sample_time(
    n: int,
    sampling: str = "uniform",
    *,
    m: float = 0.0,
    s: float = 1.0,
    generator: torch.Generator | None = None,
    device=None,
    dtype=torch.float32,
) -> torch.Tensor:
    """`n` training times: U(0, 1), or logit-normal t = sigmoid(m + s z), z ~ N(0, 1)."""
    if sampling not in TIME_SAMPLINGS:
        raise ValueError(f"Unknown time sampling {sampling!r}: use one of {', '.join(TIME_SAMPLINGS)}.")
    gen_device = generator.device if generator is not None else device
    if sampling == "uniform":
        t = torch.rand(n, generator=generator, device=gen_device, dtype=dtype)
    else:
        if s <= 0:
            raise ValueError(f"The logit-normal scale s must be positive, got {s}.")
        t = torch.sigmoid(m + s * torch.randn(n, generator=generator, device=gen_device, dtype=dtype))
    return t.to(device) if device is not None else t


# the loss --------------------------------------------------------------------------------
def _check_pair(x0: torch.Tensor, x1: torch.Tensor) -> None:
    if x0.shape != x1.shape or x0.ndim < 2:
        raise ValueError(
            f"x0 (noise) and x1 (data) must be (B, *D) tensors of the same shape, "
            f"got {tuple(x0.shape)} and {tuple(x1.shape)}."
        )


def rectified_flow_loss(
    model,
    x0: torch.Tensor,
    x1: torch.Tensor,
    t: torch.Tensor | None = None,
    *,
    sampling: str = "uniform",
    m: float = 0.0,
    s: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """E ||v(x_t, t) − (x1 − x0)||² (summed over dims, mean over the batch).

    `x0, x1: (B, *D)` are coupled pairs (independent for 1-rectified flow); `t: (B,)` is
    drawn by `sample_time(sampling, m, s)` unless given.
    """
    _check_pair(x0, x1)
    if t is None:
        t = sample_time(x0.shape[0], sampling, m=m, s=s, generator=generator,
                        device=x0.device, dtype=x0.dtype)
    t = batch_time(t, x0)
    x_t = PATH.sample(x0, x1, t)
    u = PATH.velocity(x0, x1, t)  # = x1 − x0
    return (model(x_t, t) - u).flatten(1).pow(2).sum(1).mean()


def fit_rectified_flow(
    model,
    next_pair,
    config: TrainConfig | None = None,
    *,
    sampling: str = "uniform",
    m: float = 0.0,
    s: float = 1.0,
) -> TrainResult:
    """`train.fit` with the rectified-flow loss; `next_pair(step) -> (x0, x1)`."""
    if sampling not in TIME_SAMPLINGS:
        raise ValueError(f"Unknown time sampling {sampling!r}: use one of {', '.join(TIME_SAMPLINGS)}.")

    def loss_fn(net, pair):
        return rectified_flow_loss(net, *pair, sampling=sampling, m=m, s=s)

    return fit(model, loss_fn, next_pair, config)


# couplings and reflow --------------------------------------------------------------------
@dataclass
class Coupling:
    """Paired samples (x0[i], x1[i]): noise and the data point it is coupled to."""

    x0: torch.Tensor
    x1: torch.Tensor

    def __post_init__(self):
        _check_pair(self.x0, self.x1)

    def __len__(self) -> int:
        return self.x0.shape[0]

    def batch(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A minibatch of `n` pairs drawn with replacement (pairs stay together)."""
        idx = torch.randint(len(self), (n,), generator=generator).to(self.x0.device)
        return self.x0[idx], self.x1[idx]


@torch.no_grad()
def reflow_pairs(model, x0: torch.Tensor, *, steps: int = 32, method: str = "rk4") -> Coupling:
    """The coupling of the flow dZ/dt = v(Z_t, t): pairs (x0, Z1) with Z0 = x0 (Liu et al., Alg. 1)."""
    x1 = solvers.odeint(solvers.model_field(model), x0, (0.0, 1.0), method=method, steps=steps).x
    return Coupling(x0, x1)


@torch.no_grad()
def sample(model, x0: torch.Tensor, steps: int, method: str = "euler") -> torch.Tensor:
    """Integrate the flow from noise `x0` at t=0 to t=1 with `steps` steps (Euler by default)."""
    return solvers.odeint(solvers.model_field(model), x0, (0.0, 1.0), method=method, steps=steps).x


# straightness ----------------------------------------------------------------------------
@dataclass
class Straightness:
    value: float  # S = ∫ profile dt (trapezoid rule)
    t: torch.Tensor  # (T,) time grid
    profile: torch.Tensor  # (T,) E ||(Z1 − Z0) − v(Z_t, t)||² at each time
    trajectory: torch.Tensor  # (T, B, *D) the flow's paths Z_t


def straightness_integral(trajectory: torch.Tensor, velocity: torch.Tensor, t: torch.Tensor) -> Straightness:
    """S from paths `trajectory: (T, B, *D)`, their velocities `velocity: (T, B, *D)` and times `t: (T,)`.

    profile_k = mean_b ||(Z1 − Z0)_b − velocity_{k,b}||², S = trapezoid(profile, t).
    """
    if trajectory.shape != velocity.shape or trajectory.ndim < 3 or t.shape != trajectory.shape[:1]:
        raise ValueError(
            f"Expected trajectory and velocity of the same shape (T, B, *D) and t of shape (T,), got "
            f"{tuple(trajectory.shape)}, {tuple(velocity.shape)} and {tuple(t.shape)}."
        )
    chord = trajectory[-1] - trajectory[0]  # Z1 − Z0: (B, *D)
    profile = (chord[None] - velocity).flatten(2).pow(2).sum(2).mean(1)
    return Straightness(float(torch.trapezoid(profile, t)), t, profile, trajectory)


@torch.no_grad()
def straightness(model, x0: torch.Tensor, *, steps: int = 32, method: str = "rk4") -> Straightness:
    """S = ∫₀¹ E ||(Z1 − Z0) − v(Z_t, t)||² dt, along the flow of `model` started at `x0`."""
    sol = solvers.odeint(solvers.model_field(model), x0, (0.0, 1.0), method=method, steps=steps,
                         return_trajectory=True)
    traj = sol.trajectory
    v = model(traj.flatten(0, 1), sol.t.repeat_interleave(x0.shape[0])).reshape(traj.shape)
    return straightness_integral(traj, v, sol.t)


def straightness_from_trajectory(trajectory: torch.Tensor, t: torch.Tensor) -> Straightness:
    """S with the velocity taken from the paths themselves, Ż_t by finite differences.

    No model needed (e.g. for stored trajectories); second-order accurate inside the
    grid, first-order at its ends, so it agrees with `straightness` as the grid refines.
    """
    if trajectory.ndim < 3 or t.shape != trajectory.shape[:1] or t.shape[0] < 2:
        raise ValueError(
            f"Expected a trajectory (T, B, *D) with T >= 2 and times t of shape (T,), got "
            f"{tuple(trajectory.shape)} and {tuple(t.shape)}."
        )
    (velocity,) = torch.gradient(trajectory, spacing=(t,), dim=0)
    return straightness_integral(trajectory, velocity, t)


# distillation ----------------------------------------------------------------------------
def distillation_loss(model, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """E ||(x1 − x0) − v(x0, 0)||²: make one Euler step x0 + v(x0, 0) land on x1 (Liu et al. §2.3)."""
    _check_pair(x0, x1)
    return (model(x0, x0.new_zeros(x0.shape[0])) - (x1 - x0)).flatten(1).pow(2).sum(1).mean()


@torch.no_grad()
def one_step(model, x0: torch.Tensor) -> torch.Tensor:
    """One Euler step from t=0 to t=1: x0 + v(x0, 0)."""
    return x0 + model(x0, x0.new_zeros(x0.shape[0]))
