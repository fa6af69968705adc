"""Checks for notebook 10 (a DiT on MNIST)."""

from __future__ import annotations

import torch

from ..models import dit
from ._core import Case, Exercise, Mistake, randint
from .diffusion import guidance_exercise


# ---------------------------------------------------------------------------- patchify
def _patchify_inputs(gen):
    p = randint(2, 5, gen)
    b, c = randint(1, 4, gen), randint(2, 4, gen)  # C ≥ 2: with one channel every layout of a patch is the same
    h, w = p * randint(2, 5, gen), p * randint(2, 5, gen)
    return (torch.randn(b, c, h, w, generator=gen), p)


def _patches(order):
    """patchify with the axes of (B, C, H/p, p, W/p, p) permuted to `order` before the final reshape."""

    def patchify(x, p):
        b, c, h, w = x.shape
        return x.reshape(b, c, h // p, p, w // p, p).permute(*order).reshape(b, (h // p) * (w // p), p * p * c)

    return patchify


PATCHIFY = Exercise("patchify", dit.patchify, cases=[
    Case(_patchify_inputs, "random images"),
    Case(lambda gen: (torch.randn(2, 3, 8, 12, generator=gen), 4),
         "(2, 3, 8, 12) images in 4×4 patches, which dit.unpatchify must turn back into the images"),
], mistakes=[
    Mistake(_patches((0, 2, 4, 1, 3, 5)),
            "each patch is flattened as (C, p, p), channels first; the course's layout is (p, p, C): permute "
            "(B, C, H/p, p, W/p, p) to (B, H/p, W/p, p, p, C) before the last reshape."),
    Mistake(_patches((0, 4, 2, 3, 5, 1)),
            "the patches are listed column by column; list them row by row (row-major): the patch-row index "
            "H/p comes before the patch-column index W/p."),
    Mistake(_patches((0, 2, 4, 5, 3, 1)),
            "the pixels inside each patch are transposed (column-major); flatten each patch row by row: (p_row, "
            "p_col, C)."),
    Mistake(lambda x, p: x.reshape(x.shape[0], -1, p * p * x.shape[1]),
            "a reshape alone does not cut patches: it groups numbers that are consecutive in memory (along a "
            "row of pixels); reshape to (B, C, H/p, p, W/p, p) and permute the axes first."),
])


def check_patchify(student_fn) -> None:
    """patchify(x, p): (B, C, H, W) -> (B, (H/p)(W/p), p·p·C), patches row by row, each flattened as (p, p, C)."""
    PATCHIFY.check(student_fn)


# ---------------------------------------------------------------------------- adaLN modulation
def _modulate_inputs(gen, zero=False):
    b, n, d = (randint(2, 7, gen) for _ in range(3))
    x = torch.randn(b, n, d, generator=gen)
    shift, scale = torch.randn(b, d, generator=gen), torch.randn(b, d, generator=gen)
    return (x, 0 * shift, 0 * scale) if zero else (x, shift, scale)


MODULATE = Exercise("modulate", dit.modulate, cases=[
    Case(_modulate_inputs, "random tokens"),
    Case(lambda gen: _modulate_inputs(gen, zero=True),
         "zero shift and zero scale must return x unchanged (that is adaLN-Zero's start)"),
], mistakes=[
    Mistake(lambda x, shift, scale: x * scale.unsqueeze(1) + shift.unsqueeze(1),
            "it multiplies by scale; adaLN multiplies by (1 + scale), so that scale = 0 (adaLN-Zero's start) "
            "leaves x unchanged."),
    Mistake(lambda x, shift, scale: x * (1 + shift.unsqueeze(1)) + scale.unsqueeze(1),
            "shift and scale are swapped: x·(1 + scale) + shift."),
    Mistake(lambda x, shift, scale: (x + shift.unsqueeze(1)) * (1 + scale.unsqueeze(1)),
            "it shifts before scaling; scale first, then shift: x·(1 + scale) + shift."),
])


def check_modulate(student_fn) -> None:
    """modulate(x, shift, scale): x·(1 + scale) + shift with (B, d) shift/scale over (B, N, d) tokens."""
    MODULATE.check(student_fn)


# ---------------------------------------------------------------------------- guidance
def _velocity_pair(gen):
    b = randint(1, 5, gen)
    return (torch.randn(b, 1, 4, 4, generator=gen), torch.randn(b, 1, 4, 4, generator=gen))


GUIDED_VELOCITY = guidance_exercise("guided_velocity", "v", _velocity_pair)


def check_guided_velocity(student_fn) -> None:
    """guided_velocity(v_uncond, v_cond, w) = (1 − w)·v_uncond + w·v_cond."""
    GUIDED_VELOCITY.check(student_fn)
