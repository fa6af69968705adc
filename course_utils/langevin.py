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
- `ConvScoreNet` (in `course_utils.models.conv_score`): a small convolutional `net(x, t)` for MNIST.
- `moons_mixture`, `tempered_weights`, `upper_mass`, `score_error_by_density`: notebook 06's measurements
  (the moons' exact p_σ, tempering vs noising the NCSN toy, the learned score's error against log p_σ).

A score model is called `score(x, sigma)` with `x: (B, *D)` and `sigma: (B,)`: the noise level
is an NCSN's clock (`t(σ)` converts it to VE-SDE time).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from . import data, mixtures, solvers
from .schedules import VESchedule
from .tensors import append_dims, batch_time, randn_like


def langevin_step(x: torch.Tensor, score: torch.Tensor, step_size: float, noise: torch.Tensor) -> torch.Tensor:
    """One ULA step: x + (α/2) s(x) + √α z, given s(x) = `score` and z = `noise` (shapes of x)."""
    return x + 0.5 * step_size * score + math.sqrt(step_size) * noise


class Langevin:
    """`solvers.sample` step: one ULA step of size α whatever the grid says (its grid counts steps)."""

    def __init__(self, step_size: float):
        if step_size <= 0:
            raise ValueError(f"The Langevin step size must be positive, got {step_size}.")
        self.step_size = step_size

    def __call__(self, f, x, t, s, *, generator=None, last=False):
        return langevin_step(x, f(x, t), self.step_size, randn_like(x, generator))


def langevin_dynamics(score, x: torch.Tensor, *, step_size: float, n_steps: int,
                      generator: torch.Generator | None = None,
                      return_trajectory: bool = False) -> solvers.Solution:
    """Run `n_steps` ULA steps of step α = `step_size` from `x`, for a callable `score(x)`.

    `solvers.sample` with the `Langevin` step over the grid 0, 1, ..., n_steps (the step count).
    """
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}.")
    step = Langevin(step_size)
    if n_steps == 0:
        return solvers.Solution(x, torch.zeros(1), x[None] if return_trajectory else None, 0)
    return solvers.sample(lambda y, t: score(y), x, torch.arange(n_steps + 1.0), method=step,
                          generator=generator, return_trajectory=return_trajectory)


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
    """The grid σ_1 > ... > σ_L > 0 = σ_{L+1} on x's device, checked once."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    if sigmas.ndim != 1 or len(sigmas) < 1 or (sigmas <= 0).any():
        raise ValueError("sigmas must be a 1-D tensor of positive noise levels.")
    if len(sigmas) > 1 and (sigmas[1:] >= sigmas[:-1]).any():
        raise ValueError("sigmas must decrease (from the largest noise level to the smallest).")
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(device=x.device, dtype=x.dtype)


class AnnealedLangevin:
    """`solvers.sample` step over the noise levels: from σ_i to σ_{i+1}, `n_steps_each` ULA steps of
    size α_i = ε σ_i²/σ_L² on p_{σ_i} (Song & Ermon 2019, Algorithm 1); with `denoise`, the last
    step ends with the Tweedie step x + σ_L² s(x, σ_L)."""

    def __init__(self, n_steps_each: int, step_size: float, sigma_last: float, denoise: bool = False):
        self.n_steps_each, self.step_size, self.sigma_last, self.denoise = n_steps_each, step_size, sigma_last, denoise

    def __call__(self, f, x, sigma, sigma_next, *, generator=None, last=False):
        alpha = self.step_size * (sigma / self.sigma_last) ** 2
        for _ in range(self.n_steps_each):
            x = x + 0.5 * alpha * f(x, sigma) + alpha.sqrt() * randn_like(x, generator)
        if last and self.denoise:
            x = x + sigma**2 * f(x, sigma)
        return x


def annealed_langevin(score, x: torch.Tensor, sigmas, *, n_steps_each: int = 100, step_size: float = 0.1,
                      generator: torch.Generator | None = None, denoise: bool = False,
                      return_trajectory: bool = False) -> solvers.Solution:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) for `score(x, sigma: (B,))`.

    For each level σ_i (decreasing), `n_steps_each` Langevin steps of size α_i = ε σ_i²/σ_L²
    on p_{σ_i}, where ε = `step_size` is the step at the smallest level. What matters for
    stability is α_i/σ_i² = ε/σ_L² (ULA on N(0, σ²) diverges once α ≥ 4σ²), so ε must scale
    with σ_L²: about 0.1·σ_L². `denoise=True` ends with one Tweedie step x + σ_L² s(x, σ_L),
    which removes the last level's noise (Jolicoeur-Martineau et al. 2021; Song & Ermon 2020).
    `solvers.sample` over the grid σ_1, ..., σ_L, 0 with the `AnnealedLangevin` step: the
    trajectory holds the start and the state after each level.
    """
    grid = _levels(sigmas, x)
    sigma_last = float(grid[-2])
    ratio = step_size / sigma_last**2
    if not 0 < ratio <= 2:
        raise ValueError(
            f"step_size/σ_L² = {ratio:.3g} must lie in (0, 2]: larger steps make Langevin diverge "
            f"(choose step_size ≈ 0.1·σ_L² = {0.1 * sigma_last ** 2:.3g})."
        )
    step = AnnealedLangevin(n_steps_each, step_size, sigma_last, denoise)
    return solvers.sample(score, x, grid, method=step, generator=generator, return_trajectory=return_trajectory)


