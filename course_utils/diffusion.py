"""Discrete-time Gaussian diffusion: the forward chain, its ELBO, DDPM and DDIM steps (notebook 07a).

Time runs from data at t = 0 to noise at t = T (Ho et al. 2020). The β table and every
conversion between predictions (x̂_0, ε̂, score) live in `schedules.DiscreteSchedule`, the
same affine path z = alpha·x_0 + sigma·ε as every other topic, read on τ = t/T; this module
keeps the chain's own equations. Notation:

    code                      paper
    schedule.betas[t]         β_t, t = 1..T          (betas[0] = 0: t = 0 is the data itself)
    schedule.alphas[t]        α_t = 1 − β_t
    schedule.alphas_cumprod   ᾱ_t = Π_{u ≤ t} α_u    (ᾱ_0 = 1; alpha = √ᾱ, sigma = √(1 − ᾱ))
    q_sample(x0, t, eps)      x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε      (q(x_t | x_0))
    eps                       ε, the *total* noise in x_t: what the network predicts
    s                         the time a step goes to, s < t (s = t − 1 on the full chain)

Networks are called the course's way, `model(x_t, τ, **cond)` with continuous τ = t/T in
[0, 1]: the chain's equations take integer steps t, the model and the sampler's grid take τ.
`sample` and `ddim_invert` are `solvers.sample` over `grid(steps)` with the step `step(...)`
(one model call per step, NFE = steps). Tables are float64, cast to the data's dtype when used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import solvers
from .schedules import DiscreteSchedule, cosine_betas, linear_betas  # noqa: F401  (re-exported)
from .tensors import append_dims, randn_like

VARIANCES = ("small", "large")
METHODS = ("ddpm", "ddim")


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



class GaussianDiffusion:
    """Equations of a discrete Gaussian diffusion with schedule `schedule` (a `DiscreteSchedule`).

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
            raise ValueError("Diffusion steps t must be integers 0..T (a long tensor), not floats: "
                             "τ = t/T is what networks get.")
        t = torch.as_tensor(t, device=x.device).long()
        t = t.reshape(()).expand(x.shape[0]) if t.numel() == 1 else t
        if t.shape != (x.shape[0],):
            raise ValueError(f"Times must be a scalar or have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}.")
        if t.min() < lo or t.max() > self.T:
            raise ValueError(f"Times must lie in {lo}..{self.T}, got {t.min().item()}..{t.max().item()}.")
        return t

    def _at(self, name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The schedule's table `name` at t, in x's dtype on x's device, shaped to broadcast against x (no checks)."""
        return append_dims(self.schedule.table(name, x.device, x.dtype)[t], x.ndim)

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
        return self._at("alphas_cumprod", self._times(t, x), x)

    # -- forward process
    def q_marginal(self, x0: torch.Tensor, t) -> Gaussian:
        """q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I)."""
        abar = self.abar(t, x0)
        return Gaussian(abar.sqrt() * x0, (1 - abar).expand_as(x0))

    def q_sample(self, x0: torch.Tensor, t, eps: torch.Tensor | None = None, *, generator=None) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε: the schedule's path at step t."""
        eps = randn_like(x0, generator) if eps is None else eps
        self._same_shape(x0, eps, "eps")
        return self.schedule.sample(eps, x0, self._times(t, x0))

    def q_step(self, x_prev: torch.Tensor, t, eps: torch.Tensor | None = None, *, generator=None) -> torch.Tensor:
        """One step of the chain, x_t = √α_t x_{t−1} + √β_t ε  (q(x_t | x_{t−1}))."""
        t = self._times(t, x_prev, lo=1)
        eps = randn_like(x_prev, generator) if eps is None else eps
        beta = self._at("betas", t, x_prev)
        return (1 - beta).sqrt() * x_prev + beta.sqrt() * eps

    # -- reverse process
    def _posterior(self, x0, x_t, abar_t, abar_s) -> Gaussian:
        beta_ts = 1 - abar_t / abar_s
        mean = (abar_s.sqrt() * beta_ts * x0 + (abar_t / abar_s).sqrt() * (1 - abar_s) * x_t) / (1 - abar_t)
        return Gaussian(mean, ((1 - abar_s) / (1 - abar_t) * beta_ts).expand_as(x_t))

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t, s=None) -> Gaussian:
        """q(x_s | x_t, x_0) for s < t (s = t − 1 by default), Ho et al. eq. 6–7, with β_{t|s} = 1 − ᾱ_t/ᾱ_s:

        mean = √ᾱ_s β_{t|s}/(1 − ᾱ_t) x_0 + √(ᾱ_t/ᾱ_s) (1 − ᾱ_s)/(1 − ᾱ_t) x_t,
        var  = (1 − ᾱ_s)/(1 − ᾱ_t) β_{t|s}.
        """
        t, s = self._step_times(t, s, x_t)
        return self._posterior(x0, x_t, self._at("alphas_cumprod", t, x_t), self._at("alphas_cumprod", s, x_t))

    def _p(self, x_t, eps, t, s) -> Gaussian:
        abar_t, abar_s = self._at("alphas_cumprod", t, x_t), self._at("alphas_cumprod", s, x_t)
        post = self._posterior(self.schedule.eps_to_x(eps, x_t, t), x_t, abar_t, abar_s)
        if self.variance == "large":
            post.var = (1 - abar_t / abar_s).expand_as(x_t)
        return post

    def p_mean_variance(self, x_t: torch.Tensor, eps: torch.Tensor, t, s=None) -> Gaussian:
        """p_θ(x_s | x_t): the posterior with x_0 replaced by x̂_0(x_t, ε̂), variance per `self.variance`.

        For s = t − 1 the mean is Ho et al.'s eq. 11, (x_t − β_t/√(1 − ᾱ_t) ε̂)/√α_t.
        """
        self._same_shape(x_t, eps, "The ε-prediction")
        return self._p(x_t, eps, *self._step_times(t, s, x_t))

    def ddpm_step(self, x_t: torch.Tensor, eps: torch.Tensor, t, s=None, *, noise=None, generator=None) -> torch.Tensor:
        """Ancestral step x_s = mean + σ z of p_θ(x_s | x_t) (Ho et al. Algorithm 2, any s < t)."""
        p = self.p_mean_variance(x_t, eps, t, s)
        noise = randn_like(x_t, generator) if noise is None else noise
        return p.mean + p.std * noise

    def _ddim(self, x_t, eps, t, s, eta) -> Gaussian:
        abar_t, abar_s = self._at("alphas_cumprod", t, x_t), self._at("alphas_cumprod", s, x_t)
        if eta == 0:  # (also for inversion, where t = 0 would make the formula 0 · ∞)
            var = torch.zeros_like(abar_t)
        else:
            var = eta**2 * (1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)
        mean = abar_s.sqrt() * self.schedule.eps_to_x(eps, x_t, t) + (1 - abar_s - var).clamp_min(0).sqrt() * eps
        return Gaussian(mean, var.expand_as(x_t))

    def ddim_mean_variance(self, x_t: torch.Tensor, eps: torch.Tensor, t, s=None, eta: float = 0.0) -> Gaussian:
        """DDIM (Song et al. 2021, eq. 12 and 16):

        x_s = √ᾱ_s x̂_0 + √(1 − ᾱ_s − σ²) ε̂ + σ z,   σ² = η² (1 − ᾱ_s)/(1 − ᾱ_t) (1 − ᾱ_t/ᾱ_s).
        η = 1 gives DDPM's posterior variance, η = 0 the deterministic sampler.
        """
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}.")
        self._same_shape(x_t, eps, "The ε-prediction")
        return self._ddim(x_t, eps, *self._step_times(t, s, x_t), eta)

    def ddim_step(self, x_t: torch.Tensor, eps: torch.Tensor, t, s=None, eta: float = 0.0, *,
                  noise=None, generator=None) -> torch.Tensor:
        """One DDIM step from t to s with stochasticity η (see `ddim_mean_variance`)."""
        p = self.ddim_mean_variance(x_t, eps, t, s, eta)
        if eta == 0:
            return p.mean
        noise = randn_like(x_t, generator) if noise is None else noise
        return p.mean + p.std * noise

    # -- the sampler's grid and step
    def timesteps(self, steps: int | None = None) -> torch.Tensor:
        """`steps + 1` evenly spaced integer times from T down to 0 (all T + 1 when steps is None)."""
        steps = self.T if steps is None else steps
        if not isinstance(steps, int) or not 1 <= steps <= self.T:
            raise ValueError(f"steps must be an integer in 1..T = 1..{self.T}, got {steps!r}.")
        return torch.linspace(self.T, 0, steps + 1, dtype=torch.float64).round().long()

    def grid(self, steps: int | None = None) -> torch.Tensor:
        """The sampler's time grid τ = t/T over `timesteps(steps)`: from 1 (noise) to 0 (data)."""
        return self.schedule.tau(self.timesteps(steps))

    def step(self, method: str = "ddpm", eta: float = 0.0, clip_x0: float | None = None):
        """A `solvers.sample` step from τ to τ' for an ε-model: DDPM's ancestral step, or DDIM(η).

        `clip_x0` clamps x̂_0 to [−clip, clip] before the update (static thresholding, for images in
        [−1, 1]). The step reads the integer steps round(τT) from the grid on the device: no host sync.
        With τ' > τ, DDIM(η = 0) runs the same Euler step of the probability-flow ODE the other way
        (inversion).
        """
        if method not in METHODS:
            raise ValueError(f"Unknown sampler {method!r}: use one of {', '.join(METHODS)}.")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}.")
        sched = self.schedule

        def diffusion_step(f, x, tau, tau_next, *, generator=None, last=False):
            t, s = sched.step_index(tau), sched.step_index(tau_next)
            eps = f(x, tau)
            if clip_x0 is not None:
                eps = sched.x_to_eps(sched.eps_to_x(eps, x, t).clamp(-clip_x0, clip_x0), x, t)
            if method == "ddim":
                p = self._ddim(x, eps, t, s, eta)
                if eta == 0:
                    return p.mean
            else:
                p = self._p(x, eps, t, s)
            return p.mean + p.std * randn_like(x, generator)

        return diffusion_step

    def sample(self, model, x_T: torch.Tensor, *, steps: int | None = None, method: str = "ddpm",
               eta: float = 0.0, generator=None, return_trajectory: bool = False,
               clip_x0: float | None = None, **cond) -> solvers.Solution:
        """Run the reverse process from x_T over `grid(steps)` with DDPM or DDIM(η) steps.

        `model(x_t, τ, **cond)` predicts ε (a network, or a guidance wrapper with `y=` in `cond`).
        """
        return solvers.sample(model, x_T, self.grid(steps), method=self.step(method, eta, clip_x0),
                              generator=generator, return_trajectory=return_trajectory, **cond)

    def ddim_invert(self, model, x0: torch.Tensor, *, steps: int | None = None,
                    return_trajectory: bool = False, **cond) -> solvers.Solution:
        """Deterministic DDIM run forward, data → noise: x_t = √ᾱ_t x̂_0(x_s, s) + √(1 − ᾱ_t) ε̂(x_s, s), s < t.

        Euler's method on the probability-flow ODE dx̄/dσ̄ = ε (x̄ = x/√ᾱ, σ̄ = √(1 − ᾱ)/√ᾱ), as η = 0 sampling,
        taken the other way: each step evaluates ε̂ at its start, here the lower end of the step.
        """
        return solvers.sample(model, x0, self.grid(steps).flip(0), method=self.step("ddim"),
                              return_trajectory=return_trajectory, **cond)

    # -- training objectives
    def loss(self, model, x0: torch.Tensor, *, generator=None, **cond) -> torch.Tensor:
        """L_simple = E_{t ~ U{1..T}, ε} ||ε − ε̂(x_t, t/T)||² (mean over batch and dims; Ho et al. eq. 14).

        `cond` (e.g. `y=`, `drop=`) is passed on to the model.
        """
        t = torch.randint(1, self.T + 1, (x0.shape[0],), generator=generator,
                          device=generator.device if generator is not None else x0.device).to(x0.device)
        eps = randn_like(x0, generator)
        return (eps - model(self.q_sample(x0, t, eps), self.schedule.tau(t).to(x0), **cond)).pow(2).mean()

    def vlb_weight(self, t) -> torch.Tensor:
        """w_t = β_t² / (2 σ_t² α_t (1 − ᾱ_t)): L_{t−1} = w_t ||ε − ε̂||² (+ a constant if σ_t² ≠ β̃_t), t ≥ 2."""
        t = torch.as_tensor(t, dtype=torch.long)
        if t.min() < 2 or t.max() > self.T:
            raise ValueError(f"The KL terms L_(t-1) exist for t in 2..{self.T}.")
        sc = self.schedule
        beta, alpha, abar, abar_prev = sc.betas[t], sc.alphas[t], sc.alphas_cumprod[t], sc.alphas_cumprod[t - 1]
        var = beta if self.variance == "large" else (1 - abar_prev) / (1 - abar) * beta
        return beta**2 / (2 * var * alpha * (1 - abar))

    def vlb_terms(self, model, x0: torch.Tensor, *, generator=None, **cond) -> VLBTerms:
        """The terms of −ELBO for each x_0, one x_t ~ q(x_t | x_0) per t (Ho et al. eq. 5).

        The decoder p(x_0 | x_1) is the Gaussian N(μ_θ(x_1, 1), β_1 I) (continuous data).
        """
        B = x0.shape[0]
        abar_T = self.abar(self.T, x0)
        prior = gaussian_kl(Gaussian(abar_T.sqrt() * x0, 1 - abar_T), Gaussian(torch.zeros_like(x0), x0.new_ones(())))
        terms = []
        for t in range(1, self.T + 1):
            x_t = self.q_sample(x0, t, generator=generator)
            t_b = torch.full((B,), t, device=x0.device)
            eps = model(x_t, self.schedule.tau(t_b).to(x0), **cond)
            pred = self.p_mean_variance(x_t, eps, t)
            if t == 1:
                beta_1 = self._at("betas", self._times(1, x0), x0)
                terms.append(gaussian_nll(x0, Gaussian(pred.mean, beta_1)))
            else:
                terms.append(gaussian_kl(self.q_posterior(x0, x_t, t), pred))
        return VLBTerms(prior, torch.stack(terms, 1))


