"""Checks for notebook 07b (diffusion on MNIST)."""

from __future__ import annotations

import torch

from ..guidance import haar2x2, inverse_haar2x2
from ..tensors import append_dims
from ._core import Crash, Exercise, Mistake, Symptom, randint, uniform


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
    Mistake(lambda gen, known, mask: known + (1 - mask) * gen,
            "it adds x_known_noised everywhere; it belongs only where the mask is 1: mask·x_known_noised."),
])


def check_inpaint_merge(student_fn) -> None:
    """inpaint_merge(x_generated, x_known_noised, mask): known pixels (mask = 1) from x_known_noised, the rest
    from x_generated."""
    INPAINT_MERGE.check(student_fn)


# --- super-resolution: replace the block-mean coordinate in the Haar basis ----------------------------


def reference_superres_merge(x_generated: torch.Tensor, x_low: torch.Tensor, abar_s: torch.Tensor,
                             eps: torch.Tensor) -> torch.Tensor:
    """The Haar mean coordinate (2 × the block mean) replaced by the known one noised to ᾱ_s; details kept."""
    a = append_dims(abar_s, x_low.ndim)
    known = a.sqrt() * 2 * x_low + (1 - a).sqrt() * eps
    y = haar2x2(x_generated)
    return inverse_haar2x2(torch.cat([known.unsqueeze(2), y[:, :, 1:]], dim=2))


def _superres_inputs(gen):
    b, h, w = randint(2, 6, gen), 2 * randint(1, 4, gen), 2 * randint(1, 4, gen)
    abar_s = torch.tensor([uniform(0.05, 0.95, gen) for _ in range(b)])
    return (torch.randn(b, 1, h, w, generator=gen), torch.randn(b, 1, h // 2, w // 2, generator=gen), abar_s,
            torch.randn(b, 1, h // 2, w // 2, generator=gen))


def _with_known(known_fn):
    """A merge that puts `known_fn(x_low, a, eps)` (a: ᾱ_s shaped to broadcast) in the mean coordinate."""
    def merge(x_generated, x_low, abar_s, eps):
        known = known_fn(x_low, append_dims(abar_s, x_low.ndim), eps)
        y = haar2x2(x_generated)
        return inverse_haar2x2(torch.cat([known.unsqueeze(2), y[:, :, 1:]], dim=2))
    return merge


def _up(z):
    return z.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def _one_pixel_per_block(x_generated, x_low, abar_s, eps):
    a = append_dims(abar_s, x_low.ndim)
    mask = torch.zeros_like(x_generated)
    mask[..., ::2, ::2] = 1
    return mask * _up(a.sqrt() * x_low + (1 - a).sqrt() * eps) + (1 - mask) * x_generated


SUPERRES_MERGE = Exercise("superres_merge", reference_superres_merge, _superres_inputs, mistakes=[
    Mistake(_with_known(lambda low, a, eps: a.sqrt() * low + (1 - a).sqrt() * eps),
            "the known coordinate is the block mean itself; in the orthonormal Haar basis it is 2 × the block "
            "mean, (a + b + c + d)/2, so the result's block means come out halved."),
    Mistake(_with_known(lambda low, a, eps: 2 * (a.sqrt() * low + (1 - a).sqrt() * eps)),
            "the noise is doubled too: the factor 2 belongs to the block mean only. The orthonormal transform of "
            "N(0, I) noise is N(0, I) noise, so the fresh ε enters with √(1 − ᾱ_s) alone."),
    Mistake(lambda gen, low, abar_s, eps: _up(append_dims(abar_s, low.ndim).sqrt() * low
                                              + (1 - append_dims(abar_s, low.ndim)).sqrt() * eps),
            "it replaces every pixel of a block by the (noised) low-resolution value, which erases the model's "
            "details: replace only the mean coordinate, in the Haar basis (haar2x2, then inverse_haar2x2)."),
    Mistake(_one_pixel_per_block,
            "it treats the low-resolution image as known pixels (one per block), as inpainting would: a block mean "
            "is not a pixel but a coordinate of the Haar basis; replace that coordinate."),
    Mistake(_with_known(lambda low, a, eps: a * 2 * low + (1 - a) * eps),
            "it re-noises with ᾱ_s and 1 − ᾱ_s: q(x_s | x_0) scales the signal by √ᾱ_s and the noise by "
            "√(1 − ᾱ_s)."),
    Mistake(_with_known(lambda low, a, eps: 2 * low + (1 - a).sqrt() * eps),
            "the known coordinate is not scaled by √ᾱ_s: at level s the signal is √ᾱ_s · (2 × the block "
            "mean)."),
    Mistake(_with_known(lambda low, a, eps: (1 - a).sqrt() * 2 * low + a.sqrt() * eps),
            "signal and noise coefficients are swapped: the signal gets √ᾱ_s, the noise √(1 − ᾱ_s)."),
    Mistake(_with_known(lambda low, a, eps: 2 * low),
            "the known coordinate is not noised: at level s the model expects it as noisy as q(x_s | x_0) makes "
            "it, √ᾱ_s · (2 × the block mean) + √(1 − ᾱ_s) ε."),
    Mistake(_with_known(lambda low, a, eps: a.sqrt() * 2 * low),
            "the signal is scaled by √ᾱ_s but the fresh noise is missing: add √(1 − ᾱ_s) ε, or the known "
            "coordinates are cleaner than the model expects at level s."),
    Symptom(lambda got, gen, low, abar_s, eps: isinstance(got, torch.Tensor) and got.ndim == 5,
            "it returns Haar coordinates (B, 1, 4, h, w): go back to pixels with inverse_haar2x2.",
            example=lambda gen, low, abar_s, eps: haar2x2(gen)),
], crashes=[
    Crash(("must match the size of tensor",),
          "raised a broadcasting error. ᾱ_s holds one value per image, shape (B,): reshape it to (B, 1, 1, 1), "
          "e.g. append_dims(abar_s, x_low.ndim), before it multiplies an image."),
    Crash(("Sizes of tensors must match",),
          "raised a shape error in torch.cat: the known coordinate must have the shape of x_low, (B, 1, h, w), "
          "before unsqueeze(2). If ᾱ_s multiplies it, reshape ᾱ_s from (B,) to (B, 1, 1, 1) first "
          "(append_dims)."),
])


def check_superres_merge(student_fn) -> None:
    """superres_merge(x_generated, x_low, abar_s, eps): x_generated with its Haar mean coordinate set to the
    known one, noised to level s."""
    SUPERRES_MERGE.check(student_fn)
