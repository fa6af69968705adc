"""Checks for notebook 05 (score matching): the DSM loss and Tweedie's denoiser, both for the
general Gaussian corruption x̃ = αx + σε (α = 1 is the notebook's x̃ = x + σε)."""

from __future__ import annotations

import torch

from ._core import Exercise, Mistake, away_from_one, randint


# ---------------------------------------------------------------------------- denoising score matching
def _dsm(score_fn, x, alpha, sigma, eps, *, signal=None, noise=None, target=None, at=None, half=0.5,
         reduce=None):
    """½ mean_b ||score_fn(αx + σε) + ε/σ||², each piece replaceable (the mistakes below)."""
    x_tilde = (alpha if signal is None else signal) * x + (sigma if noise is None else noise) * eps
    residual = score_fn(x_tilde if at is None else at) + (eps / sigma if target is None else target(x_tilde))
    return half * (residual.pow(2).sum(1).mean() if reduce is None else reduce(residual.pow(2)))


def reference_dsm_loss(score_fn, x: torch.Tensor, alpha: float, sigma: float, eps: torch.Tensor) -> torch.Tensor:
    """½ mean_b ||s(x̃) − ∇_x̃ log N(x̃; αx, σ²I)||² at x̃ = αx + σε."""
    x_tilde = alpha * x + sigma * eps
    conditional_score = -(x_tilde - alpha * x) / sigma**2
    return 0.5 * (score_fn(x_tilde) - conditional_score).pow(2).sum(1).mean()


def _affine_score(gen, d):
    """A random affine score model s(x) = A x + b (what a student's loss must accept)."""
    a = torch.randn(d, d, generator=gen) - 2 * torch.eye(d)
    b = torch.randn(d, generator=gen)
    return lambda x: x @ a.T + b


def _dsm_inputs(gen):
    b, d = randint(4, 12, gen), randint(2, 5, gen)  # D ≥ 2: with one coordinate a mean over it is a sum
    x = torch.randn(b, d, generator=gen)
    alpha = away_from_one(gen, high=2.0)  # α = 1 would hide a forgotten α
    sigma = away_from_one(gen, high=2.0)  # σ = 1 would hide σ² for σ
    eps = torch.randn(b, d, generator=gen)
    return (_affine_score(gen, d), x, alpha, sigma, eps)


DSM_LOSS = Exercise("dsm_loss", reference_dsm_loss, _dsm_inputs, mistakes=[
    Mistake(lambda s, x, a, sigma, eps: _dsm(s, x, a, sigma, eps, half=1.0),
            "it leaves out the factor ½ in front of the squared norm (off by a factor of 2)."),
    Mistake(lambda s, x, a, sigma, eps: _dsm(s, x, a, sigma, eps, target=lambda xt: -eps / sigma),
            "the target has the wrong sign: the conditional score −(x̃ − αx)/σ² points from x̃ back "
            "towards αx, so the model is pulled towards −ε/σ and the residual is s(x̃) + ε/σ."),
    Mistake(lambda s, x, a, sigma, eps: _dsm(s, x, a, sigma, eps, target=lambda xt: eps / sigma**2),
            "the target uses ε/σ²; with x̃ = αx + σε the conditional score −(x̃ − αx)/σ² is −ε/σ: "
            "divide ε by σ once."),
    Mistake(lambda s, x, a, sigma, eps: _dsm(s, x, a, sigma, eps, target=lambda xt: eps * sigma),
            "the target uses σ·ε; the conditional score −(x̃ − αx)/σ² is −ε/σ: divide by σ, do not multiply."),
    Mistake(lambda s, x, a, sigma, eps: _dsm(s, x, a, sigma, eps, target=lambda xt: eps),
            "it regresses the score on −ε, the noise itself; the score of N(x̃; αx, σ²I) is −ε/σ "
            "(a noise prediction ε̂ and a score differ by the factor −1/σ)."),
    Mistake(lambda s, x, a, sigma, eps: _dsm(s, x, a, sigma, eps, target=lambda xt: (xt - x) / sigma**2),
            "the target is −(x̃ − x)/σ², the score of N(x̃; x, σ²I); here x̃ = αx + σε is centred on αx, "
            "so the conditional score is −(x̃ − αx)/σ²."),
    Mistake(lambda s, x, a, sigma, eps: _dsm(s, x, a, sigma, eps, noise=sigma**2),
            "it noises with σ²·ε; σ is the standard deviation of the noise: x̃ = αx + σ·ε."),
    Mistake(lambda s, x, a, sigma, eps: _dsm(s, x, a, sigma, eps, signal=1.0),
            "it corrupts with x̃ = x + σε and leaves out the signal scale: x̃ = αx + σε."),
    Mistake(lambda s, x, a, sigma, eps: _dsm(s, x, a, sigma, eps, at=x),
            "the score model is evaluated at the clean x; it must see the noisy x̃ = αx + σ·ε."),
    Mistake(lambda s, x, a, sigma, eps: _dsm(s, x, a, sigma, eps, at=a * x),
            "the score model is evaluated at αx, without the noise; it must see x̃ = αx + σ·ε."),
    Mistake(lambda s, x, a, sigma, eps: _dsm(s, x, a, sigma, eps, reduce=torch.mean),
            "it averages over the coordinates too; sum the squared norm over each sample's coordinates, then "
            "average over the batch: .sum(dim=1).mean()."),
    Mistake(lambda s, x, a, sigma, eps: _dsm(s, x, a, sigma, eps, reduce=lambda r: r.sum()),
            "it sums over the batch too; average the per-sample squared norms over the batch, so that the "
            "loss does not grow with the batch size."),
    Mistake(lambda s, x, a, sigma, eps: sigma**2 * _dsm(s, x, a, sigma, eps),
            "it returns the σ²-weighted loss ½||σ·s(x̃) + ε||² (the noise-prediction form); the exercise asks for "
            "the unweighted DSM loss, whose target is the conditional score itself."),
    Mistake(lambda s, x, a, sigma, eps: _dsm(s, x, a, sigma, eps, target=lambda xt: a * eps / sigma),
            "the target carries a factor α; the conditional score −(x̃ − αx)/σ² depends on x̃ − αx = σε alone."),
])


