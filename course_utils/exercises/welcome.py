"""Checks for notebook 00 (the warm-up)."""

from __future__ import annotations

import math

import torch

from ._core import Exercise, Mistake, randint, uniform

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def reference_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag(std²)) summed over the last dim: (B, D) -> (B,)."""
    z = (x - mean) / std
    return (-0.5 * z.pow(2) - torch.log(std) - HALF_LOG_2PI).sum(-1)


def _gaussian_inputs(gen):
    b, d = randint(3, 9, gen), randint(2, 6, gen)  # D ≥ 2: with one coordinate a mean is a sum
    x = torch.randn(b, d, generator=gen) * 2
    mean = torch.randn(d, generator=gen)
    std = torch.rand(d, generator=gen) * 2 + 0.3
    return (x, mean, std)


def _per_coordinate(x, mean, std, z=None, log_std=None, const=HALF_LOG_2PI, square=0.5):
    """The log-density of each coordinate, (B, D), with one of its terms optionally changed."""
    z = (x - mean) / std if z is None else z
    log_std = torch.log(std) if log_std is None else log_std
    return -square * z.pow(2) - log_std - const


GAUSSIAN_LOG_PROB = Exercise(
    "gaussian_log_prob", reference_gaussian_log_prob, _gaussian_inputs, mistakes=[
        Mistake(lambda x, m, s: _per_coordinate(x, m, s),
                "it returns the log-density of each coordinate, shape (B, D); a diagonal Gaussian's "
                "log-density is their sum over the last dimension, .sum(-1)."),
        Mistake(lambda x, m, s: _per_coordinate(x, m, s).mean(-1),
                "it averages the coordinates' log-densities; independent coordinates multiply, so their "
                "logs add: .sum(-1), not .mean(-1)."),
        Mistake(lambda x, m, s: _per_coordinate(x, m, s, log_std=0).sum(-1),
                "the −log σ term is missing: N(x; μ, σ²) = exp(−z²/2) / (σ√(2π)) with z = (x − μ)/σ."),
        Mistake(lambda x, m, s: _per_coordinate(x, m, s, const=0).sum(-1),
                "the normalising constant −½·log 2π (per coordinate) is missing."),
        Mistake(lambda x, m, s: _per_coordinate(x, m, s, z=(x - m) / s**2).sum(-1),
                "it standardises with the variance, (x − μ)/σ²; z = (x − μ)/σ uses the standard deviation."),
        Mistake(lambda x, m, s: _per_coordinate(x, m, s, square=1.0).sum(-1),
                "the exponent is −z²/2, not −z²."),
    ])


def check_gaussian_log_prob(student_fn) -> None:
    """The warm-up: log-density of a diagonal Gaussian for a batch of points."""
    GAUSSIAN_LOG_PROB.check(student_fn)