# --- the posterior by regression, and the probability-flow ODE in other coordinates ---------------


@dataclass
class PosteriorFit:
    """A least-squares fit x_{t−1} ≈ slope·x_t + intercept per coordinate, from n joint draws with x_0 fixed.

    Given x_0, (x_{t−1}, x_t) is jointly Gaussian, so the regression line *is* the posterior mean
    and the residual variance is the posterior variance. Each estimate comes with its standard error.
    """

    slope: torch.Tensor
    intercept: torch.Tensor
    var: torch.Tensor
    slope_se: torch.Tensor
    intercept_se: torch.Tensor
    var_se: torch.Tensor

    def max_z(self, slope, intercept, var) -> float:
        """The largest gap, in standard errors, between this fit and a claimed posterior N(slope·x_t + intercept, var)."""
        gaps = [(self.slope - slope) / self.slope_se, (self.intercept - intercept) / self.intercept_se,
                (self.var - var) / self.var_se]
        return max(g.abs().max().item() for g in gaps)


def posterior_by_regression(diff: GaussianDiffusion, x0: torch.Tensor, t: int, n: int, *, generator=None) -> PosteriorFit:
    """Estimate q(x_{t−1} | x_t, x_0) for one point `x0: (D,)` by simulation: x_{t−1} ~ q(· | x_0),
    x_t ~ q(· | x_{t−1}) (`n` draws, float64), then regress x_{t−1} on x_t coordinate by coordinate."""
    if not 2 <= t <= diff.T:
        raise ValueError(f"t must lie in 2..{diff.T} (x_{{t−1}} must be random), got {t}.")
    x0 = x0.double().reshape(1, -1).expand(n, -1)
    x_prev = diff.q_sample(x0, t - 1, generator=generator)
    x_t = diff.q_step(x_prev, t, generator=generator)
    xm, ym = x_t.mean(0), x_prev.mean(0)
    sxx = (x_t - xm).pow(2).sum(0)
    slope = ((x_t - xm) * (x_prev - ym)).sum(0) / sxx
    intercept = ym - slope * xm
    var = (x_prev - intercept - slope * x_t).pow(2).sum(0) / (n - 2)
    return PosteriorFit(slope, intercept, var, (var / sxx).sqrt(), (var * (1 / n + xm**2 / sxx)).sqrt(),
                        var * math.sqrt(2 / (n - 1)))