def check_dsm_loss(student_fn) -> None:
    """Compare `dsm_loss(score_fn, x, alpha, sigma, eps)` with the reference on random inputs."""
    DSM_LOSS.check(student_fn)


# ---------------------------------------------------------------------------- Tweedie
def reference_tweedie_denoiser(x_tilde: torch.Tensor, score: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """Tweedie's formula for x̃ = αx + σε: α E[x | x̃] = x̃ + σ² ∇log p(x̃), p the law of x̃."""
    return (x_tilde + sigma**2 * score) / alpha


def _tweedie_inputs(gen):
    b, d = randint(3, 9, gen), randint(1, 4, gen)
    x_tilde = torch.randn(b, d, generator=gen) * 2
    score = torch.randn(b, d, generator=gen)
    return (x_tilde, score, away_from_one(gen, high=2.0), away_from_one(gen, high=2.0))


TWEEDIE_DENOISER = Exercise("tweedie_denoiser", reference_tweedie_denoiser, _tweedie_inputs, mistakes=[
    Mistake(lambda x_tilde, score, a, sigma: (x_tilde + sigma * score) / a,
            "it scales the score by σ; the score of N(x̃; αx, σ²I) is −(x̃ − αx)/σ², so the "
            "correction carries the noise variance σ²."),
    Mistake(lambda x_tilde, score, a, sigma: (x_tilde - sigma**2 * score) / a,
            "the sign of the score term is wrong: the score points towards higher density, where the clean "
            "data lies, so the denoiser adds σ²·score to x̃."),
    Mistake(lambda x_tilde, score, a, sigma: (x_tilde + score / sigma**2) / a,
            "it divides the score by σ²; the correction multiplies it by σ² (the score of the noise "
            "is −ε/σ, and σ² times it undoes the noise σ·ε)."),
    Mistake(lambda x_tilde, score, a, sigma: x_tilde + sigma**2 * score,
            "it returns E[αx | x̃], the denoised point on the scale of x̃; the clean x is that divided by α."),
    Mistake(lambda x_tilde, score, a, sigma: a * (x_tilde + sigma**2 * score),
            "it multiplies by α; x̃ carries α·x, so E[x | x̃] divides by α."),
    Mistake(lambda x_tilde, score, a, sigma: x_tilde / a + sigma**2 * score,
            "it divides only x̃ by α; the whole of x̃ + σ²·score estimates αx, so divide both terms."),
    Mistake(lambda x_tilde, score, a, sigma: x_tilde + sigma**2 * score / a,
            "it divides only the score term by α; the whole of x̃ + σ²·score estimates αx, so divide both terms."),
    Mistake(lambda x_tilde, score, a, sigma: (x_tilde + sigma**2 * score) / a**2,
            "it divides by α²; x̃ + σ²·score estimates αx, so one division by α gives x."),
    Mistake(lambda x_tilde, score, a, sigma: x_tilde / a,
            "it leaves out the score: x̃/α is the denoised point only where the score is zero; Tweedie adds a "
            "correction σ²·score to x̃ before rescaling."),
    Mistake(lambda x_tilde, score, a, sigma: x_tilde,
            "it returns x̃ unchanged; the denoiser corrects x̃ with the score and undoes the signal scale α."),
    Mistake(lambda x_tilde, score, a, sigma: sigma**2 * score / a,
            "it returns only the correction; the denoised point is x̃ plus the correction σ²·score, over α."),
])


def check_tweedie_denoiser(student_fn) -> None:
    """Compare `tweedie_denoiser(x_tilde, score, alpha, sigma)` with the reference on random inputs."""
    TWEEDIE_DENOISER.check(student_fn)
