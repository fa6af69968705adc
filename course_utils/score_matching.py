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
- `dsm_minimum`: the smallest DSM loss, ½ (D/σ² − E||∇log p_σ||²), from the density alone;
- `tweedie_denoise`: E[x | x̃] = x̃ + σ² ∇log p_σ(x̃) (for x̃ = αx + σε: (x̃ + σ² ∇log p(x̃))/α);
- `rare_region_error` and `poor_where_rare`: the relative error of a score model where the data
  is (draws of p_σ) and between the modes of a mixture, where it is not (Song & Ermon 2019, §3.2).

Shapes: x is `(B, *D)`; a noise level σ is a float or a `(B,)` tensor.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import mixtures
from .cnf import divergence_exact
from .tensors import append_dims, randn_like


def _sigma_like(sigma, x: torch.Tensor, name: str = "sigma") -> torch.Tensor:
    """σ (or α) as a `(B, 1, ...)` tensor broadcastable against `x: (B, *D)`; checks it is ≥ 0."""
    sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"{name} must be a float or have shape (B,) = ({x.shape[0]},), got {tuple(sigma.shape)}.")
    if (sigma < 0).any():
        what = "The noise level sigma" if name == "sigma" else f"The signal scale {name}"
        raise ValueError(f"{what} must be non-negative.")
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
                                  *, alpha=1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """DSM (Vincent 2011): ½ E ||s_θ(x̃) + (x̃ − αx)/σ²||², x̃ = αx + σ ε, ε ~ N(0, I).

    The target −(x̃ − αx)/σ² = −ε/σ is the score of N(x̃; αx, σ²I); the minimiser is the score of
    the law of x̃ (∇log p_σ when α = 1, the default). `alpha`: a float or a `(B,)` tensor.
    """
    sig = _sigma_like(sigma, x)
    if (sig == 0).any():
        raise ValueError("DSM needs a positive noise level sigma.")
    eps = randn_like(x, generator) if eps is None else eps
    if eps.shape != x.shape:
        raise ValueError(f"eps must have the shape of x, {tuple(x.shape)}, got {tuple(eps.shape)}.")
    x_tilde = _sigma_like(alpha, x, "alpha") * x + sig * eps
    return 0.5 * _sq_norm(score(x_tilde) + eps / sig).mean()


def dsm_minimum(log_prob, x_tilde: torch.Tensor, sigma: float) -> torch.Tensor:
    """The smallest DSM loss at noise level σ, ½ (D/σ² − E||∇log p_σ||²), from `log_prob` of p_σ alone.

    E||∇log p_σ||² is computed as −E[Δ log p_σ(x̃)] (integration by parts, as in ISM) over the
    draws `x_tilde` of p_σ, with the Laplacian of `log_prob` by autograd: no score model enters, so
    the DSM loss of a candidate score can be compared with it (only ∇log p_σ attains it).
    """
    if sigma <= 0:
        raise ValueError("DSM needs a positive noise level sigma.")
    with torch.enable_grad():
        x = x_tilde.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(log_prob(x).sum(), x, create_graph=True)
        laplacian = divergence_exact(grad, x, create_graph=False)
    dim = x_tilde[0].numel()
    return 0.5 * (dim / sigma**2 + laplacian.detach().mean())

def tweedie_denoise(x_tilde: torch.Tensor, score: torch.Tensor, sigma, *, alpha=1.0) -> torch.Tensor:
    """Tweedie's formula: E[x | x̃] = (x̃ + σ² ∇log p(x̃)) / α for x̃ = αx + σz, p the law of x̃.

    With α = 1 (the default), E[x | x̃] = x̃ + σ² ∇log p_σ(x̃). `alpha`: a float or a `(B,)` tensor.
    """
    if score.shape != x_tilde.shape:
        raise ValueError(f"score must have the shape of x_tilde, {tuple(x_tilde.shape)}, got {tuple(score.shape)}.")
    alpha = _sigma_like(alpha, x_tilde, "alpha")
    if (alpha == 0).any():
        raise ValueError("Tweedie's formula needs a positive signal scale alpha.")
    return (x_tilde + _sigma_like(sigma, x_tilde) ** 2 * score) / alpha


