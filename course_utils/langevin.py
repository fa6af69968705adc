"""Langevin dynamics and noise-conditional score networks (notebook 06).

- `langevin_step` / `langevin_dynamics`: unadjusted Langevin (ULA) with step α,
  x ← x + (α/2) ∇log p(x) + √α z  (Song & Ermon 2019, eq. 4; ULA's η = α/2).
- `geometric_sigmas`: σ_1 > ... > σ_L with a constant ratio, the NCSN noise levels; the
  same numbers as the VE schedule σ(t) = σ_min (σ_max/σ_min)^t read at t = 1 ... 0.
- `annealed_langevin`: Algorithm 1 of Song & Ermon 2019, α_i = ε σ_i² / σ_L² (ε = `step_size`).
- `ve_reverse_diffusion`: the reverse VE SDE discretised on the same levels,
  x ← x + (σ_i² − σ_{i+1}²) s(x, σ_i) + √(σ_i² − σ_{i+1}²) z  (Song et al. 2021, eq. 47).
- `NoiseConditionalScore`: s_θ(x, σ) = net(x / √(σ_data² + σ²), t(σ)) / σ, t(σ) the VE time of σ, and
  `ncsn_loss`, DSM weighted by λ(σ) = σ²: ½ E ||σ s_θ(x + σ ε, σ) + ε||².
- `ConvScoreNet`: a small convolutional `net(x, t)` for MNIST.

A score model is called `score(x, sigma)` with `x: (B, *D)` and `sigma: (B,)`: the noise level
is an NCSN's clock (`t(σ)` converts it to VE-SDE time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .tensors import append_dims, batch_time
from .models.embeddings import SinusoidalTimeEmbedding
from .schedules import VESchedule
from .tensors import randn_like


@dataclass
class LangevinSolution:
    x: torch.Tensor  # final samples (B, *D)
    trajectory: torch.Tensor | None  # (steps + 1, B, *D) or None


def langevin_step(x: torch.Tensor, score: torch.Tensor, step_size: float, noise: torch.Tensor) -> torch.Tensor:
    """One ULA step: x + (α/2) s(x) + √α z, given s(x) = `score` and z = `noise` (shapes of x)."""
    return x + 0.5 * step_size * score + math.sqrt(step_size) * noise


def langevin_dynamics(score, x: torch.Tensor, *, step_size: float, n_steps: int,
                      generator: torch.Generator | None = None,
                      return_trajectory: bool = False) -> LangevinSolution:
    """Run `n_steps` ULA steps of step α = `step_size` from `x`, for a callable `score(x)`."""
    if step_size <= 0:
        raise ValueError(f"The Langevin step size must be positive, got {step_size}.")
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}.")
    path = [x] if return_trajectory else None
    for _ in range(n_steps):
        x = langevin_step(x, score(x), step_size, randn_like(x, generator))
        if return_trajectory:
            path.append(x)
    return LangevinSolution(x, torch.stack(path) if return_trajectory else None)


def geometric_sigmas(sigma_max: float, sigma_min: float, n_levels: int) -> torch.Tensor:
    """σ_i = σ_max (σ_min/σ_max)^{(i−1)/(L−1)}, i = 1..L: `(L,)`, from σ_max down to σ_min."""
    if n_levels < 2:
        raise ValueError(f"Annealing needs at least 2 noise levels, got {n_levels}.")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"Need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}.")
    frac = torch.linspace(0, 1, n_levels, dtype=torch.float64)
    return (sigma_max * (sigma_min / sigma_max) ** frac).float()


def ve_sigmas(schedule: VESchedule, n_levels: int) -> torch.Tensor:
    """The VE schedule's σ(t) at t = 1, ..., 0 (L equal steps): the NCSN levels as SDE times."""
    t = torch.linspace(1, 0, n_levels, dtype=torch.float64)
    return schedule(t).sigma_t.float()


def _levels(sigmas, x):
    sigmas = torch.as_tensor(sigmas, device=x.device, dtype=x.dtype)
    if sigmas.ndim != 1 or len(sigmas) < 1 or (sigmas <= 0).any():
        raise ValueError("sigmas must be a 1-D tensor of positive noise levels.")
    if len(sigmas) > 1 and (sigmas[1:] >= sigmas[:-1]).any():
        raise ValueError("sigmas must decrease (from the largest noise level to the smallest).")
    return sigmas


