"""Checks for notebook 07b (diffusion on MNIST)."""

from __future__ import annotations

import torch

from ._core import check


def reference_inpaint_merge(x_generated: torch.Tensor, x_known_noised: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Known pixels (mask = 1) from the noised original, the rest from the model's proposal."""
    return mask * x_known_noised + (1 - mask) * x_generated


def check_inpaint_merge(student_fn) -> None:
    def inputs(gen):
        b = int(torch.randint(2, 6, (1,), generator=gen))
        mask = (torch.rand(1, 1, 6, 6, generator=gen) < 0.5).float()
        return (torch.randn(b, 1, 6, 6, generator=gen), torch.randn(b, 1, 6, 6, generator=gen), mask)

    check("inpaint_merge", student_fn, reference_inpaint_merge, inputs)