class VEReverseStep:
    """`solvers.sample` step of the reverse VE SDE on noise levels (Song et al. 2021, eq. 47):
    x + (σ_i² − σ_{i+1}²) s(x, σ_i) + √(σ_i² − σ_{i+1}²) z; with `denoise` the last step (to σ = 0)
    adds no noise, which makes it the Tweedie step."""

    def __init__(self, denoise: bool = True):
        self.denoise = denoise

    def __call__(self, f, x, sigma, sigma_next, *, generator=None, last=False):
        var = sigma**2 - sigma_next**2
        x = x + var * f(x, sigma)
        if not (self.denoise and last):
            x = x + var.sqrt() * randn_like(x, generator)
        return x


def ve_reverse_diffusion(score, x: torch.Tensor, sigmas, *, generator: torch.Generator | None = None,
                         denoise: bool = True, return_trajectory: bool = False) -> solvers.Solution:
    """Reverse VE SDE, Euler–Maruyama on the levels (Song et al. 2021, eq. 47; σ_{L+1} = 0):
    `solvers.sample` over σ_1, ..., σ_L, 0 with the `VEReverseStep`."""
    return solvers.sample(score, x, _levels(sigmas, x), method=VEReverseStep(denoise), generator=generator,
                          return_trajectory=return_trajectory)


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
        """t(σ), the VE schedule's inverse."""
        return self.schedule.time(sigma)

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


# ---------------------------------------------------------------------------- analysis (notebook 06)
def moons_mixture(n_angles: int = 500):
    """The standardised moons of `data.moons` as a `GaussianMixture`: 2·`n_angles` equal components on the
    two half circles (midpoint rule in the angle), each N(c, diag((0.1/std)²)) in standardised coordinates.

    Its `log_prob` is `data.moons_log_prob`; `noised(1.0, σ)` is the exact p_σ = p * N(0, σ²I), so
    `marginal_score()` / `marginal_log_prob()` are the exact noise-conditional score and log-density.
    """
    mean, std = data.standardisation("moons")
    theta = (torch.arange(n_angles, dtype=torch.float64) + 0.5) * math.pi / n_angles
    upper = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    lower = torch.stack([1 - torch.cos(theta), 0.5 - torch.sin(theta)], 1)
    centres = (torch.cat([upper, lower]) - mean.double()) / std.double()
    stds = (0.1 / std.double()).expand_as(centres)
    return mixtures.GaussianMixture(centres.float(), stds.float())


def tempered_weights(weights, tau: float) -> torch.Tensor:
    """Mode weights of p^{1/τ} for a well-separated mixture with equal component stds: w_k^{1/τ} / Σ_j w_j^{1/τ}.

    Near mode k, p ≈ w_k N(μ_k, s²I), so p^{1/τ} ≈ w_k^{1/τ} N(μ_k, s²I)^{1/τ} ∝ w_k^{1/τ} N(μ_k, τ s²I) with
    the same constant for every k. Noising, p * N(0, σ²I), keeps the weights w_k instead.
    """
    w = torch.as_tensor(weights, dtype=torch.float64) ** (1.0 / tau)
    return w / w.sum()


def upper_mass(log_density, half_width: float = 15.0, n: int = 601) -> float:
    """∫_{x₁+x₂>0} e^{log_density} / ∫ e^{log_density} on the square [−half_width, half_width]², by the midpoint
    rule on an n×n grid: the share of a 2-D (unnormalised) density on the (5, 5) side of the NCSN toy."""
    h = 2 * half_width / n
    g = -half_width + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    pts = torch.cartesian_prod(g, g)
    logp = log_density(pts).double()
    w = torch.softmax(logp, 0)  # the grid's weights, normalised in log space
    return float(w[pts.sum(1) > 0].sum())


class ScoreErrorByDensity(NamedTuple):
    log_p: torch.Tensor         # (B,) log p_σ at each point
    error: torch.Tensor         # (B,) σ‖s − s*‖ at each point: the error of the implied noise prediction
    centres: torch.Tensor       # (n_bins,) mean log p_σ of each bin, lowest density first
    bin_error: torch.Tensor     # (n_bins,) √(mean_bin σ²‖s − s*‖²), the bin's RMS of `error`
    bin_relative: torch.Tensor  # (n_bins,) √(Σ_bin ‖s − s*‖² / Σ_bin ‖s*‖²), the bin's relative error


@torch.no_grad()
def score_error_by_density(score, exact_score, log_prob, x: torch.Tensor, sigma: float,
                           n_bins: int = 5) -> ScoreErrorByDensity:
    """The error of `score(x, σ)` against `exact_score(x, σ)` in `n_bins` equal-count bins of log p_σ(x).

    Two measures per bin: the RMS of σ‖s − s*‖ (the scale the NCSN loss weighs: its excess over the minimum is
    ½ E σ²‖s − s*‖²), and the relative error √(Σ‖s − s*‖² / Σ‖s*‖²), a ratio of sums so that single points
    where s* ≈ 0 (a ridge of the density) do not dominate it.
    """
    sig = torch.full((x.shape[0],), float(sigma), dtype=x.dtype)
    s, s_star = score(x, sig), exact_score(x, sig)
    sq_err, sq_ref = (s - s_star).pow(2).sum(1), s_star.pow(2).sum(1)
    log_p = log_prob(x, sig)
    bins = torch.argsort(log_p).tensor_split(n_bins)
    centres = torch.stack([log_p[b].mean() for b in bins])
    bin_error = torch.stack([float(sigma) * sq_err[b].mean().sqrt() for b in bins])
    bin_relative = torch.stack([(sq_err[b].sum() / sq_ref[b].sum()).sqrt() for b in bins])
    return ScoreErrorByDensity(log_p, float(sigma) * sq_err.sqrt(), centres, bin_error, bin_relative)
