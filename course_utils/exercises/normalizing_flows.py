"""Checks for notebook 01 (change of variables and normalizing flows)."""

from __future__ import annotations

import math

import torch

from ._core import Exercise, Mistake, randint


def _random_matrix(d: int, gen: torch.Generator) -> torch.Tensor:
    """A random invertible (d, d) matrix with singular values in [0.5, 2] and either sign of det."""
    q1, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    sv = 0.5 + 1.5 * torch.rand(d, generator=gen, dtype=torch.float64)
    return q1 @ torch.diag(sv) @ q2


# ------------------------------------------------------------- density of a transformed variable


def reference_linear_pushforward_log_prob(x: torch.Tensor, A: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """log p(x) for x = A z + mu, z ~ N(0, I): the Gaussian N(mu, A Aᵀ), evaluated independently."""
    cov = A @ A.T
    return torch.distributions.MultivariateNormal(mu, covariance_matrix=cov).log_prob(x)


def _linear_inputs(gen):
    b, d = randint(3, 9, gen), randint(1, 5, gen)
    A = _random_matrix(d, gen)
    mu = torch.randn(d, generator=gen, dtype=torch.float64)
    x = mu + 1.5 * torch.randn(b, d, generator=gen, dtype=torch.float64)
    return (x, A, mu)


def _log_normal(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z**2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


def _log_abs_det(A: torch.Tensor) -> torch.Tensor:
    return torch.linalg.slogdet(A).logabsdet


def _solve(A, v):  # A⁻¹ v for each row v
    return torch.linalg.solve(A, v.T).T


LINEAR_MISTAKES = [
    Mistake(lambda x, A, mu: _log_normal(_solve(A, x - mu)) + _log_abs_det(A),
            "the log-det has the wrong sign: f(x) = A⁻¹(x − μ) multiplies volumes by 1/|det A|, so the formula is "
            "log N(A⁻¹(x − μ); 0, I) − log|det A|, not + log|det A|."),
    Mistake(lambda x, A, mu: _log_normal(_solve(A, x - mu)),
            "it leaves out the Jacobian term: log N(A⁻¹(x − μ); 0, I) alone is not a density; subtract log|det A| "
            "(torch.linalg.slogdet(A).logabsdet)."),
    Mistake(lambda x, A, mu: _log_normal((x - mu) @ A.T) - _log_abs_det(A),
            "it maps x with A(x − μ), the sampling direction; the density needs the inverse map "
            "z = A⁻¹(x − μ), e.g. torch.linalg.solve(A, (x − mu).T).T."),
    Mistake(lambda x, A, mu: _log_normal(_solve(A, x) - mu) - _log_abs_det(A),
            "it computes z = A⁻¹x − μ; undo the shift first, then the matrix: z = A⁻¹(x − μ)."),
    Mistake(lambda x, A, mu: _log_normal(_solve(A, x - mu)) + 0.5 * x.shape[1] * math.log(2 * math.pi)
            - _log_abs_det(A),
            "it leaves out the Gaussian's normalising constant −(D/2)·log 2π in log N(z; 0, I)."),
]


LINEAR_PUSHFORWARD_LOG_PROB = Exercise("linear_pushforward_log_prob", reference_linear_pushforward_log_prob,
                                       _linear_inputs, LINEAR_MISTAKES, atol=1e-6)


def check_linear_pushforward_log_prob(student_fn) -> None:
    """log-density of x = A z + mu, z ~ N(0, I), for x: (B, D), A: (D, D), mu: (D,) -> (B,)."""
    LINEAR_PUSHFORWARD_LOG_PROB.check(student_fn)


# ------------------------------------------------------------- log-det of an affine coupling layer


def _random_conditioner(d: int, gen: torch.Generator):
    """A fixed random `net(x_masked) -> (s, t)`, both (B, d), non-zero on every coordinate."""
    W_s, W_t = torch.randn(2, d, d, generator=gen, dtype=torch.float64)
    b_s, b_t = torch.randn(2, d, generator=gen, dtype=torch.float64)

    def net(x_masked):
        return torch.tanh(x_masked @ W_s + b_s), x_masked @ W_t + b_t

    return net


def reference_coupling_log_det(x: torch.Tensor, mask: torch.Tensor, net) -> torch.Tensor:
    """log |det ∂z/∂x| = Σ_d (1 − m_d) s_d(m⊙x) for the affine coupling z = m⊙x + (1−m)⊙(x⊙e^s + t)."""
    s, _ = net(mask * x)
    return ((1 - mask) * s).sum(1)


def _coupling_inputs(gen):
    b, d = randint(3, 9, gen), randint(2, 6, gen)
    perm = torch.randperm(d, generator=gen)
    n_pass = randint(1, d, gen)
    mask = torch.zeros(d, dtype=torch.float64)
    mask[perm[:n_pass]] = 1.0
    x = torch.randn(b, d, generator=gen, dtype=torch.float64)
    return (x, mask, _random_conditioner(d, gen))


# The two choices a student makes: which input the conditioner sees, and which coordinates of s are
# summed. Every wrong combination gets its own sentence (one mistake, or both).
_CONDITIONER_INPUTS = {
    "masked": (lambda x, mask: mask * x, None),
    "all of x": (lambda x, mask: x,
                 "the conditioner is fed the whole x; it must see only the passed-through part, net(mask * x) "
                 "(otherwise s depends on the coordinates it transforms, the Jacobian is no longer triangular "
                 "and the inverse cannot recover s)"),
    "transformed": (lambda x, mask: (1 - mask) * x,
                    "the conditioner is fed (1 − mask) * x, the coordinates being transformed; it must see the "
                    "passed-through ones, net(mask * x)"),
}
_SUMMED_COORDINATES = {
    "transformed": (lambda mask: 1 - mask, None),
    "all": (lambda mask: torch.ones_like(mask),
            "the log-det sums s over every coordinate, i.e. it forgets the (1 − mask): only the transformed "
            "coordinates (mask = 0) are scaled by e^s; the passed-through ones are copied and add log 1 = 0"),
    "masked": (lambda mask: mask,
               "the log-det sums s over the masked (passed-through, mask = 1) coordinates; those are copied "
               "unchanged, and the scaled ones are where mask = 0: sum (1 − mask) * s"),
}


def _coupling_variant(conditioner_input, summed):
    def wrong(x, mask, net):
        s, _ = net(conditioner_input(x, mask))
        return (summed(mask) * s).sum(1)

    return wrong


def _coupling_mistakes():
    mistakes = []
    for input_fn, input_msg in _CONDITIONER_INPUTS.values():
        for sum_fn, sum_msg in _SUMMED_COORDINATES.values():
            parts = [m for m in (sum_msg, input_msg) if m is not None]
            if not parts:
                continue  # the right answer
            message = parts[0] + "." if len(parts) == 1 else f"two mistakes: {parts[0]}; and {parts[1]}."
            mistakes.append(Mistake(_coupling_variant(input_fn, sum_fn), message))
    return mistakes


def _with_s(transform):
    def wrong(x, mask, net):
        s, t = net(mask * x)
        return ((1 - mask) * transform(s, t)).sum(1)

    return wrong


COUPLING_MISTAKES = _coupling_mistakes() + [
    Mistake(lambda x, mask, net: -reference_coupling_log_det(x, mask, net),
            "the log-det has the wrong sign: z = x·e^s + t stretches the transformed coordinates by e^s, so "
            "log|det J| = + Σ (1 − m)·s (the minus sign belongs to the inverse map)."),
    Mistake(_with_s(lambda s, t: torch.exp(s)),
            "it sums the scales e^s; the log-det is the sum of the log-scales themselves, log e^s = s."),
    Mistake(_with_s(lambda s, t: t),
            "it sums the shift t; a shift moves points without changing volume, only the log-scale s enters the log-det."),
    Mistake(lambda x, mask, net: reference_coupling_log_det(x, mask, net) / x.shape[1],
            "it averages over coordinates; the log-det is a sum over the transformed coordinates, not a mean."),
]


COUPLING_LOG_DET = Exercise("coupling_log_det", reference_coupling_log_det, _coupling_inputs, COUPLING_MISTAKES,
                            atol=1e-6)


def check_coupling_log_det(student_fn) -> None:
    """log-det of an affine coupling layer for x: (B, D), mask: (D,) of 0/1, net(m⊙x) -> (s, t)."""
    COUPLING_LOG_DET.check(student_fn)


# ------------------------------------------------------------- inverse of an affine coupling layer


def reference_coupling_inverse(z: torch.Tensor, mask: torch.Tensor, net) -> torch.Tensor:
    """x from z = m⊙x + (1−m)⊙(x⊙e^s + t): x = m⊙z + (1−m)⊙(z − t)⊙e^{−s}, with s, t = net(m⊙z)."""
    s, t = net(mask * z)
    return mask * z + (1 - mask) * (z - t) * torch.exp(-s)


def _inverse_with(conditioner_input, undo):
    """A candidate inverse: the conditioner sees `conditioner_input(z, mask)`; `undo(z, s, t)` replaces
    (z − t)·e^{−s} on the transformed coordinates."""
    def candidate(z, mask, net):
        s, t = net(conditioner_input(z, mask))
        return mask * z + (1 - mask) * undo(z, s, t)

    return candidate


def _undo(z, s, t):
    return (z - t) * torch.exp(-s)


def _passed(z, mask):
    return mask * z


INVERSE_MISTAKES = [
    Mistake(_inverse_with(_passed, lambda z, s, t: (z - t) * torch.exp(s)),
            "it multiplies by e^s; the forward map multiplied the transformed coordinates by e^s, so the "
            "inverse divides by it: (z − t)·e^(−s)."),
    Mistake(_inverse_with(_passed, lambda z, s, t: z * torch.exp(-s) - t),
            "it divides by e^s first and subtracts t afterwards; the forward map scaled and then shifted, so the "
            "inverse undoes the shift first: (z − t)·e^(−s), not z·e^(−s) − t."),
    Mistake(_inverse_with(_passed, lambda z, s, t: z * torch.exp(s) + t),
            "it applies the forward map z·e^s + t again instead of undoing it."),
    Mistake(_inverse_with(_passed, lambda z, s, t: (z + t) * torch.exp(-s)),
            "it adds the shift t; the forward map added t, so the inverse subtracts it: (z − t)·e^(−s)."),
    Mistake(_inverse_with(lambda z, mask: (1 - mask) * z, _undo),
            "the conditioner is fed (1 − mask) * z, the transformed coordinates; s and t were computed from the "
            "passed-through part, which z keeps unchanged (m⊙z = m⊙x): net(mask * z)."),
    Mistake(_inverse_with(lambda z, mask: z, _undo),
            "the conditioner is fed the whole z; only the passed-through part m⊙z equals the forward map's "
            "input m⊙x, so only net(mask * z) gives back the same s and t."),
    Mistake(lambda z, mask, net: _undo(z, *net(mask * z)),
            "it applies (z − t)·e^(−s) to every coordinate; the passed-through ones (mask = 1) were copied and "
            "must be copied back: mask * z + (1 − mask) * (…)."),
    Mistake(lambda z, mask, net: (1 - mask) * _undo(z, *net(mask * z)),
            "it returns zeros on the passed-through coordinates; add them back unchanged, mask * z."),
]


COUPLING_INVERSE = Exercise("coupling_inverse", reference_coupling_inverse, _coupling_inputs, INVERSE_MISTAKES,
                            atol=1e-6)


def check_coupling_inverse(student_fn) -> None:
    """x = f⁻¹(z) for the affine coupling, for z: (B, D), mask: (D,) of 0/1, net(m⊙z) -> (s, t)."""
    COUPLING_INVERSE.check(student_fn)