def annealed_langevin(score, x: torch.Tensor, sigmas, *, n_steps_each: int = 100, step_size: float = 0.1,
                      generator: torch.Generator | None = None, denoise: bool = False,
                      return_trajectory: bool = False) -> LangevinSolution:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) for `score(x, sigma: (B,))`.

    For each level σ_i (decreasing), `n_steps_each` Langevin steps of size α_i = ε σ_i²/σ_L²
    on p_{σ_i}, where ε = `step_size` is the step at the smallest level. What matters for
    stability is α_i/σ_i² = ε/σ_L² (ULA on N(0, σ²) diverges once α ≥ 4σ²), so ε must scale
    with σ_L²: about 0.1·σ_L². `denoise=True` ends with one Tweedie step x + σ_L² s(x, σ_L),
    which removes the last level's noise (Jolicoeur-Martineau et al. 2021; Song & Ermon 2020).
    """
    sigmas = _levels(sigmas, x)
    ratio = step_size / float(sigmas[-1]) ** 2
    if not 0 < ratio <= 2:
        raise ValueError(
            f"step_size/σ_L² = {ratio:.3g} must lie in (0, 2]: larger steps make Langevin diverge "
            f"(choose step_size ≈ 0.1·σ_L² = {0.1 * float(sigmas[-1]) ** 2:.3g})."
        )
    path = [x] if return_trajectory else None
    for sigma in sigmas:
        alpha = step_size * float(sigma / sigmas[-1]) ** 2
        sol = langevin_dynamics(lambda y: score(y, batch_time(sigma, y)), x, step_size=alpha,
                                n_steps=n_steps_each, generator=generator,
                                return_trajectory=return_trajectory)
        x = sol.x
        if return_trajectory:
            path.extend(sol.trajectory[1:])
    if denoise:
        x = x + sigmas[-1] ** 2 * score(x, batch_time(sigmas[-1], x))
        if return_trajectory:
            path.append(x)
    return LangevinSolution(x, torch.stack(path) if return_trajectory else None)


def ve_reverse_diffusion(score, x: torch.Tensor, sigmas, *, generator: torch.Generator | None = None,
                         denoise: bool = True, return_trajectory: bool = False) -> LangevinSolution:
    """Reverse VE SDE, Euler–Maruyama on the levels (Song et al. 2021, eq. 47; σ_{L+1} = 0).

    x_{i+1} = x_i + (σ_i² − σ_{i+1}²) s(x_i, σ_i) + √(σ_i² − σ_{i+1}²) z for i < L; the last
    step (to σ = 0) adds no noise when `denoise`, which makes it the Tweedie step.
    """
    sigmas = _levels(sigmas, x)
    nxt = torch.cat([sigmas[1:], sigmas.new_zeros(1)])
    path = [x] if return_trajectory else None
    for i, (sigma, sigma_next) in enumerate(zip(sigmas, nxt)):
        var = sigma**2 - sigma_next**2
        x = x + var * score(x, batch_time(sigma, x))
        if not (denoise and i == len(sigmas) - 1):
            x = x + var.sqrt() * randn_like(x, generator)
        if return_trajectory:
            path.append(x)
    return LangevinSolution(x, torch.stack(path) if return_trajectory else None)


class NoiseConditionalScore(nn.Module):
    """s_θ(x, σ) = net(x / √(σ_data² + σ²), t(σ)) / σ, with t(σ) = log(σ/σ_min) / log(σ_max/σ_min).

    t(σ) is the VE time of σ. Dividing by σ lets `net` predict −ε, of unit scale at every level
    (Song & Ermon 2020); dividing the input by √(σ_data² + σ²), the std of x̃ for data of std
    σ_data, gives `net` unit-scale inputs too (Karras et al. 2022). `net(x, t)` follows the course
    convention, `t: (B,)` in [0, 1].
    """

    def __init__(self, net: nn.Module, schedule: VESchedule, sigma_data: float = 1.0):
        super().__init__()
        self.net, self.schedule, self.sigma_data = net, schedule, sigma_data
        self.config = dict(sigma_min=schedule.sigma_min, sigma_max=schedule.sigma_max,
                           sigma_data=sigma_data, net=getattr(net, "config", {}))

    def time(self, sigma: torch.Tensor) -> torch.Tensor:
        s = self.schedule
        return torch.log(sigma / s.sigma_min) / math.log(s.sigma_max / s.sigma_min)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        sigma = batch_time(sigma, x)
        sig = append_dims(sigma, x.ndim)
        return self.net(x / (self.sigma_data**2 + sig**2).sqrt(), self.time(sigma)) / sig


def ncsn_loss(model, x: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor | None = None,
              *, generator: torch.Generator | None = None) -> torch.Tensor:
    """DSM over noise levels, weighted by λ(σ) = σ²: ½ E ||σ s_θ(x + σ ε, σ) + ε||², `sigma: (B,)`.

    The weight makes every level contribute on the same scale (Song & Ermon 2019, eq. 6).
    """
    sigma = batch_time(sigma, x)
    if (sigma <= 0).any():
        raise ValueError("Noise levels sigma must be positive.")
    eps = randn_like(x, generator) if eps is None else eps
    sig = append_dims(sigma, x.ndim)
    residual = sig * model(x + sig * eps, sigma) + eps
    return 0.5 * residual.flatten(1).pow(2).sum(1).mean()
