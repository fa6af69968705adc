"""Checks for notebook 05 (score matching): the DSM loss and Tweedie's denoiser."""

from __future__ import annotations

import torch

from ._core import Exercise, Mistake, away_from_one, randint


# ---------------------------------------------------------------------------- denoising score matching
def _dsm(score_fn, x, sigma, eps, *, noise=None, target=None, half=0.5, reduce=None):
    """½ mean_b ||score_fn(x + σ ε) + ε/σ||², each piece replaceable (the mistakes below)."""
    x_tilde = x + (sigma if noise is None else noise) * eps
    residual = score_fn(x_tilde) + (eps / sigma if target is None else target)
    return half * (residual.pow(2).sum(1).mean() if reduce is None else reduce(residual.pow(2)))


def reference_dsm_loss(score_fn, x: torch.Tensor, sigma: float, eps: torch.Tensor) -> torch.Tensor:
    """½ mean_b ||s(x + σ ε) + ε/σ||²: the score of N(x̃; x, σ²I) at x̃ = x + σε is −ε/σ."""
    return 0.5 * (score_fn(x + sigma * eps) + eps / sigma).pow(2).sum(1).mean()


def _affine_score(gen, d):
    """A random affine score model s(x) = A x + b (what a student's loss must accept)."""
    a = torch.randn(d, d, generator=gen) - 2 * torch.eye(d)
    b = torch.randn(d, generator=gen)
    return lambda x: x @ a.T + b


def _dsm_inputs(gen):
    b, d = randint(4, 12, gen), randint(2, 5, gen)  # D ≥ 2: with one coordinate a mean over it is a sum
    x = torch.randn(b, d, generator=gen)
    sigma = away_from_one(gen, high=2.0)  # σ = 1 would hide σ² for σ
    eps = torch.randn(b, d, generator=gen)
    return (_affine_score(gen, d), x, sigma, eps)


DSM_LOSS = Exercise("dsm_loss", reference_dsm_loss, _dsm_inputs, mistakes=[
    Mistake(lambda s, x, sigma, eps: _dsm(s, x, sigma, eps, half=1.0),
            "it leaves out the factor ½ in front of the squared norm (off by a factor of 2)."),
    Mistake(lambda s, x, sigma, eps: _dsm(s, x, sigma, eps, target=-eps / sigma),
            "the target has the wrong sign: the score of N(x̃; x, σ²I) is −(x̃ − x)/σ² = −ε/σ, so the "
            "residual is s(x̃) + ε/σ."),
    Mistake(lambda s, x, sigma, eps: _dsm(s, x, sigma, eps, target=eps / sigma**2),
            "the target uses ε/σ²; with x̃ = x + σε the score −(x̃ − x)/σ² is −ε/σ: divide ε by σ once."),
    Mistake(lambda s, x, sigma, eps: _dsm(s, x, sigma, eps, noise=sigma**2),
            "it noises with σ²·ε; σ is the standard deviation of the noise: x̃ = x + σ·ε."),
    Mistake(lambda s, x, sigma, eps: _dsm(s, x, sigma, eps, noise=0.0),
            "the score model is evaluated at the clean x; it must see the noisy x̃ = x + σ·ε."),
    Mistake(lambda s, x, sigma, eps: _dsm(s, x, sigma, eps, reduce=torch.mean),
            "it averages over the coordinates too; sum the squared norm over each sample's coordinates, then "
            "average over the batch: .sum(dim=1).mean()."),
])


def check_dsm_loss(student_fn) -> None:
    """dsm_loss(score_fn, x, sigma, eps) = ½ mean_b ||score_fn(x + σ eps) + eps/σ||²."""
    DSM_LOSS.check(student_fn)


# ---------------------------------------------------------------------------- Tweedie
def reference_tweedie_denoiser(x_tilde: torch.Tensor, score: torch.Tensor, sigma: float) -> torch.Tensor:
    """Tweedie's formula E[x | x̃] = x̃ + σ² ∇log p_σ(x̃)."""
    return x_tilde + sigma**2 * score


def _tweedie_inputs(gen):
    b, d = randint(3, 9, gen), randint(1, 4, gen)
    x_tilde = torch.randn(b, d, generator=gen) * 2
    score = torch.randn(b, d, generator=gen)
    return (x_tilde, score, away_from_one(gen, high=2.0))


TWEEDIE_DENOISER = Exercise("tweedie_denoiser", reference_tweedie_denoiser, _tweedie_inputs, mistakes=[
    Mistake(lambda x_tilde, score, sigma: x_tilde + sigma * score,
            "it scales the score by σ; Tweedie's formula scales it by the "
            "noise variance σ²: x̃ + σ²·score."),
    Mistake(lambda x_tilde, score, sigma: x_tilde - sigma**2 * score,
            "the sign of the score term is wrong: the score points towards higher density, where the clean "
            "data lies, so the denoiser adds it: x̃ + σ²·score."),
    Mistake(lambda x_tilde, score, sigma: x_tilde + score / sigma**2,
            "it divides the score by σ²; Tweedie's formula multiplies: x̃ + σ²·score (the score of the noise "
            "is −ε/σ, so σ²·score undoes the noise σ·ε)."),
    Mistake(lambda x_tilde, score, sigma: sigma**2 * score,
            "it returns only the correction σ²·score; the denoised point is x̃ plus that correction."),
])


def check_tweedie_denoiser(student_fn) -> None:
    """tweedie_denoiser(x_tilde, score, sigma) = x̃ + σ² score."""
    TWEEDIE_DENOISER.check(student_fn)
