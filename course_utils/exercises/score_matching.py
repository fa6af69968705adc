"""Checks for notebook 05 (score matching): the DSM loss and Tweedie's denoiser."""

from __future__ import annotations

import torch

from ..score_matching import denoising_score_matching_loss, tweedie_denoise
from ._core import check


def _affine_score(gen, d):
    """A random affine score model s(x) = A x + b (what a student's loss must accept)."""
    a = torch.randn(d, d, generator=gen) - 2 * torch.eye(d)
    b = torch.randn(d, generator=gen)
    return lambda x: x @ a.T + b


def check_dsm_loss(student_fn) -> None:
    """dsm_loss(score_fn, x, sigma, eps) = ½ mean_b ||score_fn(x + σ eps) + eps/σ||²."""

    def inputs(gen):
        b, d = int(torch.randint(4, 12, (1,), generator=gen)), int(torch.randint(1, 4, (1,), generator=gen))
        x = torch.randn(b, d, generator=gen)
        sigma = float(torch.rand(1, generator=gen)) * 1.5 + 0.2
        eps = torch.randn(b, d, generator=gen)
        return (_affine_score(gen, d), x, sigma, eps)

    check("dsm_loss", student_fn, denoising_score_matching_loss, inputs)


def check_tweedie_denoiser(student_fn) -> None:
    """tweedie_denoiser(x_tilde, score, sigma) = x̃ + σ² score."""

    def inputs(gen):
        b, d = int(torch.randint(3, 9, (1,), generator=gen)), int(torch.randint(1, 4, (1,), generator=gen))
        x_tilde = torch.randn(b, d, generator=gen) * 2
        score = torch.randn(b, d, generator=gen)
        sigma = float(torch.rand(1, generator=gen)) * 1.5 + 0.3
        return (x_tilde, score, sigma)

    check("tweedie_denoiser", student_fn, tweedie_denoise, inputs)
