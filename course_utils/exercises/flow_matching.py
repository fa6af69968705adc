"""Checks for notebook 08 (flow matching): the conditional field of a Gaussian path, the minibatch OT pairing."""

from __future__ import annotations

import random

import torch

from .. import flow_matching as fm
from ._core import ExerciseError, check


def reference_conditional_field(x, x1, alpha_t, sigma_t, d_alpha_t, d_sigma_t):
    """u_t(x | x1) = σ'_t/σ_t (x − α_t x1) + α'_t x1 for x, x1: (B, D) and coefficients (B,)."""
    a, s, da, ds = (c[:, None] for c in (alpha_t, sigma_t, d_alpha_t, d_sigma_t))
    return ds / s * (x - a * x1) + da * x1


def check_conditional_field(student_fn) -> None:
    """The conditional vector field of a Gaussian path, on random points and random coefficients."""

    def inputs(gen):
        b, d = int(torch.randint(3, 9, (1,), generator=gen)), int(torch.randint(1, 5, (1,), generator=gen))
        x, x1 = torch.randn(b, d, generator=gen), torch.randn(b, d, generator=gen)
        alpha_t = torch.rand(b, generator=gen) + 0.2
        sigma_t = torch.rand(b, generator=gen) + 0.3
        d_alpha_t, d_sigma_t = torch.randn(b, generator=gen), torch.randn(b, generator=gen)
        return (x, x1, alpha_t, sigma_t, d_alpha_t, d_sigma_t)

    check("conditional_field", student_fn, reference_conditional_field, inputs)


def reference_ot_pair(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """x1 re-ordered so that row i is paired with x0[i] by exact OT for the cost ‖x0 − x1‖²."""
    return fm.ot_coupling(x0, x1)[1]


def _pair_inputs(gen):
    b, d = int(torch.randint(5, 13, (1,), generator=gen)), int(torch.randint(2, 4, (1,), generator=gen))
    return (torch.randn(b, d, generator=gen), 2 * torch.randn(b, d, generator=gen) + 1)


def _diagnose_pairing(got, x0, x1) -> str | None:
    """A sentence naming what a wrong pairing did, or None if nothing specific is seen."""
    if not isinstance(got, torch.Tensor) or got.shape != x1.shape:
        return None
    match = torch.cdist(got.double(), x1.double()) < 1e-6
    if not (match.sum(1) == 1).all() or not (match.sum(0) == 1).all():
        if torch.allclose(torch.sort(got.flatten())[0], torch.sort(x0.flatten())[0]):
            return "`ot_pair` returns the rows of x0: it should return the rows of x1, re-ordered."
        return ("`ot_pair` should return the rows of x1 re-ordered (a permutation of them), "
                "but some rows are new or repeated.")
    cost = lambda y: (x0.double() - y.double()).pow(2).sum(1).sum().item()  # noqa: E731
    want = reference_ot_pair(x0, x1)
    if torch.equal(got, x1):
        return ("`ot_pair` returns x1 in its original order: that is the independent coupling, "
                "not the optimal-transport pairing.")
    dist = torch.cdist(x0.double(), x1.double()).numpy()
    import scipy.optimize

    linear = x1[scipy.optimize.linear_sum_assignment(dist)[1]]
    if torch.equal(got, linear) and not torch.equal(linear, want):
        return ("`ot_pair` minimises the sum of distances ‖x0 − x1‖; the cost of flow matching's OT "
                "is the squared distance ‖x0 − x1‖².")
    if cost(got) > cost(want) + 1e-6:
        return (f"`ot_pair` returns a permutation of x1, but its total squared cost {cost(got):.4g} is above the "
                f"optimum {cost(want):.4g}: take, for each row i of the plan, the column j where it is non-zero.")
    return None


def check_ot_pair(student_fn) -> None:
    """Minibatch OT: the student's re-ordering of x1 must be the exact OT pairing with x0."""
    seed = random.SystemRandom().randrange(2**31)
    try:
        check("ot_pair", student_fn, reference_ot_pair, _pair_inputs, seed=seed, quiet=True)
    except ExerciseError as err:
        for trial in range(3):
            x0, x1 = _pair_inputs(torch.Generator().manual_seed(seed + trial))
            try:
                hint = _diagnose_pairing(student_fn(x0, x1), x0, x1)
            except Exception:  # the first error already says what went wrong
                hint = None
            if hint:
                raise ExerciseError(hint) from None
        raise err from None
    print("✓ ot_pair agrees with the reference on 3 random inputs.")
