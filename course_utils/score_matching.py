"""Scores and score matching (notebook 05).

The score of a density is s(x) = ∇_x log p(x). It ignores the normaliser: for
p = e^{−E}/Z, s = −∇E. This module holds

- `ncsn_toy()`: the NCSN toy mixture, a `mixtures.GaussianMixture` (closed-form `log_prob`,
  `score`, `sample`; for x̃ = x + σ z the noised density p_σ = p * N(0, σ²I) is
  `noised(1.0, σ)` and the exact denoiser E[x | x̃] is `posterior_mean(x̃, 1.0, σ)`);
- `autograd_score`: ∇log p of any differentiable `log_prob` by autograd;
- the four score-matching objectives, for a score model `score(x) -> (B, *D)`:
  explicit (ESM), implicit (Hyvärinen 2005, ISM), sliced (Song et al. 2019, SSM) and
  denoising (Vincent 2011, DSM); ISM's trace is `cnf.divergence_exact` (notebook 03);
- `tweedie_denoise`: E[x | x̃] = x̃ + σ² ∇log p_σ(x̃).

Shapes: x is `(B, *D)`; a noise level σ is a float or a `(B,)` tensor.
"""

from __future__ import annotations

import torch

from . import mixtures
from .cnf import divergence_exact
from .tensors import append_dims, randn_like


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


def ncsn_toy() -> mixtures.GaussianMixture:
    """The NCSN toy (Song & Ermon 2019): 0.8·N((5, 5), I) + 0.2·N((−5, −5), I)."""
    return mixtures.GaussianMixture(means=[[5.0, 5.0], [-5.0, -5.0]], stds=[1.0, 1.0], weights=[0.8, 0.2])


def autograd_score(log_prob, x: torch.Tensor) -> torch.Tensor:
    """∇_x log p(x) by autograd, for any `log_prob(x) -> (B,)` (normalised or not)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(log_prob(x).sum(), x)
    return grad


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
        return (divergence_exact(s, x) + 0.5 * _sq_norm(s)).mean()


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
