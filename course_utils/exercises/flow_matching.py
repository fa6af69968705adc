"""Checks for notebook 08 (flow matching): the conditional field of a Gaussian path, the minibatch OT pairing."""

from __future__ import annotations

import scipy.optimize
import torch

from ._core import Case, Exercise, Mistake, Symptom, randint


# ---------------------------------------------------------------------------- the conditional field
def reference_conditional_field(x, x1, alpha_t, sigma_t, d_alpha_t, d_sigma_t):
    """u_t(x | x1) = σ'_t/σ_t (x − α_t x1) + α'_t x1 for x, x1: (B, D) and coefficients (B,)."""
    a, s, da, ds = (c[:, None] for c in (alpha_t, sigma_t, d_alpha_t, d_sigma_t))
    return ds / s * (x - a * x1) + da * x1


def _field_inputs(gen):
    b, d = randint(3, 9, gen), randint(1, 5, gen)
    x, x1 = torch.randn(b, d, generator=gen), torch.randn(b, d, generator=gen)
    alpha_t = torch.rand(b, generator=gen) + 0.2
    sigma_t = torch.rand(b, generator=gen) + 0.3
    d_alpha_t, d_sigma_t = torch.randn(b, generator=gen), torch.randn(b, generator=gen)
    return (x, x1, alpha_t, sigma_t, d_alpha_t, d_sigma_t)


def _field(rate, centre, drift):
    """rate·(x − centre) + drift, each a function of (x1, a, s, da, ds) with the coefficients as (B, 1)."""

    def u(x, x1, *coefficients):
        a, s, da, ds = (c[:, None] for c in coefficients)
        return rate(s, ds) * (x - centre(x1, a)) + drift(x1, da)

    return u


def _ratio(s, ds):
    return ds / s


def _mean(x1, a):
    return a * x1


def _mean_velocity(x1, da):
    return da * x1


CONDITIONAL_FIELD = Exercise("conditional_field", reference_conditional_field, _field_inputs, mistakes=[
    Mistake(_field(_ratio, _mean, lambda x1, da: 0 * x1),
            "the mean's velocity α'_t·x1 is missing: the field moves the centre of the Gaussian as well as "
            "stretching around it, u = σ'_t/σ_t·(x − α_t x1) + α'_t x1."),
    Mistake(_field(lambda s, ds: s / ds, _mean, _mean_velocity),
            "the ratio is upside down: the stretching rate is σ'_t/σ_t (the derivative of log σ_t), not σ_t/σ'_t."),
    Mistake(_field(_ratio, lambda x1, a: x1, _mean_velocity),
            "it stretches around x1; the Gaussian's centre at time t is the mean α_t·x1: (x − α_t x1)."),
    Mistake(_field(_ratio, lambda x1, a: 0 * x1, _mean_velocity),
            "it stretches x itself; the stretching is around the mean: σ'_t/σ_t·(x − α_t x1)."),
])


def check_conditional_field(student_fn) -> None:
    """The conditional vector field of a Gaussian path, on random points and random coefficients."""
    CONDITIONAL_FIELD.check(student_fn)


# ---------------------------------------------------------------------------- minibatch OT
def _assignment(x0, x1, power=2):
    """The permutation σ minimising Σ_i ‖x0_i − x1_σ(i)‖^power (exact, Hungarian algorithm)."""
    cost = torch.cdist(x0.double(), x1.double()).pow(power).numpy()
    return torch.as_tensor(scipy.optimize.linear_sum_assignment(cost)[1])


