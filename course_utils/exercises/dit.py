"""Checks for notebook 10 (a DiT on MNIST)."""

from __future__ import annotations

import torch

from ..models import dit
from ._core import ExerciseError, check


def check_patchify(student_fn) -> None:
    """patchify(x, p): (B, C, H, W) -> (B, (H/p)(W/p), p·p·C), patches row by row, each flattened as (p, p, C)."""

    def inputs(gen):
        p = int(torch.randint(1, 4, (1,), generator=gen)) + 1  # 2..4
        b, c = int(torch.randint(1, 4, (1,), generator=gen)), int(torch.randint(2, 4, (1,), generator=gen))  # C ≥ 2: with one channel every layout of a patch is the same
        h, w = p * int(torch.randint(2, 5, (1,), generator=gen)), p * int(torch.randint(2, 5, (1,), generator=gen))
        return (torch.randn(b, c, h, w, generator=gen), p)

    check("patchify", student_fn, dit.patchify, inputs, quiet=True)
    # a round trip through the course's inverse must give the image back
    x = torch.randn(2, 3, 8, 12)
    if not torch.equal(dit.unpatchify(student_fn(x, 4), 4, 3, 8, 12), x):
        raise ExerciseError("`patchify` is not undone by `dit.unpatchify`: check the order of the patches.")
    print("✓ patchify agrees with the reference on 3 random inputs, and unpatchify undoes it.")


def check_modulate(student_fn) -> None:
    """modulate(x, shift, scale): x·(1 + scale) + shift with (B, d) shift/scale over (B, N, d) tokens."""

    def inputs(gen):
        b, n, d = (int(v) for v in torch.randint(2, 7, (3,), generator=gen))
        return (torch.randn(b, n, d, generator=gen), torch.randn(b, d, generator=gen), torch.randn(b, d, generator=gen))

    check("modulate", student_fn, dit.modulate, inputs, quiet=True)
    x = torch.randn(3, 5, 4)
    zeros = torch.zeros(3, 4)
    got = student_fn(x, zeros, zeros)
    if not torch.allclose(got, x):
        raise ExerciseError("`modulate` with zero shift and zero scale must return x unchanged (that is adaLN-Zero's start).")
    print("✓ modulate agrees with the reference on 3 random inputs, and is the identity at zero.")


def reference_guided_velocity(v_uncond: torch.Tensor, v_cond: torch.Tensor, w: float) -> torch.Tensor:
    return (1 - w) * v_uncond + w * v_cond


def check_guided_velocity(student_fn) -> None:
    """guided_velocity(v_uncond, v_cond, w) = (1 − w)·v_uncond + w·v_cond."""

    def inputs(gen):
        b = int(torch.randint(1, 5, (1,), generator=gen))
        w = float(torch.rand(1, generator=gen) * 5)
        return (torch.randn(b, 1, 4, 4, generator=gen), torch.randn(b, 1, 4, 4, generator=gen), w)

    check("guided_velocity", student_fn, reference_guided_velocity, inputs)