def sigma_bar_step(schedule, method: str = "heun"):
    """A `solvers.sample` step for an ε-model on a τ grid, in Karras et al.'s (2022) coordinates
    x̄ = x/α, σ̄ = σ/α, where the probability-flow ODE reads dx̄/dσ̄ = ε̂(x, τ).

    "euler" is DDIM(η = 0); "heun" adds Heun's correction with a second model call (their Alg. 1),
    except on a step that ends at σ̄ = 0, which stays an Euler step: k steps cost 2k − 1 calls.
    """
    if method not in ("euler", "heun"):
        raise ValueError(f"Unknown method {method!r}: use 'euler' or 'heun'.")

    def step(f, x, tau, tau_next, **_):
        a_t, s_t, _, _ = schedule.coefficients(tau, x)
        a_s, s_s, _, _ = schedule.coefficients(tau_next, x)
        h = s_s / a_s - s_t / a_t  # the step in σ̄
        d = f(x, tau)
        x_bar = x / a_t + h * d
        if method == "euler" or bool((s_s == 0).all()):
            return a_s * x_bar
        return a_s * (x / a_t + h * 0.5 * (d + f(a_s * x_bar, tau_next)))

    return step


def rectified_flow_euler(eps_model, schedule, x_T: torch.Tensor, tau_grid: torch.Tensor, *,
                         rescale: bool = True, **cond) -> torch.Tensor:
    """Sample with an ε-model rewritten as a rectified-flow velocity, by Euler's method in the flow's time.

    The state z = x/(α + σ) lies on the linear path z_r = (1 − r) x̂_0 + r ε at r = σ/(α + σ)
    (data at r = 0); its velocity dz/dr = ε̂ − x̂_0 comes from the schedule conversion
    `Reversed(LinearSchedule()).eps_to_velocity`, with the model called at x = (α + σ) z and at
    the τ of the same noise-to-signal ratio σ/α = r/(1 − r). `rescale=False` drops the scale
    (z = x): the wrong change of variables, for comparison. Returns the sample at the grid's end.
    """
    from .schedules import LinearSchedule, Reversed

    rf = Reversed(LinearSchedule())  # diffusion time r: alpha = 1 − r, sigma = r
    c = schedule(torch.as_tensor(tau_grid, dtype=torch.float64))
    r_grid = c.sigma_t / (c.alpha_t + c.sigma_t)

    def velocity(z, r):
        r64 = r.double()
        tau = schedule.time_at_ratio(r64 / (1 - r64))
        out = schedule(tau)
        scale = append_dims((out.alpha_t + out.sigma_t).to(z.dtype), z.ndim) if rescale else 1.0
        eps = eps_model(scale * z, tau.to(z.dtype), **cond)
        return rf.eps_to_velocity(eps, z, r)

    scale_T = (c.alpha_t[0] + c.sigma_t[0]).item() if rescale else 1.0
    z = solvers.sample(velocity, x_T / scale_T, r_grid, method="euler").x
    scale_0 = (c.alpha_t[-1] + c.sigma_t[-1]).item() if rescale else 1.0
    return z * scale_0


# --- DDIM inversion and back: the round trip of an edit ---------------------------------------------------


def ddim_round_trip(diff: GaussianDiffusion, model, x0: torch.Tensor, *, steps: int | None = None,
                    eta: float = 0.0, generator=None, **cond) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode `x0` to x_T by deterministic DDIM (`ddim_invert`), then sample back from that x_T with
    DDIM(η) over the same grid. Returns (x_T, the reconstruction). With η = 0 both runs are Euler's method
    on the probability-flow ODE over that grid, but a step evaluates ε at its start, the lower end going up
    and the upper end coming down, so the two runs' errors do not cancel: the reconstruction error is their
    discretisation error, which shrinks as `steps` grows. η > 0 adds fresh noise on the way back, which the
    latent does not hold."""
    x_T = diff.ddim_invert(model, x0, steps=steps, **cond).x
    back = diff.sample(model, x_T, steps=steps, method="ddim", eta=eta, generator=generator, **cond).x
    return x_T, back
