"""Scores and score matching (notebook 05).

The score of a density is s(x) = ∇_x log p(x). It ignores the normaliser: for
p = e^{−E}/Z, s = −∇E. This module holds

- `GaussianMixture`: an analytic isotropic mixture with closed-form `log_prob`, `score`,
  `sample`, and for Gaussian-noised data x̃ = x + σ z the noised density p_σ = p * N(0, σ²I)
  (`sigma=` argument) and the exact denoiser E[x | x̃] (`posterior_mean`);
- `autograd_score`: ∇log p of any differentiable `log_prob` by autograd;
- the four score-matching objectives, for a score model `score(x) -> (B, *D)`:
  explicit (ESM), implicit (Hyvärinen 2005, ISM), sliced (Song et al. 2019, SSM) and
  denoising (Vincent 2011, DSM);
- `tweedie_denoise`: E[x | x̃] = x̃ + σ² ∇log p_σ(x̃).

Shapes: x is `(B, *D)`; a noise level σ is a float or a `(B,)` tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .tensors import append_dims
from .tensors import randn_like


def _sigma_like(sigma, x: torch.Tensor) -> torch.Tensor:
    """σ as a `(B, 1, ...)` tensor broadcastable against `x: (B, *D)`; checks σ ≥ 0."""
    sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a float or have shape (B,) = ({x.shape[0]},), got {tuple(sigma.shape)}.")
    if (sigma < 0).any():
        raise ValueError("The noise level sigma must be non-negative.")
    return append_dims(sigma, x.ndim)


@dataclass
class GaussianMixture:
    """p(x) = Σ_k w_k N(x; μ_k, s_k² I): weights `(K,)`, means `(K, D)`, stds `(K,)`.

    With `sigma=σ` the methods describe the noised density p_σ = p * N(0, σ²I), which is the
    same mixture with variances s_k² + σ² (a float σ, or one σ per point as a `(B,)` tensor).
    """

    weights: torch.Tensor
    means: torch.Tensor
    stds: torch.Tensor

    def __post_init__(self):
        self.weights = torch.as_tensor(self.weights, dtype=torch.float64)
        self.means = torch.as_tensor(self.means, dtype=torch.float64)
        self.stds = torch.as_tensor(self.stds, dtype=torch.float64)
        k = self.weights.shape[0] if self.weights.ndim == 1 else -1
        if self.means.ndim != 2 or self.means.shape[0] != k or self.stds.shape != (k,):
            raise ValueError(
                "A GaussianMixture needs weights (K,), means (K, D) and stds (K,); got "
                f"{tuple(self.weights.shape)}, {tuple(self.means.shape)}, {tuple(self.stds.shape)}."
            )
        if (self.weights <= 0).any() or abs(float(self.weights.sum()) - 1) > 1e-6:
            raise ValueError(f"Mixture weights must be positive and sum to 1, got {self.weights.tolist()}.")
        if (self.stds <= 0).any():
            raise ValueError("Mixture standard deviations must be positive.")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _check(self, x: torch.Tensor):
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"Expected points of shape (B, {self.dim}), got {tuple(x.shape)}.")

    def _log_joint(self, x, sigma):
        """log w_k + log N(x; μ_k, (s_k² + σ²) I) as `(B, K)`, and the variances `(B, K)`."""
        self._check(x)
        mu, s, w = (v.to(x) for v in (self.means, self.stds, self.weights))
        var = s**2 + _sigma_like(sigma, x) ** 2  # (B, K)
        sq = (x[:, None, :] - mu[None]).pow(2).sum(-1)  # (B, K); not cdist, which loses digits far out
        log_n = -0.5 * sq / var - 0.5 * self.dim * torch.log(2 * math.pi * var)
        return torch.log(w) + log_n, var

    def log_prob(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """log p_σ(x) for `x: (B, D)` -> `(B,)`."""
        return torch.logsumexp(self._log_joint(x, sigma)[0], dim=1)

    def responsibilities(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """r_k(x) = P(component k | x) under p_σ, `(B, K)`."""
        return torch.softmax(self._log_joint(x, sigma)[0], dim=1)

    def score(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """∇log p_σ(x) = Σ_k r_k(x) (μ_k − x) / (s_k² + σ²), `(B, D)`."""
        log_joint, var = self._log_joint(x, sigma)
        r = torch.softmax(log_joint, dim=1)
        mu = self.means.to(x)
        return (r / var) @ mu - (r / var).sum(1, keepdim=True) * x

    def posterior_mean(self, x_tilde: torch.Tensor, sigma) -> torch.Tensor:
        """E[x | x̃] for x̃ = x + σ z: Σ_k r_k(x̃) (μ_k + s_k²/(s_k² + σ²) (x̃ − μ_k)), by conjugacy."""
        log_joint, var = self._log_joint(x_tilde, sigma)
        r = torch.softmax(log_joint, dim=1)
        shrink = self.stds.to(x_tilde) ** 2 / var  # (B, K)
        mu = self.means.to(x_tilde)
        return (r * (1 - shrink)) @ mu + (r * shrink).sum(1, keepdim=True) * x_tilde

    def sample(self, n: int, *, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """`n` draws, `(n, D)`: pick k ~ w, then μ_k + s_k z."""
        if not isinstance(n, int) or n <= 0:
            raise ValueError(f"Number of samples must be a positive integer, got {n!r}.")
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[k] + self.stds[k, None] * z).to(dtype)


def ncsn_toy() -> GaussianMixture:
    """The NCSN toy (Song & Ermon 2019): 0.8·N((5, 5), I) + 0.2·N((−5, −5), I)."""
    return GaussianMixture([0.8, 0.2], [[5.0, 5.0], [-5.0, -5.0]], [1.0, 1.0])


def autograd_score(log_prob, x: torch.Tensor) -> torch.Tensor:
    """∇_x log p(x) by autograd, for any `log_prob(x) -> (B,)` (normalised or not)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(log_prob(x).sum(), x)
    return grad


