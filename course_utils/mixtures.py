"""Gaussian mixtures with exact log-density, score and samples, also after noising.

A mixture p(x) = Σ_k π_k N(x; μ_k, diag(s_k²)) pushed through the affine path
z_t = alpha_t x + sigma_t eps (eps ~ N(0, I) independent of x) stays a mixture,

    p_t(z) = Σ_k π_k N(z; alpha_t μ_k, diag(alpha_t² s_k² + sigma_t²)),

so its score ∇log p_t is known in closed form: the ground truth against which notebooks
04–07 test samplers, reverse SDEs and learned scores. So is the denoiser E[x | z_t]
(`posterior_mean`, by conjugacy), which Tweedie's formula must reproduce (notebook 05).

    gm = GaussianMixture(means=[[-2.0], [1.5]], stds=[0.3, 0.4], weights=[0.25, 0.75])
    score = gm.marginal_score(VPSchedule())      # score(x, t) = ∇log p_t(x), t: (B,)
    gm.noised(1.0, sigma).score(x)               # ∇log p_σ(x), p_σ = p * N(0, σ²I) (05, 06)
    ncsn_score = gm.marginal_score()             # score(x, sigma): t read as the noise level σ

Notation: K components, data of shape `(B, *D)`, flattened internally to F = prod(D).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .tensors import batch_time


class GaussianMixture:
    """p(x) = Σ_k π_k N(x; μ_k, diag(s_k²)) with `means: (K, *D)`, `stds: (K,)` or `(K, *D)` or a float.

    After `noised(alpha_t, sigma_t)` with `(B,)` tensors the mixture is *batched*: row b of
    the data is scored under the mixture at noise level (alpha_t[b], sigma_t[b]).
    """

    def __init__(self, means, stds, weights=None):
        means = torch.as_tensor(means, dtype=torch.get_default_dtype() if not torch.is_tensor(means) else None)
        if means.ndim < 2:
            raise ValueError(f"means must have shape (K, *D) (one row per component), got {tuple(means.shape)}.")
        k, event_shape = means.shape[0], tuple(means.shape[1:])
        stds = torch.as_tensor(stds, dtype=means.dtype, device=means.device)
        if stds.ndim == 0:
            stds = stds.expand(k)
        if stds.shape == (k,):
            stds = stds.reshape(k, *([1] * len(event_shape))).expand(means.shape)
        if stds.shape != means.shape:
            raise ValueError(f"stds must be a float, (K,) = ({k},) or (K, *D) = {tuple(means.shape)}, "
                             f"got {tuple(stds.shape)}.")
        if not (stds > 0).all():
            raise ValueError("Every component standard deviation must be positive.")
        weights = torch.ones(k) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (k,) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be {k} non-negative numbers with a positive sum, got {weights.tolist()}.")
        self._init(means.flatten(1)[:, :, None], stds.flatten(1)[:, :, None],
                   torch.log(weights / weights.sum()).to(means.dtype).to(means.device), event_shape)

    # Internal layout: mu, std of shape (K, F, B_m) with B_m = 1, or B when batched (one
    # noise level per data row), so that sums over F and K run over leading dims (fast
    # for the small K and F of 2D toys, where reductions over a last dim of size 2 are slow).
    def _init(self, mu, std, log_weights, event_shape):
        self._mu, self._std, self.log_weights, self.event_shape = mu, std, log_weights, event_shape
        return self

    @classmethod
    def _make(cls, mu, std, log_weights, event_shape):
        return cls.__new__(cls)._init(mu, std, log_weights, event_shape)

    # ------------------------------------------------------------------ properties
    @property
    def batched(self) -> bool:
        return self._mu.shape[-1] > 1

    @property
    def num_components(self) -> int:
        return self.log_weights.shape[0]

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    def _unflatten(self, v: torch.Tensor) -> torch.Tensor:
        if self.batched:  # (K, F, B) -> (B, K, *D)
            return v.permute(2, 0, 1).reshape(v.shape[2], v.shape[0], *self.event_shape)
        return v[..., 0].reshape(v.shape[0], *self.event_shape)

    @property
    def means(self) -> torch.Tensor:
        """(K, *D), or (B, K, *D) when batched."""
        return self._unflatten(self._mu)

    @property
    def stds(self) -> torch.Tensor:
        return self._unflatten(self._std)

    def mean(self) -> torch.Tensor:
        """E[x] = Σ_k π_k μ_k, shape (*D) (or (B, *D) when batched)."""
        m = (self.weights.to(self._mu)[:, None, None] * self._mu).sum(0)  # (F, B_m)
        return m.T.reshape(-1, *self.event_shape) if self.batched else m[:, 0].reshape(self.event_shape)

    # ------------------------------------------------------------------ densities
    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, *D) -> (F, B)."""
        if x.ndim < 2 or tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.event_shape))}) for this "
                             f"mixture, got {tuple(x.shape)}.")
        if self.batched and x.shape[0] != self._mu.shape[-1]:
            raise ValueError(f"This mixture was noised with {self._mu.shape[-1]} noise levels, one per "
                             f"row, but x has {x.shape[0]} rows.")
        return x.flatten(1).T

    def _component_terms(self, x: torch.Tensor):
        """diff = x − μ_k: (K, F, B), var: (K, F, B_m), log π_k + log N(x; μ_k, s_k²): (K, B)."""
        xf = self._flat(x)
        mu, std = self._mu.to(xf), self._std.to(xf)
        diff = xf[None] - mu
        var = std**2
        log_n = (-0.5 * (diff**2 / var) - torch.log(std)).sum(1) - 0.5 * xf.shape[0] * math.log(2 * math.pi)
        return diff, var, self.log_weights.to(xf)[:, None] + log_n

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = logsumexp_k [log π_k + log N(x; μ_k, diag s_k²)], `x: (B, *D) -> (B,)`."""
        return torch.logsumexp(self._component_terms(x)[2], dim=0)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """r_k(x) = p(k | x), shape (B, K): which mode each point belongs to."""
        return torch.softmax(self._component_terms(x)[2], dim=0).T

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """∇log p(x) = Σ_k r_k(x) (μ_k − x) / s_k², shape like `x`."""
        diff, var, logits = self._component_terms(x)
        r = torch.softmax(logits, dim=0)  # (K, B)
        return (r[:, None] * (-diff / var)).sum(0).T.reshape(x.shape)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` draws, shape (n, *D): pick k ~ π, then x = μ_k + s_k · z."""
        if self.batched:
            raise ValueError("Sample from an un-noised mixture (or one noised with scalar alpha_t, sigma_t).")
        if not isinstance(n, int) or n <= 0:
            raise ValueError(f"Number of samples must be a positive integer, got {n!r}.")
        mu, std = self._mu[..., 0], self._std[..., 0]  # (K, F)
        dev = generator.device if generator is not None else mu.device
        k = torch.multinomial(self.weights.to(dev), n, replacement=True, generator=generator)
        z = torch.randn(n, mu.shape[1], generator=generator, device=dev, dtype=mu.dtype)
        k, z = k.to(mu.device), z.to(mu.device)
        return (mu[k] + std[k] * z).reshape(n, *self.event_shape)

    # ------------------------------------------------------------------ noising
    def _levels(self, alpha_t, sigma_t) -> tuple[torch.Tensor, torch.Tensor]:
        """alpha_t, sigma_t as tensors of one shape, () or (B,) (a float is broadcast against a (B,))."""
        if self.batched:
            raise ValueError("This mixture is already noised with one level per row; noise the original.")
        alpha_t = torch.as_tensor(alpha_t, dtype=self._mu.dtype, device=self._mu.device)
        sigma_t = torch.as_tensor(sigma_t, dtype=self._mu.dtype, device=self._mu.device)
        if alpha_t.ndim > 1 or sigma_t.ndim > 1 or (alpha_t.ndim == sigma_t.ndim == 1
                                                    and alpha_t.shape != sigma_t.shape):
            raise ValueError(f"alpha_t and sigma_t must be scalars or (B,) tensors of one length, got "
                             f"{tuple(alpha_t.shape)} and {tuple(sigma_t.shape)}.")
        if (sigma_t < 0).any():
            raise ValueError("The noise level sigma_t must be non-negative.")
        return torch.broadcast_tensors(alpha_t, sigma_t)

    def noised(self, alpha_t, sigma_t) -> "GaussianMixture":
        """The law of alpha_t x + sigma_t eps: means alpha_t μ_k, stds √(alpha_t² s_k² + sigma_t²).

        Floats or 0-d tensors give a mixture; a `(B,)` tensor (either one) a batched one, one level
        per row. `noised(1.0, sigma)` is p_σ = p * N(0, σ²I), the density of x + σ eps.
        """
        alpha_t, sigma_t = self._levels(alpha_t, sigma_t)
        mu = alpha_t * self._mu  # (K, F, 1) * (B,) -> (K, F, B)
        std = torch.sqrt(alpha_t**2 * self._std**2 + sigma_t**2)
        return GaussianMixture._make(mu, std, self.log_weights, self.event_shape)

    def posterior_mean(self, z: torch.Tensor, alpha_t, sigma_t) -> torch.Tensor:
        """The denoiser E[x | alpha_t x + sigma_t eps = z], by conjugacy, shape like `z`:

            Σ_k r_k(z) (μ_k + alpha_t s_k² / (alpha_t² s_k² + sigma_t²) · (z − alpha_t μ_k)),

        r_k the responsibilities under the noised mixture. Tweedie's formula gives the same,
        (z + sigma_t² ∇log p_t(z)) / alpha_t. Levels as in `noised`.
        """
        alpha_t, _ = self._levels(alpha_t, sigma_t)
        diff, var, logits = self.noised(alpha_t, sigma_t)._component_terms(z)  # z − αμ_k, α²s_k² + σ²
        r = torch.softmax(logits, dim=0)  # (K, B)
        mu, s2 = self._mu.to(diff), self._std.to(diff) ** 2
        post = mu + alpha_t.to(diff) * s2 / var * diff  # E[x | z, k]: (K, F, B)
        return (r[:, None] * post).sum(0).T.reshape(z.shape)

    def marginal(self, schedule, t) -> "GaussianMixture":
        """p_t for the path z_t = alpha_t x + sigma_t eps of `schedule` (course_utils.schedules).

        With `schedule=None`, t is the noise level itself: alpha_t = 1, sigma_t = t (NCSN's σ, Karras's t).
        """
        t = torch.as_tensor(t, dtype=self._mu.dtype, device=self._mu.device)
        if schedule is None:
            return self.noised(1.0, t)
        out = schedule(t.reshape(-1))
        alpha_t, sigma_t = out.alpha_t, out.sigma_t
        if t.ndim == 0:
            alpha_t, sigma_t = alpha_t[0], sigma_t[0]
        return self.noised(alpha_t, sigma_t)

    def marginal_score(self, schedule=None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The exact time-dependent score `score(x, t) = ∇log p_t(x)`, `t: (B,)` or a float.

        Without a schedule, `score(x, sigma)` is ∇log p_σ(x) for x + σ eps: the noise-conditional
        score that annealed Langevin (notebook 06) calls with `sigma: (B,)`.
        """

        def score(x: torch.Tensor, t) -> torch.Tensor:
            return self.marginal(schedule, batch_time(t, x)).score(x)

        return score

    def marginal_log_prob(self, schedule=None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """`log_prob(x, t) = log p_t(x)`, `t: (B,)` or a float (without a schedule, t is σ)."""

        def log_prob(x: torch.Tensor, t) -> torch.Tensor:
            return self.marginal(schedule, batch_time(t, x)).log_prob(x)

        return log_prob

    def __repr__(self) -> str:
        shape = "batched " if self.batched else ""
        return f"GaussianMixture({shape}K={self.num_components}, event_shape={self.event_shape})"


def eight_gaussians() -> GaussianMixture:
    """The exact mixture behind `data.sample_toy("8gaussians")`, standardised the same way.

    Raw: 8 equally weighted N(2(cos θ_k, sin θ_k), 0.1² I), θ_k = 2πk/8; then
    x ↦ (x − m) / s with the data module's fixed per-coordinate (m, s).
    """
    from .data import standardisation

    m, s = standardisation("8gaussians")
    angle = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    centres = 2.0 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    means = ((centres - m.double()) / s.double()).float()
    stds = (0.1 / s.double()).expand(8, 2).float()
    return GaussianMixture(means, stds)
