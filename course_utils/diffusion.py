"""Discrete-time Gaussian diffusion: the forward chain, its ELBO, DDPM and DDIM sampling, guidance.

Time runs from data at t = 0 to noise at t = T (Ho et al. 2020). Notation:

    code                      paper
    betas[t]                  β_t, t = 1..T          (betas[0] = 0: t = 0 is the data itself)
    alphas[t]                 α_t = 1 − β_t
    alphas_cumprod[t]         ᾱ_t = Π_{u ≤ t} α_u    (ᾱ_0 = 1)
    q_sample(x0, t, eps)      x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε      (q(x_t | x_0))
    eps                       ε, the *total* noise in x_t: what the network predicts
    s                         the time a step goes to, s < t (s = t − 1 on the full chain)

`eps_fn(x_t, t) -> ε̂` is any callable with integer times `t: (B,)`; `model_eps(net)` makes one
from a network called the course's way, `net(x, t / T, **cond)` with continuous time in [0, 1].
Steps (`ddpm_step`, `ddim_step`) are the update equations given ε̂; loops (`sample`,
`ddim_invert`) call `eps_fn` once per step and report the number of calls (NFE).
Tables are built in float64 and cast to the data's dtype and device when used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .tensors import append_dims, batch_time
from .models.embeddings import SinusoidalTimeEmbedding, mlp
from .tensors import randn_like

VARIANCES = ("small", "large")
METHODS = ("ddpm", "ddim")


# --- β schedules ---------------------------------------------------------------------------


def linear_betas(T: int, beta_min: float = 0.1, beta_max: float = 20.0) -> torch.Tensor:
    """β_t linear from β_min/T to β_max/T (float64, shape (T,)).

    For T = 1000 this is Ho et al.'s 1e-4 … 0.02; dividing by T makes every T discretise the
    same VP SDE, β(τ) = β_min + τ(β_max − β_min) on τ = t/T (`schedules.VPSchedule`).
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


def _check_T(T):
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"The number of diffusion steps T must be a positive integer, got {T!r}.")


class DiscreteSchedule:
    """The tables of a β schedule, indexed by t = 0..T (t = 0 is the data: β_0 = 0, ᾱ_0 = 1)."""

    def __init__(self, betas):
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() < 1 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError("Every β_t must lie strictly between 0 and 1 (and there must be at least one).")
        self.T = betas.numel()
        self.betas = torch.cat([betas.new_zeros(1), betas])
        self.alphas = 1 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)

    @classmethod
    def linear(cls, T: int, beta_min: float = 0.1, beta_max: float = 20.0) -> "DiscreteSchedule":
        return cls(linear_betas(T, beta_min, beta_max))

    @classmethod
    def cosine(cls, T: int, s: float = 0.008) -> "DiscreteSchedule":
        return cls(cosine_betas(T, s))

    def log_snr(self) -> torch.Tensor:
        """λ_t = log(ᾱ_t / (1 − ᾱ_t)), t = 0..T (λ_0 = +inf)."""
        abar = self.alphas_cumprod
        return torch.log(abar) - torch.log1p(-abar)


# --- results -------------------------------------------------------------------------------


@dataclass
class Gaussian:
    """A diagonal Gaussian N(mean, var·I); `var` broadcasts against `mean: (B, *D)`."""

    mean: torch.Tensor
    var: torch.Tensor

    @property
    def std(self) -> torch.Tensor:
        return self.var.sqrt()


@dataclass
class DiffusionSample:
    x: torch.Tensor  # final state (B, *D)
    timesteps: torch.Tensor  # the integer times visited, (K + 1,)
    trajectory: torch.Tensor | None  # (K + 1, B, *D) or None
    nfe: int  # calls of eps_fn


@dataclass
class VLBTerms:
    """The negative ELBO of one x_0 in nats: prior + Σ_t terms[:, t − 1] (Ho et al. eq. 5)."""

    prior: torch.Tensor  # KL(q(x_T | x_0) || N(0, I)), (B,)
    terms: torch.Tensor  # (B, T): column 0 is the decoder −log p(x_0 | x_1), column t−1 is L_{t−1} (t ≥ 2)

    @property
    def total(self) -> torch.Tensor:
        return self.prior + self.terms.sum(1)


