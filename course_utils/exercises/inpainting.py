"""Checks for notebook 07b (diffusion on MNIST)."""

from __future__ import annotations

import torch

from ._core import Exercise, Mistake, randint


def reference_inpaint_merge(x_generated: torch.Tensor, x_known_noised: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Known pixels (mask = 1) from the noised original, the rest from the model's proposal."""
    return mask * x_known_noised + (1 - mask) * x_generated


def _merge_inputs(gen):
    b = randint(2, 6, gen)
    mask = (torch.rand(1, 1, 6, 6, generator=gen) < 0.5).float()
    return (torch.randn(b, 1, 6, 6, generator=gen), torch.randn(b, 1, 6, 6, generator=gen), mask)


INPAINT_MERGE = Exercise("inpaint_merge", reference_inpaint_merge, _merge_inputs, mistakes=[
    Mistake(lambda gen, known, mask: mask * gen + (1 - mask) * known,
            "the mask is the wrong way round: mask = 1 marks the known pixels, which come from x_known_noised; "
            "the model's x_generated fills the rest (mask = 0)."),
    Mistake(lambda gen, known, mask: mask * known,
            "it keeps only the known pixels: add the model's proposal where the mask is 0, (1 − mask)·x_generated."),
    Mistake(lambda gen, known, mask: mask * known + gen,
            "it adds x_generated everywhere; it belongs only where the mask is 0: (1 − mask)·x_generated."),
])


def check_inpaint_merge(student_fn) -> None:
    """inpaint_merge(x_generated, x_known_noised, mask) = m·x_known_noised + (1 − m)·x_generated."""
    INPAINT_MERGE.check(student_fn)
