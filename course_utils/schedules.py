"""One affine path for DDPM, score SDEs and flow matching:

    z_t = alpha_t · data + sigma_t · noise,     data ~ p_data, noise ~ N(0, I).

A schedule gives `alpha_t, sigma_t` and their time derivatives (`ScheduleOutput`). Every
method names its arguments the same way, noise first, then data, then time:

    schedule.sample(noise, data, t)      z_t
    schedule.velocity(noise, data, t)    u_t = dz_t/dt = alpha'_t data + sigma'_t noise

and the conversions between what a network may predict (ε = noise, x̂ = data, the velocity
u, the score ∇log p_t) take the prediction, then z_t, then t: `eps_to_x(eps, z, t)`,
`x_to_eps(x, z, t)`, `eps_to_score`, `score_to_eps`, `eps_to_velocity`, `velocity_to_eps`,
`x_to_velocity`, `velocity_to_x`, `score_to_velocity`, `velocity_to_score`. They live here
once and hold for every schedule; the tests round-trip them in float64.

Time conventions (the course's conventions table): flow schedules (`LinearSchedule`) run from
noise at t = 0 to data at t = 1; diffusion schedules (`VPSchedule`, `VESchedule`,
`CosineSchedule`, `OUSchedule`, and DDPM's `DiscreteSchedule` on τ = t/T) from data at t = 0
to noise at t = 1. `Reversed(s)` reads a schedule with t ↦ 1 − t. `t` is `(B,)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .tensors import append_dims


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

    def coefficients(self, t, z: torch.Tensor):
        """alpha_t, sigma_t, alpha'_t, sigma'_t in z's dtype, shaped to broadcast against `z: (B, *D)`."""
        s = self(torch.as_tensor(t, device=z.device))
        return [append_dims(v.to(z.dtype), z.ndim) for v in (s.alpha_t, s.sigma_t, s.d_alpha_t, s.d_sigma_t)]

    def sample(self, noise: torch.Tensor, data: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """z_t = alpha_t data + sigma_t noise."""
        a, s, _, _ = self.coefficients(t, data)
        return a * data + s * noise

    def velocity(self, noise: torch.Tensor, data: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The conditional velocity dz_t/dt = alpha'_t data + sigma'_t noise."""
        _, _, da, ds = self.coefficients(t, data)
        return da * data + ds * noise

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """λ_t = log(alpha_t² / sigma_t²)."""
        s = self(torch.as_tensor(t))
        return 2 * (torch.log(s.alpha_t) - torch.log(s.sigma_t))

    def time_at_ratio(self, ratio: torch.Tensor, iters: int = 60) -> torch.Tensor:
        """The time t at which sigma_t / alpha_t = `ratio` (Karras et al.'s σ), by bisection in float64."""
        ratio = torch.as_tensor(ratio, dtype=torch.float64)
        if (ratio <= 0).any():
            raise ValueError("Noise-to-signal ratios must be positive.")
        lo, hi = torch.zeros_like(ratio), torch.ones_like(ratio)
        noisier_later = self.direction == "data_to_noise"
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            s = self(mid)
            too_noisy = s.sigma_t / s.alpha_t > ratio
            go_left = too_noisy if noisier_later else ~too_noisy
            hi, lo = torch.where(go_left, mid, hi), torch.where(go_left, lo, mid)
        return 0.5 * (lo + hi)

    # conversions between predictions, given z = z_t ------------------------------------
    def eps_to_x(self, eps, z, t):
        """x̂ = (z − sigma_t ε̂) / alpha_t."""
        a, s, _, _ = self.coefficients(t, z)
        return (z - s * eps) / a

    def x_to_eps(self, x, z, t):
        """ε̂ = (z − alpha_t x̂) / sigma_t."""
        a, s, _, _ = self.coefficients(t, z)
        return (z - a * x) / s

    def eps_to_score(self, eps, z, t):
        """∇log p_t(z) = −E[ε | z] / sigma_t (Tweedie)."""
        _, s, _, _ = self.coefficients(t, z)
        return -eps / s

    def score_to_eps(self, score, z, t):
        _, s, _, _ = self.coefficients(t, z)
        return -s * score

    def eps_to_velocity(self, eps, z, t):
        """u = alpha'_t x̂ + sigma'_t ε̂ with x̂ = (z − sigma_t ε̂) / alpha_t."""
        a, s, da, ds = self.coefficients(t, z)
        return da * (z - s * eps) / a + ds * eps

    def velocity_to_eps(self, u, z, t):
        a, s, da, ds = self.coefficients(t, z)
        return (u - da / a * z) / (ds - da * s / a)

    def x_to_velocity(self, x, z, t):
        return self.eps_to_velocity(self.x_to_eps(x, z, t), z, t)

    def velocity_to_x(self, u, z, t):
        return self.eps_to_x(self.velocity_to_eps(u, z, t), z, t)

    def score_to_velocity(self, score, z, t):
        return self.eps_to_velocity(self.score_to_eps(score, z, t), z, t)

    def velocity_to_score(self, u, z, t):
        return self.eps_to_score(self.velocity_to_eps(u, z, t), z, t)


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
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"Need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}.")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def __call__(self, t):
        sigma = self.sigma_min * (self.sigma_max / self.sigma_min) ** t
        one = torch.ones_like(t)
        return ScheduleOutput(one, sigma, torch.zeros_like(t), sigma * math.log(self.sigma_max / self.sigma_min))

    def time(self, sigma) -> torch.Tensor:
        """The inverse of sigma_t: t(σ) = log(σ/σ_min) / log(σ_max/σ_min) (an NCSN's level as VE time)."""
        sigma = torch.as_tensor(sigma)
        return torch.log(sigma / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)

    def time_at_ratio(self, ratio, iters: int = 0):
        return self.time(torch.as_tensor(ratio, dtype=torch.float64))


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


class OUSchedule(AffineSchedule):
    """The Ornstein–Uhlenbeck path: alpha_t = e^{−θt}, sigma_t² = σ²/(2θ) (1 − e^{−2θt}) (data → noise)."""

    direction = "data_to_noise"

    def __init__(self, theta: float = 1.0, sigma: float = 1.0):
        self.theta, self.sigma = theta, sigma

    def __call__(self, t):
        alpha = torch.exp(-self.theta * t)
        var = self.sigma**2 / (2 * self.theta) * -torch.expm1(-2 * self.theta * t)
        sigma_t = torch.sqrt(var)
        d_var = self.sigma**2 * alpha**2
        return ScheduleOutput(alpha, sigma_t, -self.theta * alpha, d_var / (2 * sigma_t))


class Reversed(AffineSchedule):
    """The schedule `base` read with time t ↦ 1 − t (derivatives change sign)."""

    def __init__(self, base: AffineSchedule):
        self.base = base
        self.direction = "data_to_noise" if base.direction == "noise_to_data" else "noise_to_data"

    def __call__(self, t):
        s = self.base(1 - t)
        return ScheduleOutput(s.alpha_t, s.sigma_t, -s.d_alpha_t, -s.d_sigma_t)


# --- DDPM's discrete table, as a schedule on τ = t/T ------------------------------------------


def _check_T(T):
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"The number of diffusion steps T must be a positive integer, got {T!r}.")


def linear_betas(T: int, beta_min: float = 0.1, beta_max: float = 20.0) -> torch.Tensor:
    """β_t linear from β_min/T to β_max/T (float64, shape (T,)).

    For T = 1000 this is Ho et al.'s 1e-4 … 0.02; dividing by T makes every T discretise the
    same VP SDE, β(τ) = β_min + τ(β_max − β_min) on τ = t/T (`VPSchedule`).
    """
    _check_T(T)
    if beta_max >= T:
        raise ValueError(f"A linear schedule needs T > beta_max = {beta_max} steps (else β_T ≥ 1), got T = {T}.")
    return torch.linspace(beta_min / T, beta_max / T, T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal (2021, eq. 17): ᾱ_t = f(t)/f(0), f(t) = cos²(π/2 · (t/T + s)/(1 + s));
    β_t = min(1 − ᾱ_t/ᾱ_{t−1}, max_beta). Float64, shape (T,)."""
    _check_T(T)
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


class DiscreteSchedule(AffineSchedule):
    """DDPM's β table (Ho et al. 2020) as an affine schedule: alpha = √ᾱ, sigma = √(1 − ᾱ).

    Tables are indexed by the step t = 0..T (t = 0 is the data: β_0 = 0, ᾱ_0 = 1). As a
    schedule it is read on τ = t/T in [0, 1], the time every network of the course sees:
    `schedule(tau)` interpolates log ᾱ linearly between steps, so it is exact at τ = k/T and
    its derivatives are those of the interpolant. Integer tensors are read as steps, so
    `schedule.eps_to_x(eps, x_t, t)` works with the chain's own integer t too.
    """

    direction = "data_to_noise"

    def __init__(self, betas):
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() < 1 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError("Every β_t must lie strictly between 0 and 1 (and there must be at least one).")
        self.T = betas.numel()
        self.betas = torch.cat([betas.new_zeros(1), betas])
        self.alphas = 1 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        self._log_abar = torch.log(self.alphas_cumprod)
        self._cache = {}

    def table(self, name: str, device, dtype=torch.float64) -> torch.Tensor:
        """The table `name` ("betas", "alphas", "alphas_cumprod") on `device` in `dtype`, cast once and kept,
        so that a sampler's steps index it on the device without copying it from the host each step."""
        device = torch.device(device)
        if device.type == "mps" and dtype == torch.float64:  # Apple GPUs have no float64
            dtype = torch.float32
        key = (name, device, dtype)
        if key not in self._cache:
            source = self._log_abar if name == "_log_abar" else getattr(self, name)
            self._cache[key] = source.to(device=device, dtype=dtype)
        return self._cache[key]

    @classmethod
    def linear(cls, T: int, beta_min: float = 0.1, beta_max: float = 20.0) -> "DiscreteSchedule":
        return cls(linear_betas(T, beta_min, beta_max))

    @classmethod
    def cosine(cls, T: int, s: float = 0.008) -> "DiscreteSchedule":
        return cls(cosine_betas(T, s))

    def coefficients(self, t, z: torch.Tensor):
        """As `AffineSchedule.coefficients`; for integer steps straight from the table in z's dtype
        (alpha = √ᾱ_t, sigma = √(1 − ᾱ_t); derivatives belong to τ and are 0 here), so that a sampler's
        conversions cost a lookup and two square roots."""
        t = torch.as_tensor(t, device=z.device)
        if t.is_floating_point():
            return super().coefficients(t, z)
        abar = append_dims(self.table("alphas_cumprod", z.device, z.dtype)[t], z.ndim)
        zero = torch.zeros_like(abar)
        return [abar.sqrt(), (1 - abar).sqrt(), zero, zero]

    def tau(self, t) -> torch.Tensor:
        """τ = t/T for integer steps t (float32)."""
        return torch.as_tensor(t).float() / self.T

    def step_index(self, tau: torch.Tensor) -> torch.Tensor:
        """The nearest integer step round(τ T) (long), for τ on the grid k/T."""
        return (tau * self.T).round().long()

    def __call__(self, t):
        t = torch.as_tensor(t)
        table = self.table("_log_abar", t.device)
        if not t.is_floating_point():
            log_abar = table[t]
            d_log_abar = torch.zeros_like(log_abar)  # unused for steps: derivatives belong to τ
        else:
            pos = (t.to(table.dtype) * self.T).clamp(0, self.T)
            k = pos.floor().long().clamp(max=self.T - 1)
            slope = table[k + 1] - table[k]
            log_abar = table[k] + (pos - k) * slope
            d_log_abar = self.T * slope
        alpha = torch.exp(0.5 * log_abar)
        sigma = torch.sqrt(-torch.expm1(log_abar))
        dtype = t.dtype if t.is_floating_point() else torch.float64
        d_alpha = 0.5 * alpha * d_log_abar
        d_sigma = -alpha**2 * d_log_abar / (2 * sigma)
        return ScheduleOutput(*(v.to(dtype) for v in (alpha, sigma, d_alpha, d_sigma)))