def divergence(f_x: torch.Tensor, x: torch.Tensor, *, create_graph: bool = True) -> torch.Tensor:
    """Exact ∇·f = tr(∂f/∂x), `(B,)`, for `f_x = f(x)` computed from `x: (B, *D)` (D backward passes)."""
    f_flat = f_x.flatten(1)
    div = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    for i in range(f_flat.shape[1]):  # one pass per dimension: cheap in 2D, the reason ISM does not scale
        (grad,) = torch.autograd.grad(f_flat[:, i].sum(), x, create_graph=create_graph)
        div = div + grad.flatten(1)[:, i]
    return div


def _sq_norm(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).pow(2).sum(1)


def explicit_score_matching_loss(score, x: torch.Tensor, target_score) -> torch.Tensor:
    """ESM: ½ E ||s_θ(x) − ∇log p(x)||², with the true score `target_score(x)` known."""
    return 0.5 * _sq_norm(score(x) - target_score(x)).mean()


def implicit_score_matching_loss(score, x: torch.Tensor) -> torch.Tensor:
    """ISM (Hyvärinen 2005): E[ tr ∇_x s_θ(x) + ½ ||s_θ(x)||² ] = ESM − ½ E||∇log p||²."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        s = score(x)
        return (divergence(s, x) + 0.5 * _sq_norm(s)).mean()


def sliced_score_matching_loss(score, x: torch.Tensor, *, n_projections: int = 1,
                               generator: torch.Generator | None = None,
                               variance_reduction: bool = False) -> torch.Tensor:
    """SSM (Song et al. 2019): E_v E_x[ vᵀ ∇_x s_θ(x) v + ½ (vᵀ s_θ(x))² ], v ~ N(0, I).

    vᵀ(∇s)v needs one backward pass whatever the dimension. `variance_reduction=True`
    replaces ½ (vᵀs)² by its mean over v, ½ ||s||² (SSM-VR). Both have ISM's expectation.
    """
    if n_projections < 1:
        raise ValueError(f"n_projections must be at least 1, got {n_projections}.")
    with torch.enable_grad():
        x = x.detach().repeat_interleave(n_projections, dim=0).requires_grad_(True)
        s = score(x)
        v = randn_like(x, generator)
        sv = (s * v).flatten(1).sum(1)
        (grad_sv,) = torch.autograd.grad(sv.sum(), x, create_graph=True)
        vjv = (grad_sv * v).flatten(1).sum(1)
        second = 0.5 * _sq_norm(s) if variance_reduction else 0.5 * sv**2
        return (vjv + second).mean()


def denoising_score_matching_loss(score, x: torch.Tensor, sigma, eps: torch.Tensor | None = None,
                                  *, generator: torch.Generator | None = None) -> torch.Tensor:
    """DSM (Vincent 2011): ½ E ||s_θ(x̃) + (x̃ − x)/σ²||², x̃ = x + σ ε, ε ~ N(0, I).

    The target −(x̃ − x)/σ² = −ε/σ is the score of N(x̃; x, σ²I); the minimiser is ∇log p_σ.
    """
    sig = _sigma_like(sigma, x)
    if (sig == 0).any():
        raise ValueError("DSM needs a positive noise level sigma.")
    eps = randn_like(x, generator) if eps is None else eps
    if eps.shape != x.shape:
        raise ValueError(f"eps must have the shape of x, {tuple(x.shape)}, got {tuple(eps.shape)}.")
    x_tilde = x + sig * eps
    return 0.5 * _sq_norm(score(x_tilde) + eps / sig).mean()


def tweedie_denoise(x_tilde: torch.Tensor, score: torch.Tensor, sigma) -> torch.Tensor:
    """Tweedie's formula: E[x | x̃] = x̃ + σ² ∇log p_σ(x̃), for x̃ = x + σ z."""
    if score.shape != x_tilde.shape:
        raise ValueError(f"score must have the shape of x_tilde, {tuple(x_tilde.shape)}, got {tuple(score.shape)}.")
    return x_tilde + _sigma_like(sigma, x_tilde) ** 2 * score