def reference_ot_pair(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """x1 re-ordered so that row i is paired with x0[i] by exact OT for the cost ‖x0 − x1‖²."""
    return x1[_assignment(x0, x1)]


def _pair_inputs(gen):
    b, d = randint(5, 13, gen), randint(2, 4, gen)
    return (torch.randn(b, d, generator=gen), 2 * torch.randn(b, d, generator=gen) + 1)


_X0 = [[0.0, -2.0], [3.0, 0.0], [2.0, -2.0], [0.0, -3.0], [1.0, -1.0]]
_X1 = [[2.0, -1.0], [-3.0, -3.0], [1.0, 0.0], [1.0, 3.0], [2.0, 2.0]]
"""Five pairs where the squared and the plain distance pick different pairings, none the identity, and the
optimal permutation is not its own inverse: every mistake below shows on it."""


def _rows_matched(got, x1):
    """(rows of got) × (rows of x1): which rows are equal."""
    return torch.cdist(got.double(), x1.double()) < 1e-6


def _is_permutation_of(got, x1):
    match = _rows_matched(got, x1)
    return bool((match.sum(1) == 1).all() and (match.sum(0) == 1).all())


def _squared_cost(x0, y):
    return (x0.double() - y.double()).pow(2).sum().item()


def _greedy(x0, x1):
    """Each x0[i] in turn takes the nearest x1[j] not taken yet."""
    dist, free, order = torch.cdist(x0.double(), x1.double()), torch.ones(len(x1), dtype=torch.bool), []
    for i in range(len(x0)):
        j = int(torch.where(free, dist[i], torch.inf).argmin())
        free[j] = False
        order.append(j)
    return x1[torch.tensor(order)]


def _sorted_by_first_coordinate(x0, x1):
    """Pairs the k-th smallest x0 with the k-th smallest x1 along the first coordinate (optimal only in 1D)."""
    out = torch.empty_like(x1)
    out[x0[:, 0].argsort()] = x1[x1[:, 0].argsort()]
    return out


OT_PAIR = Exercise("ot_pair", reference_ot_pair, cases=[
    Case(_pair_inputs, "random batches"),
    Case(lambda gen: (torch.tensor(_X0), torch.tensor(_X1)), "a batch where ‖x0 − x1‖ and ‖x0 − x1‖² pair differently"),
], mistakes=[
    Mistake(lambda x0, x1: x1,
            "it returns x1 in its original order: that is the independent coupling, not the optimal-transport "
            "pairing."),
    Mistake(lambda x0, x1: x1[_assignment(x0, x1, power=1)],
            "it minimises the sum of distances ‖x0 − x1‖; the cost of flow matching's OT is the squared "
            "distance ‖x0 − x1‖²."),
    Mistake(lambda x0, x1: x1[_assignment(x0, x1).argsort()],
            "it re-orders x1 by the inverse permutation: a non-zero plan[i, j] pairs x0[i] with x1[j], so row i "
            "of the result is x1[j], the column where row i of the plan is non-zero (plan.argmax(axis=1))."),
    Mistake(lambda x0, x1: x1[torch.cdist(x0, x1).argmin(1)],
            "each x0[i] takes its nearest x1, so some x1 are used twice and others never; OT pairs the two "
            "batches one to one, minimising the total squared cost."),
    Mistake(_greedy,
            "it pairs greedily, each x0[i] in turn taking the nearest x1 left; that is one to one but not optimal: "
            "solve the assignment for the total squared cost (ot.emd or scipy.optimize.linear_sum_assignment)."),
    Symptom(lambda got, x0, x1: not _is_permutation_of(got, x1)
            and torch.allclose(got.flatten().sort()[0], x0.flatten().sort()[0]),
            "it returns the rows of x0: it should return the rows of x1, re-ordered.",
            example=lambda x0, x1: x0),
    Symptom(lambda got, x0, x1: got.shape == x1.shape and not _is_permutation_of(got, x1),
            "it should return the rows of x1 re-ordered (a permutation of them), but some rows are new or "
            "repeated: pair each x0[i] with a different x1[j].",
            example=lambda x0, x1: reference_ot_pair(x0, x1) + 1),
    Symptom(lambda got, x0, x1: _squared_cost(x0, got) > _squared_cost(x0, reference_ot_pair(x0, x1)) + 1e-6,
            "it returns a permutation of x1, but not the one of least total squared cost Σ‖x0_i − y_i‖²: take, "
            "for each row i of the exact OT plan, the column j where it is non-zero.",
            example=_sorted_by_first_coordinate),
])


def check_ot_pair(student_fn) -> None:
    """Minibatch OT: the student's re-ordering of x1 must be the exact OT pairing with x0."""
    OT_PAIR.check(student_fn)


def _diagnose_pairing(got, x0, x1) -> str | None:
    """The sentence naming what a wrong pairing did, or None if no declared mistake is seen."""
    return OT_PAIR.diagnose(got, (x0, x1))


# ---------------------------------------------------------------------------- SD3's weight of the CFM loss
def reference_cfm_weight(a_t, b_t, d_a_t, d_b_t):
    """w_t = −½ λ'_t b_t², λ_t = log(a_t² / b_t²), for z_t = a_t x + b_t ε in SD3's time (Esser et al. 2024, §2)."""
    return -0.5 * 2 * (d_a_t / a_t - d_b_t / b_t) * b_t**2


def _lam_prime(a, b, da, db):
    return 2 * (da / a - db / b)


def _weight_inputs(gen):
    n = randint(3, 9, gen)
    return (torch.rand(n, generator=gen) + 0.2, torch.rand(n, generator=gen) + 0.3,
            -torch.rand(n, generator=gen) - 0.1, torch.rand(n, generator=gen) + 0.1)


def _rf_inputs(gen):
    t = 0.05 + 0.9 * torch.rand(randint(3, 9, gen), generator=gen, dtype=torch.float64)
    return (1 - t, t, -torch.ones_like(t), torch.ones_like(t))


def _vp_inputs(gen):
    t = 0.05 + 0.9 * torch.rand(randint(3, 9, gen), generator=gen, dtype=torch.float64)
    beta = 0.1 + 19.9 * t
    a = torch.exp(-0.5 * (0.1 * t + 0.5 * 19.9 * t**2))
    b = torch.sqrt(1 - a**2)
    return (a, b, -0.5 * beta * a, 0.5 * beta * a**2 / b)


CFM_WEIGHT = Exercise("cfm_weight", reference_cfm_weight, cases=[
    Case(_weight_inputs, "random coefficients"),
    Case(_rf_inputs, "rectified flow, a_t = 1 − t, b_t = t"),
    Case(_vp_inputs, "the VP (DDPM) schedule"),
], mistakes=[
    Mistake(lambda a, b, da, db: -_lam_prime(a, b, da, db) * b**2,
            "the factor ½ is missing: w_t = −½ λ'_t b_t²."),
    Mistake(lambda a, b, da, db: 0.5 * _lam_prime(a, b, da, db) * b**2,
            "the sign is wrong: in SD3's time the log-SNR falls (λ'_t < 0) and the weight must be positive, "
            "w_t = −½ λ'_t b_t²."),
    Mistake(lambda a, b, da, db: -0.5 * _lam_prime(a, b, da, db) * b,
            "it multiplies by b_t; the weight has b_t²: w_t = −½ λ'_t b_t²."),
    Mistake(lambda a, b, da, db: -0.5 * (da / a - db / b) * b**2,
            "λ'_t is off by a factor 2: λ_t = log(a_t²/b_t²) = 2 log(a_t/b_t), so λ'_t = 2 (a'_t/a_t − b'_t/b_t)."),
    Mistake(lambda a, b, da, db: (0.5 * _lam_prime(a, b, da, db) * b) ** 2,
            "it returns the whole factor (½ λ'_t b_t)² in front of ‖ε_θ − ε‖²; that factor is −½ w_t λ'_t, "
            "so w_t itself is −½ λ'_t b_t²."),
    Mistake(lambda a, b, da, db: -2 / _lam_prime(a, b, da, db),
            "it returns −2/λ'_t, the weight of the plain ε-loss (c_t = 1); the CFM target has c_t = −½ λ'_t b_t, "
            "and w_t = −2 c_t²/λ'_t."),
])


def check_cfm_weight(student_fn) -> None:
    """SD3's weight w_t of the CFM loss as a weighted ε-loss, on random, rectified-flow and VP coefficients."""
    CFM_WEIGHT.check(student_fn)