# ---------------------------------------------------------------------------- where data is rare
class RegionErrors(NamedTuple):
    """Relative errors ||s_θ − s|| / ||s|| (root-mean-square ratios) of a score model, and the
    fractions of points where it points the wrong way (cos(s_θ, s) < 0): `dense` on draws of
    p_σ (where the data is), `rare` between the modes (where it is not)."""

    dense: float
    rare: float
    wrong_way_dense: float
    wrong_way_rare: float


def between_modes(mixture: mixtures.GaussianMixture, n: int, *, span=(0.35, 0.65), width: float = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """`n` points between the modes: μ_j + u (μ_k − μ_j) + width · z⊥ for a random pair j < k of
    components, u ~ U(span) and z⊥ a standard normal with its component along μ_k − μ_j removed
    (so that no point comes closer to a mode than the segment allows). Shape `(n, *D)`."""
    mu = mixture.means.flatten(1)
    k = mu.shape[0]
    if k < 2:
        raise ValueError("Points between modes need a mixture of at least two components.")
    if not 0 <= span[0] <= span[1] <= 1:
        raise ValueError(f"span must satisfy 0 ≤ low ≤ high ≤ 1, got {span}.")
    dev = generator.device if generator is not None else mu.device
    pairs = torch.combinations(torch.arange(k), 2)
    pick = pairs[torch.randint(len(pairs), (n,), generator=generator, device=dev).cpu()]
    u = span[0] + (span[1] - span[0]) * torch.rand(n, 1, generator=generator, device=dev, dtype=mu.dtype)
    z = torch.randn(n, mu.shape[1], generator=generator, device=dev, dtype=mu.dtype)
    u, z = u.to(mu.device), z.to(mu.device)
    start, gap = mu[pick[:, 0]], mu[pick[:, 1]] - mu[pick[:, 0]]
    direction = gap / gap.norm(dim=1, keepdim=True).clamp_min(1e-12)
    z = z - (z * direction).sum(1, keepdim=True) * direction
    return (start + u * gap + width * z).reshape(n, *mixture.event_shape)


def relative_score_error(model: torch.Tensor, true: torch.Tensor) -> float:
    """RMS relative error sqrt(E||s_θ − s||² / E||s||²) of scores `model`, `true`: (B, *D)."""
    if model.shape != true.shape:
        raise ValueError(f"relative_score_error needs scores of one shape, got {tuple(model.shape)} "
                         f"and {tuple(true.shape)}.")
    model, true = model.flatten(1).double(), true.flatten(1).double()
    return ((model - true).pow(2).sum() / true.pow(2).sum()).sqrt().item()


def _relative(model: torch.Tensor, true: torch.Tensor) -> tuple[float, float]:
    wrong = ((model.flatten(1) * true.flatten(1)).sum(1) < 0).double().mean().item()
    return relative_score_error(model, true), wrong


def rare_region_error(score_fn, mixture: mixtures.GaussianMixture, sigma: float = 0.0, *, n: int = 2000,
                      span=(0.35, 0.65), width: float = 1.0,
                      generator: torch.Generator | None = None) -> RegionErrors:
    """How wrong `score_fn(x) -> (B, *D)` is, relative to the exact ∇log p_σ of `mixture`
    (p_σ = p * N(0, σ²I)), where the data is and where it is not.

    Dense: `n` draws of p_σ. Rare: `n` points between the modes (`between_modes`). Each relative
    error is sqrt(Σ||s_θ − s||² / Σ||s||²) over its points, so that a score model scaled by c
    everywhere has |1 − c| in both regions, whatever the size of the true score there.
    """
    noised = mixture.noised(1.0, sigma)
    dense = noised.sample(n, generator=generator)
    rare = between_modes(mixture, n, span=span, width=width, generator=generator)
    with torch.no_grad():
        d = _relative(score_fn(dense), noised.score(dense))
        r = _relative(score_fn(rare), noised.score(rare))
    return RegionErrors(d[0], r[0], d[1], r[1])


def poor_where_rare(errors: RegionErrors, *, dense_max: float = 0.25, rare_min: float = 0.5,
                    ratio: float = 3.0) -> bool:
    """True when a score model is accurate where the data is and poor between the modes:
    relative error below `dense_max` on the data, and above both `rare_min` and `ratio` times
    the dense error between the modes. A model uniformly good (the exact score), uniformly off
    by a factor (c × the exact score: the same error everywhere) or uniformly bad (an untrained
    network) does not qualify."""
    return errors.dense < dense_max and errors.rare > max(rare_min, ratio * errors.dense)
