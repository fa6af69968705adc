"""Checks for notebook 00 (the warm-up)."""

from __future__ import annotations

import math

import torch

from ._core import check


def reference_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag(std²)) summed over the last dim: (B, D) -> (B,)."""
    z = (x - mean) / std
    return (-0.5 * z.pow(2) - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)


def check_gaussian_log_prob(student_fn) -> None:
    """The warm-up: log-density of a diagonal Gaussian for a batch of points."""

    def inputs(gen):
        b, d = int(torch.randint(3, 9, (1,), generator=gen)), int(torch.randint(1, 5, (1,), generator=gen))
        x = torch.randn(b, d, generator=gen) * 2
        mean = torch.randn(d, generator=gen)
        std = torch.rand(d, generator=gen) * 2 + 0.3
        return (x, mean, std)

    check("gaussian_log_prob", student_fn, reference_gaussian_log_prob, inputs)
