"""One abstraction for DDPM, score SDEs and flow matching: the affine path

    z_t = alpha_t · x + sigma_t · eps,     x ~ data, eps ~ N(0, I).

A schedule gives `alpha_t, sigma_t` and their time derivatives; the conversions between
what a network may predict (ε, x, the velocity u = dz/dt, the score ∇log p_t) live here,
once, and hold for every schedule.

Time conventions (CONCEPTS.md): flow schedules (`LinearSchedule`) run from noise at t=0
to data at t=1; diffusion schedules (`VPSchedule`, `VESchedule`, `CosineSchedule`) from
data at t=0 to noise at t=1. `Reversed(s)` re-reads a schedule with t ↦ 1 − t.

Notation: x = data (x1 in flow papers, x0 in DDPM), eps = noise, z = z_t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .nn import append_dims


@dataclass
class ScheduleOutput:
    alpha_t: torch.Tensor
    sigma_t: torch.Tensor
    d_alpha_t: torch.Tensor
    d_sigma_t: torch.Tensor


class AffineSchedule:
    """Base class: subclasses implement `__call__(t) -> ScheduleOutput` for `t: (B,)`."""

    direction = "noise_to_data"  # or "data_to_noise"

    def __call__(self, t: torch.Tensor) -> ScheduleOutput:
        raise NotImplementedError

    def _coeffs(self, t, z):
        s = self(t)
        return [append_dims(v.to(z.dtype), z.ndim) for v in (s.alpha_t, s.sigma_t, s.d_alpha_t, s.d_sigma_t)]

    def sample(self, x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """z_t = alpha_t x + sigma_t eps."""
        a, s, _, _ = self._coeffs(t, x)
        return a * x + s * eps

    def velocity(self, x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The conditional velocity dz_t/dt = alpha'_t x + sigma'_t eps."""
        _, _, da, ds = self._coeffs(t, x)
        return da * x + ds * eps

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """λ_t = log(alpha_t² / sigma_t²)."""
        s = self(t)
        return 2 * (torch.log(s.alpha_t) - torch.log(s.sigma_t))

    # conversions between predictions, given z = z_t ------------------------------------
    def eps_to_x(self, eps, z, t):
        a, s, _, _ = self._coeffs(t, z)
        return (z - s * eps) / a

    def x_to_eps(self, x, z, t):
        a, s, _, _ = self._coeffs(t, z)
        return (z - a * x) / s

    def eps_to_score(self, eps, z, t):
        """∇log p_t(z) = −E[eps | z] / sigma_t (Tweedie)."""
        _, s, _, _ = self._coeffs(t, z)
        return -eps / s

    def score_to_eps(self, score, z, t):
        _, s, _, _ = self._coeffs(t, z)
        return -s * score

    def eps_to_velocity(self, eps, z, t):
        """u = alpha'_t x̂ + sigma'_t eps with x̂ = (z − sigma_t eps) / alpha_t."""
        a, s, da, ds = self._coeffs(t, z)
        return da * (z - s * eps) / a + ds * eps

    def velocity_to_eps(self, u, z, t):
        a, s, da, ds = self._coeffs(t, z)
        return (u - da / a * z) / (ds - da * s / a)

    def x_to_velocity(self, x, z, t):
        return self.eps_to_velocity(self.x_to_eps(x, z, t), z, t)

    def velocity_to_x(self, u, z, t):
        return self.eps_to_x(self.velocity_to_eps(u, z, t), z, t)


class LinearSchedule(AffineSchedule):
    """Rectified flow / conditional OT path (flow time): alpha_t = t, sigma_t = 1 − (1 − σ_min) t."""

    direction = "noise_to_data"

    def __init__(self, sigma_min: float = 0.0):
        self.sigma_min = sigma_min

    def __call__(self, t):
        one = torch.ones_like(t)
        return ScheduleOutput(t, 1 - (1 - self.sigma_min) * t, one, -(1 - self.sigma_min) * one)


class VPSchedule(AffineSchedule):
    """Variance-preserving SDE with linear β(t) = β_min + t(β_max − β_min), t in [0, 1] (data → noise).

    alpha_t = exp(−½ ∫₀ᵗ β), sigma_t = √(1 − alpha_t²) (Song et al. 2021, eq. 29).
    """

    direction = "data_to_noise"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min, self.beta_max = beta_min, beta_max

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def __call__(self, t):
        integral = self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2
        alpha = torch.exp(-0.5 * integral)
        sigma = torch.sqrt(-torch.expm1(-integral))
        d_alpha = -0.5 * self.beta(t) * alpha
        d_sigma = -alpha * d_alpha / sigma
        return ScheduleOutput(alpha, sigma, d_alpha, d_sigma)


class VESchedule(AffineSchedule):
    """Variance-exploding path: alpha_t = 1, sigma_t = σ_min (σ_max/σ_min)^t (data → noise)."""

    direction = "data_to_noise"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 10.0):
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def __call__(self, t):
        sigma = self.sigma_min * (self.sigma_max / self.sigma_min) ** t
        one = torch.ones_like(t)
        return ScheduleOutput(one, sigma, torch.zeros_like(t), sigma * math.log(self.sigma_max / self.sigma_min))


class CosineSchedule(AffineSchedule):
    """Cosine schedule (Nichol & Dhariwal 2021), continuous: alpha_t = cos(π/2 · (t+s)/(1+s)) / cos(π/2 · s/(1+s))."""

    direction = "data_to_noise"

    def __init__(self, s: float = 0.008, t_max: float = 0.999):
        self.s, self.t_max = s, t_max

    def __call__(self, t):
        t = t.clamp(max=self.t_max)
        c = math.pi / 2 / (1 + self.s)
        norm = math.cos(c * self.s)
        alpha = torch.cos(c * (t + self.s)) / norm
        d_alpha = -c * torch.sin(c * (t + self.s)) / norm
        sigma = torch.sqrt((1 - alpha**2).clamp_min(1e-12))
        return ScheduleOutput(alpha, sigma, d_alpha, -alpha * d_alpha / sigma)


class Reversed(AffineSchedule):
    """The schedule `base` read with time t ↦ 1 − t (derivatives change sign)."""

    def __init__(self, base: AffineSchedule):
        self.base = base
        self.direction = "data_to_noise" if base.direction == "noise_to_data" else "noise_to_data"

    def __call__(self, t):
        s = self.base(1 - t)
        return ScheduleOutput(s.alpha_t, s.sigma_t, -s.d_alpha_t, -s.d_sigma_t)