def gaussian_kl(p: Gaussian, q: Gaussian) -> torch.Tensor:
    """KL(p || q) of diagonal Gaussians, summed over all but the batch dim: (B,)."""
    mean_p, var_p = torch.broadcast_tensors(p.mean, p.var)
    var_q = q.var.expand_as(mean_p)
    kl = 0.5 * (torch.log(var_q) - torch.log(var_p) + (var_p + (mean_p - q.mean) ** 2) / var_q - 1)
    return kl.flatten(1).sum(1)


def gaussian_nll(x: torch.Tensor, p: Gaussian) -> torch.Tensor:
    """−log N(x; mean, var·I), summed over all but the batch dim: (B,)."""
    mean, var = torch.broadcast_tensors(p.mean, p.var.expand_as(x))
    nll = 0.5 * (torch.log(2 * math.pi * var) + (x - mean) ** 2 / var)
    return nll.flatten(1).sum(1)


# --- the diffusion ----------------------------------------------------------------------------


class GaussianDiffusion:
    """Equations of a discrete Gaussian diffusion with schedule `schedule`.

    `variance` is the reverse-step variance σ_t² of DDPM: "small" = the posterior variance
    β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) β_t, "large" = β_t (Ho et al. §3.2).
    """

    def __init__(self, schedule: DiscreteSchedule, variance: str = "small"):
        if not isinstance(schedule, DiscreteSchedule):
            raise ValueError(f"schedule must be a DiscreteSchedule, got {type(schedule).__name__}.")
        if variance not in VARIANCES:
            raise ValueError(f"Unknown variance {variance!r}: use one of {', '.join(VARIANCES)}.")
        self.schedule, self.variance = schedule, variance
        self.T = schedule.T

    # -- helpers
    def _times(self, t, x: torch.Tensor, lo: int = 0) -> torch.Tensor:
        """Integer times as a (B,) long tensor on x's device, checked to lie in lo..T."""
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            raise ValueError("Diffusion times must be integers 0..T (a long tensor), not floats.")
        t = torch.as_tensor(t, device=x.device).long()
        t = t.reshape(()).expand(x.shape[0]) if t.numel() == 1 else t
        if t.shape != (x.shape[0],):
            raise ValueError(f"Times must be a scalar or have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}.")
        if t.min() < lo or t.max() > self.T:
            raise ValueError(f"Times must lie in {lo}..{self.T}, got {t.min().item()}..{t.max().item()}.")
        return t

    def _at(self, table: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """table[t] cast to x's dtype/device and shaped to broadcast against x."""
        return append_dims(table.to(x.dtype).to(x.device)[t], x.ndim)

    @staticmethod
    def _same_shape(x: torch.Tensor, other: torch.Tensor, name: str) -> None:
        if x.ndim < 2 or other.shape != x.shape:
            raise ValueError(f"{name} must have the shape (B, *D) of the data, {tuple(x.shape)}; got {tuple(other.shape)}.")

    def _step_times(self, t, s, x):
        t = self._times(t, x, lo=1)
        s = t - 1 if s is None else self._times(s, x)
        if (s >= t).any():
            raise ValueError("A reverse step goes from t to an earlier time s < t.")
        return t, s

    def abar(self, t, x: torch.Tensor) -> torch.Tensor:
        """ᾱ_t, shaped to broadcast against x."""
        return self._at(self.schedule.alphas_cumprod, self._times(t, x), x)

    # -- forward process
    def q_marginal(self, x0: torch.Tensor, t) -> Gaussian:
        """q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I)."""
        abar = self.abar(t, x0)
        return Gaussian(abar.sqrt() * x0, (1 - abar).expand_as(x0))

    def q_sample(self, x0: torch.Tensor, t, eps: torch.Tensor | None = None, *, generator=None) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε."""
        eps = randn_like(x0, generator) if eps is None else eps
        self._same_shape(x0, eps, "eps")
        abar = self.abar(t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * eps

    def q_step(self, x_prev: torch.Tensor, t, eps: torch.Tensor | None = None, *, generator=None) -> torch.Tensor:
        """One step of the chain, x_t = √α_t x_{t−1} + √β_t ε  (q(x_t | x_{t−1}))."""
        t = self._times(t, x_prev, lo=1)
        eps = randn_like(x_prev, generator) if eps is None else eps
        beta = self._at(self.schedule.betas, t, x_prev)
        return (1 - beta).sqrt() * x_prev + beta.sqrt() * eps

    # -- conversions (Tweedie: x̂_0 = E[x_0 | x_t])
    def predict_x0(self, x_t: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """x̂_0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t."""
        abar = self.abar(t, x_t)
        return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()

    def predict_eps(self, x_t: torch.Tensor, t, x0: torch.Tensor) -> torch.Tensor:
        """ε̂ = (x_t − √ᾱ_t x̂_0) / √(1 − ᾱ_t)."""
        abar = self.abar(t, x_t)
        return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()

    def eps_to_score(self, x_t: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """∇log q(x_t) = −ε̂ / √(1 − ᾱ_t)."""
        return -eps / (1 - self.abar(t, x_t)).sqrt()

    # -- reverse process
    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t, s=None) -> Gaussian:
        """q(x_s | x_t, x_0) for s < t (s = t − 1 by default), Ho et al. eq. 6–7, with β_{t|s} = 1 − ᾱ_t/ᾱ_s:

        mean = √ᾱ_s β_{t|s}/(1 − ᾱ_t) x_0 + √(ᾱ_t/ᾱ_s) (1 − ᾱ_s)/(1 − ᾱ_t) x_t,
        var  = (1 − ᾱ_s)/(1 − ᾱ_t) β_{t|s}.
        """
        t, s = self._step_times(t, s, x_t)
        abar_t = self._at(self.schedule.alphas_cumprod, t, x_t)
        abar_s = self._at(self.schedule.alphas_cumprod, s, x_t)
        beta_ts = 1 - abar_t / abar_s
        mean = (abar_s.sqrt() * beta_ts * x0 + (abar_t / abar_s).sqrt() * (1 - abar_s) * x_t) / (1 - abar_t)
        return Gaussian(mean, ((1 - abar_s) / (1 - abar_t) * beta_ts).expand_as(x_t))

    def p_mean_variance(self, x_t: torch.Tensor, eps: torch.Tensor, t, s=None) -> Gaussian:
        """p_θ(x_s | x_t): the posterior with x_0 replaced by x̂_0(x_t, ε̂), variance per `self.variance`.

        For s = t − 1 the mean is Ho et al.'s eq. 11, (x_t − β_t/√(1 − ᾱ_t) ε̂)/√α_t.
        """
        self._same_shape(x_t, eps, "The ε-prediction")
        post = self.q_posterior(self.predict_x0(x_t, t, eps), x_t, t, s)
        if self.variance == "large":
            t, s = self._step_times(t, s, x_t)
            abar = self.schedule.alphas_cumprod
            post.var = (1 - self._at(abar, t, x_t) / self._at(abar, s, x_t)).expand_as(x_t)
        return post

    def ddpm_step(self, x_t: torch.Tensor, eps: torch.Tensor, t, s=None, *, noise=None, generator=None) -> torch.Tensor:
        """Ancestral step x_s = mean + σ z of p_θ(x_s | x_t) (Ho et al. Algorithm 2, any s < t)."""
        p = self.p_mean_variance(x_t, eps, t, s)
        noise = randn_like(x_t, generator) if noise is None else noise
        return p.mean + p.std * noise

    def ddim_mean_variance(self, x_t: torch.Tensor, eps: torch.Tensor, t, s=None, eta: float = 0.0) -> Gaussian:
        """DDIM (Song et al. 2021, eq. 12 and 16):

        x_s = √ᾱ_s x̂_0 + √(1 − ᾱ_s − σ²) ε̂ + σ z,   σ² = η² (1 − ᾱ_s)/(1 − ᾱ_t) (1 − ᾱ_t/ᾱ_s).
        η = 1 gives DDPM's posterior variance, η = 0 the deterministic sampler.
        """
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}.")
        self._same_shape(x_t, eps, "The ε-prediction")
        t, s = self._step_times(t, s, x_t)
        abar_t = self._at(self.schedule.alphas_cumprod, t, x_t)
        abar_s = self._at(self.schedule.alphas_cumprod, s, x_t)
        var = eta**2 * (1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)
        x0 = self.predict_x0(x_t, t, eps)
        mean = abar_s.sqrt() * x0 + (1 - abar_s - var).clamp_min(0).sqrt() * eps
        return Gaussian(mean, var.expand_as(x_t))

    def ddim_step(self, x_t: torch.Tensor, eps: torch.Tensor, t, s=None, eta: float = 0.0, *,
                  noise=None, generator=None) -> torch.Tensor:
        """One DDIM step from t to s with stochasticity η (see `ddim_mean_variance`)."""
        p = self.ddim_mean_variance(x_t, eps, t, s, eta)
        if eta == 0:
            return p.mean
        noise = randn_like(x_t, generator) if noise is None else noise
        return p.mean + p.std * noise

    # -- networks and loops
    def model_eps(self, model, **cond):
        """`eps_fn(x, t) = model(x, t / T, **cond)`: a course network (continuous time) as an ε-predictor."""

        def eps_fn(x, t):
            return model(x, self._times(t, x).to(x.dtype) / self.T, **cond)

        return eps_fn

    def timesteps(self, steps: int | None = None) -> torch.Tensor:
        """`steps + 1` evenly spaced integer times from T down to 0 (all T + 1 when steps is None)."""
        steps = self.T if steps is None else steps
        if not isinstance(steps, int) or not 1 <= steps <= self.T:
            raise ValueError(f"steps must be an integer in 1..T = 1..{self.T}, got {steps!r}.")
        return torch.linspace(self.T, 0, steps + 1, dtype=torch.float64).round().long()

    @torch.no_grad()
    def sample(self, eps_fn, x_T: torch.Tensor, *, steps: int | None = None, method: str = "ddpm",
               eta: float = 0.0, generator=None, return_trajectory: bool = False,
               clip_x0: float | None = None) -> DiffusionSample:
        """Run the reverse process from x_T over `timesteps(steps)` with DDPM or DDIM(η) steps.

        `clip_x0` clamps x̂_0 to [−clip, clip] at each step (for images in [−1, 1]).
        """
        if method not in METHODS:
            raise ValueError(f"Unknown sampler {method!r}: use one of {', '.join(METHODS)}.")
        times = self.timesteps(steps).to(x_T.device)
        x, path = x_T, [x_T]
        for t, s in zip(times[:-1], times[1:]):
            eps = eps_fn(x, t.expand(x.shape[0]))
            if clip_x0 is not None:
                eps = self.predict_eps(x, t, self.predict_x0(x, t, eps).clamp(-clip_x0, clip_x0))
            if method == "ddpm":
                x = self.ddpm_step(x, eps, t, s, generator=generator)
            else:
                x = self.ddim_step(x, eps, t, s, eta, generator=generator)
            if return_trajectory:
                path.append(x)
        return DiffusionSample(x, times, torch.stack(path) if return_trajectory else None, len(times) - 1)

    @torch.no_grad()
    def ddim_invert(self, eps_fn, x0: torch.Tensor, *, steps: int | None = None,
                    return_trajectory: bool = False) -> DiffusionSample:
        """Deterministic DDIM run forward, data → noise: x_t = √ᾱ_t x̂_0 + √(1 − ᾱ_t) ε̂(x_s, s), s < t.

        The same Euler step of the probability-flow ODE as η = 0 sampling, taken the other way.
        """
        times = self.timesteps(steps).flip(0).to(x0.device)
        x, path = x0, [x0]
        for s, t in zip(times[:-1], times[1:]):
            eps = eps_fn(x, s.expand(x.shape[0]))
            abar_t = self.abar(t, x)
            x = abar_t.sqrt() * self.predict_x0(x, s, eps) + (1 - abar_t).sqrt() * eps
            if return_trajectory:
                path.append(x)
        return DiffusionSample(x, times, torch.stack(path) if return_trajectory else None, len(times) - 1)

    # -- training objectives
    def loss(self, eps_fn, x0: torch.Tensor, *, generator=None) -> torch.Tensor:
        """L_simple = E_{t ~ U{1..T}, ε} ||ε − ε̂(x_t, t)||² (mean over batch and dims; Ho et al. eq. 14)."""
        t = torch.randint(1, self.T + 1, (x0.shape[0],), generator=generator,
                          device=generator.device if generator is not None else x0.device).to(x0.device)
        eps = randn_like(x0, generator)
        return (eps - eps_fn(self.q_sample(x0, t, eps), t)).pow(2).mean()

    def vlb_weight(self, t) -> torch.Tensor:
        """w_t = β_t² / (2 σ_t² α_t (1 − ᾱ_t)): L_{t−1} = w_t ||ε − ε̂||² (+ a constant if σ_t² ≠ β̃_t), t ≥ 2."""
        t = torch.as_tensor(t, dtype=torch.long)
        if t.min() < 2 or t.max() > self.T:
            raise ValueError(f"The KL terms L_(t-1) exist for t in 2..{self.T}.")
        sc = self.schedule
        beta, alpha, abar, abar_prev = sc.betas[t], sc.alphas[t], sc.alphas_cumprod[t], sc.alphas_cumprod[t - 1]
        var = beta if self.variance == "large" else (1 - abar_prev) / (1 - abar) * beta
        return beta**2 / (2 * var * alpha * (1 - abar))

    def vlb_terms(self, eps_fn, x0: torch.Tensor, *, generator=None) -> VLBTerms:
        """The terms of −ELBO for each x_0, one x_t ~ q(x_t | x_0) per t (Ho et al. eq. 5).

        The decoder p(x_0 | x_1) is the Gaussian N(μ_θ(x_1, 1), β_1 I) (continuous data).
        """
        B = x0.shape[0]
        abar_T = self.abar(self.T, x0)
        prior = gaussian_kl(Gaussian(abar_T.sqrt() * x0, 1 - abar_T), Gaussian(torch.zeros_like(x0), x0.new_ones(())))
        terms = []
        for t in range(1, self.T + 1):
            x_t = self.q_sample(x0, t, generator=generator)
            model = self.p_mean_variance(x_t, eps_fn(x_t, torch.full((B,), t, device=x0.device)), t)
            if t == 1:
                beta_1 = self._at(self.schedule.betas, self._times(1, x0), x0)
                terms.append(gaussian_nll(x0, Gaussian(model.mean, beta_1)))
            else:
                terms.append(gaussian_kl(self.q_posterior(x0, x_t, t), model))
        return VLBTerms(prior, torch.stack(terms, 1))

    # -- guidance
    def classifier_guidance(self, eps_fn, log_prob_fn, scale: float):
        """ε̃(x_t, t) = ε̂(x_t, t) − scale · √(1 − ᾱ_t) ∇_x log p_φ(y | x_t, t) (Dhariwal & Nichol 2021, Alg. 2).

        In scores: ∇log p_t(x) + scale · ∇log p_φ(y | x), the score of p_t(x) p_φ(y | x)^scale.
        `log_prob_fn(x, t) -> (B,)` is log p_φ(y | x_t) for the wanted labels y.
        """

        def guided(x, t):
            with torch.enable_grad():
                x_in = x.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(log_prob_fn(x_in, t).sum(), x_in)
            return eps_fn(x, t) - scale * (1 - self.abar(t, x)).sqrt() * grad

        return guided


def classifier_free_guidance(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, w: float) -> torch.Tensor:
    """ε̃ = (1 − w) ε̂(x_t, ∅) + w ε̂(x_t, y) (Ho & Salimans 2022; w = 1 is the conditional model)."""
    return (1 - w) * eps_uncond + w * eps_cond
