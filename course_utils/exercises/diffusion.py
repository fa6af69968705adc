"""Checks for notebook 07a (DDPM and DDIM on 2D data).

Each reference takes the cumulative products ᾱ directly, so a check runs without a schedule
object, on 2D points and on image-shaped batches alike.
"""

from __future__ import annotations

import torch

from ..schedules import linear_betas
from ..tensors import append_dims
from ._core import Case, Exercise, Mistake, randint, uniform


def _shape(gen):
    """A random batch shape: (B, 2) points or (B, 1, H, W) images."""
    b = randint(3, 9, gen)
    if torch.rand(1, generator=gen) < 0.5:
        return (b, 2)
    return (b, 1, randint(2, 6, gen), randint(2, 6, gen))


# ---------------------------------------------------------------------------- forward noising
def reference_q_sample(x0: torch.Tensor, eps: torch.Tensor, abar_t: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, with `abar_t: (B,)` broadcast over `x0: (B, *D)`."""
    abar_t = append_dims(abar_t, x0.ndim)
    return abar_t.sqrt() * x0 + (1 - abar_t).sqrt() * eps


def _q_inputs(gen):
    shape = _shape(gen)
    abar_t = torch.rand(shape[0], generator=gen) * 0.98 + 0.01
    return (torch.randn(shape, generator=gen), torch.randn(shape, generator=gen), abar_t)


def _mix(signal, noise):
    """x0·signal(ᾱ) + ε·noise(ᾱ): the forward jump with other coefficients."""

    def q(x0, eps, abar_t):
        a = append_dims(abar_t, x0.ndim)
        return signal(a) * x0 + noise(a) * eps

    return q


Q_SAMPLE = Exercise("q_sample", reference_q_sample, _q_inputs, mistakes=[
    Mistake(_mix(lambda a: a, lambda a: 1 - a),
            "it mixes with ᾱ_t and 1 − ᾱ_t, the variances; the coefficients are their square roots, √ᾱ_t and "
            "√(1 − ᾱ_t), so that x_t keeps unit variance."),
    Mistake(_mix(lambda a: a, lambda a: (1 - a).sqrt()),
            "it scales x0 by ᾱ_t; the signal coefficient is its square root, √ᾱ_t."),
    Mistake(_mix(torch.sqrt, lambda a: 1 - a),
            "it scales ε by 1 − ᾱ_t, the noise variance; the coefficient is the standard deviation, the square "
            "root √(1 − ᾱ_t)."),
    Mistake(_mix(lambda a: (1 - a).sqrt(), torch.sqrt),
            "the coefficients are swapped: x0 gets √ᾱ_t (ᾱ_t → 1 at t = 0, no noise) and ε gets √(1 − ᾱ_t)."),
])


def check_q_sample(student_fn) -> None:
    """q_sample(x0, eps, abar_t): noise a batch of any shape to time t in one jump."""
    Q_SAMPLE.check(student_fn)


# ---------------------------------------------------------------------------- posterior variance
def _abar_pair(betas: torch.Tensor):
    """ᾱ_t and ᾱ_{t−1} for t = 1..T from the table β_1..β_T (ᾱ_0 = 1)."""
    abar = torch.cumprod(1 - betas, 0)
    return abar, torch.cat([abar.new_ones(1), abar[:-1]])


def reference_posterior_variance(betas: torch.Tensor) -> torch.Tensor:
    """β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t)·β_t for t = 1..T, from `betas: (T,)` = β_1..β_T."""
    abar, abar_prev = _abar_pair(betas)
    return (1 - abar_prev) / (1 - abar) * betas


def _posterior_variance_swapped(betas):
    abar, abar_prev = _abar_pair(betas)
    return (1 - abar) / (1 - abar_prev) * betas


def _posterior_variance_no_prev(betas):
    abar, _ = _abar_pair(betas)
    return betas / (1 - abar)


def _posterior_variance_one_step(betas):
    alphas = 1 - betas
    alphas_prev = torch.cat([alphas.new_ones(1), alphas[:-1]])
    return (1 - alphas_prev) / (1 - alphas) * betas


def _posterior_variance_no_alpha(betas):
    _, abar_prev = _abar_pair(betas)
    return 1 / (1 / betas + 1 / (1 - abar_prev))


def _posterior_variance_abar0_zero(betas):
    abar = torch.cumprod(1 - betas, 0)
    abar_prev = torch.cat([abar.new_zeros(1), abar[:-1]])
    return (1 - abar_prev) / (1 - abar) * betas


def _beta_table(gen, T=None):
    """An increasing table β_1..β_T (float64), as schedules build them."""
    T = randint(3, 12, gen) if T is None else T
    low, high = uniform(1e-3, 0.05, gen), uniform(0.1, 0.5, gen)
    return (torch.linspace(low, high, T, dtype=torch.float64),)


POSTERIOR_VARIANCE = Exercise("posterior_variance", reference_posterior_variance, cases=[
    Case(lambda gen: (linear_betas(50),), "the linear table, T = 50"),
    Case(_beta_table, "random increasing tables"),
], mistakes=[
    Mistake(lambda betas: betas.clone(),
            "it returns β_t, the variance of the forward step q(x_t | x_{t−1}); the posterior "
            "q(x_{t−1} | x_t, x_0) also knows x_0 and is narrower (β̃_1 = 0: at t = 1, x_0 fixes x_{t−1})."),
    Mistake(_posterior_variance_swapped,
            "ᾱ_t and ᾱ_{t−1} are swapped: the factor is (1 − ᾱ_{t−1})/(1 − ᾱ_t) ≤ 1, so that β̃_t ≤ β_t."),
    Mistake(_posterior_variance_no_prev,
            "the factor 1 − ᾱ_{t−1} is missing: β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t)·β_t, which is 0 at t = 1."),
    Mistake(_posterior_variance_one_step,
            "it uses the one-step α_t = 1 − β_t where the cumulative products ᾱ_t = α_1⋯α_t belong "
            "(q(x_{t−1} | x_0) has variance 1 − ᾱ_{t−1})."),
    Mistake(_posterior_variance_no_alpha,
            "the precision is missing α_t: the term ‖x_t − √α_t x_{t−1}‖²/β_t contributes α_t/β_t, not 1/β_t, to "
            "the coefficient of ‖x_{t−1}‖²."),
    Mistake(_posterior_variance_abar0_zero,
            "at t = 1 it takes ᾱ_0 = 0; ᾱ_0 is the empty product, 1 (x_0 is the data, no noise), so β̃_1 = 0."),
])


def check_posterior_variance(student_fn) -> None:
    """posterior_variance(betas): the variance β̃_t of q(x_{t−1} | x_t, x_0) for every t, from the β table."""
    POSTERIOR_VARIANCE.check(student_fn)


# ---------------------------------------------------------------------------- DDIM
def reference_ddim_step(x_t, eps, abar_t, abar_s, eta, noise) -> torch.Tensor:
    """x_s = √ᾱ_s x̂_0 + √(1 − ᾱ_s − σ²) ε̂ + σ z,  σ = η √((1 − ᾱ_s)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_s)."""
    abar_t, abar_s = append_dims(abar_t, x_t.ndim), append_dims(abar_s, x_t.ndim)
    x0 = (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
    sigma = eta * ((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)).sqrt()
    return abar_s.sqrt() * x0 + (1 - abar_s - sigma**2).sqrt() * eps + sigma * noise


def _ddim_variant(*, x0_hat=None, sigma=None, direction=None):
    """A DDIM step with x̂₀(x_t, ε, ᾱ_t), σ(η, ᾱ_t, ᾱ_s) or the direction's coefficient (ᾱ_s, σ) replaced."""

    def step(x_t, eps, abar_t, abar_s, eta, noise):
        a_t, a_s = append_dims(abar_t, x_t.ndim), append_dims(abar_s, x_t.ndim)
        x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt() if x0_hat is None else x0_hat(x_t, eps, a_t)
        variance = (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)
        sig = eta * variance.sqrt() if sigma is None else sigma(eta, variance)
        coef = (1 - a_s - sig**2).sqrt() if direction is None else direction(a_s, sig)
        return a_s.sqrt() * x0 + coef * eps + sig * noise

    return step


def _ddim_inputs(gen, eta=None):
    shape = _shape(gen)
    abar_t = torch.rand(shape[0], generator=gen) * 0.9 + 0.02  # ᾱ_t < ᾱ_s in (0, 1): s is the less noisy time
    abar_s = abar_t + (1 - abar_t) * (torch.rand(shape[0], generator=gen) * 0.9 + 0.05)
    eta = uniform(0.1, 0.9, gen) if eta is None else eta
    return (torch.randn(shape, generator=gen), torch.randn(shape, generator=gen), abar_t, abar_s,
            eta, torch.randn(shape, generator=gen))


DDIM_STEP = Exercise("ddim_step", reference_ddim_step, cases=[
    Case(lambda gen: _ddim_inputs(gen, eta=0.0), "η = 0, the deterministic step"),
    Case(lambda gen: _ddim_inputs(gen, eta=1.0), "η = 1, DDPM's variance"),
    Case(_ddim_inputs, "random η"),
], mistakes=[
    Mistake(_ddim_variant(x0_hat=lambda x_t, eps, a_t: (x_t - (1 - a_t) * eps) / a_t),
            "x̂₀ uses ᾱ_t and 1 − ᾱ_t without square roots: x̂₀ = (x_t − √(1 − ᾱ_t)·ε̂)/√ᾱ_t."),
    Mistake(_ddim_variant(sigma=lambda eta, variance: 0 * variance),
            "η is ignored: the noise level is σ = η·√((1 − ᾱ_s)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_s), zero only at η = 0."),
    Mistake(_ddim_variant(direction=lambda a_s, sig: (1 - a_s).sqrt()),
            "the direction to x_t is √(1 − ᾱ_s)·ε̂; when fresh noise σ·z is added, it must shrink to "
            "√(1 − ᾱ_s − σ²)·ε̂ so that the total variance stays 1 − ᾱ_s."),
    Mistake(_ddim_variant(sigma=lambda eta, variance: eta * variance),
            "σ is missing its square root: σ = η·√((1 − ᾱ_s)/(1 − ᾱ_t)·(1 − ᾱ_t/ᾱ_s)) is a standard "
            "deviation; the product under the root is its variance (for η = 1)."),
    Mistake(_ddim_variant(sigma=lambda eta, variance: (eta * variance).sqrt()),
            "η is inside the square root: η scales the standard deviation, σ = η·√(...), not the variance "
            "(the two agree only at η = 0 and η = 1)."),
])


def check_ddim_step(student_fn) -> None:
    """ddim_step(x_t, eps, abar_t, abar_s, eta, noise): one DDIM step from t to s < t."""
    DDIM_STEP.check(student_fn)


# ---------------------------------------------------------------------------- classifier-free guidance
def reference_cfg_eps(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, w: float) -> torch.Tensor:
    """ε̃ = (1 − w) ε̂(x, ∅) + w ε̂(x, y)."""
    return (1 - w) * eps_uncond + w * eps_cond


def guidance_exercise(name: str, symbol: str, make_pair) -> Exercise:
    """Classifier-free guidance of two predictions `symbol` (ε̂, v, ...) of the shape `make_pair(gen)` draws.

    The same formula serves ε-prediction (notebook 07a) and velocity prediction (notebook 10).
    """
    u, c = f"{symbol}(x, ∅)", f"{symbol}(x, y)"

    def inputs(gen, w=None):
        return make_pair(gen) + (uniform(0.0, 6.0, gen) if w is None else w,)

    return Exercise(name, reference_cfg_eps, cases=[
        Case(lambda gen: inputs(gen, 0.0), f"w = 0 must give the unconditional {symbol}"),
        Case(lambda gen: inputs(gen, 1.0), f"w = 1 must give the conditional {symbol}"),
        Case(inputs, "random w"),
    ], mistakes=[
        Mistake(lambda uncond, cond, w: (1 - w) * cond + w * uncond,
                f"the two predictions are swapped: w multiplies the conditional {c} and 1 − w the "
                f"unconditional {u}."),
        Mistake(lambda uncond, cond, w: uncond + w * cond,
                f"it adds w·{c} to {u}; guidance moves along their difference: {u} + w·({c} − {u})."),
        Mistake(lambda uncond, cond, w: (1 + w) * cond - w * uncond,
                f"this is the (1 + w)·{c} − w·{u} convention, where w = 0 is plain conditional; here w = 1 is "
                f"plain conditional: (1 − w)·{u} + w·{c}."),
        Mistake(lambda uncond, cond, w: w * (cond - uncond),
                f"it returns only the guidance direction w·({c} − {u}); add it to {u}."),
    ])


def _image_pair(gen):
    shape = _shape(gen)
    return (torch.randn(shape, generator=gen), torch.randn(shape, generator=gen))


CFG_EPS = guidance_exercise("cfg_eps", "ε̂", _image_pair)


def check_cfg_eps(student_fn) -> None:
    """cfg_eps(eps_uncond, eps_cond, w): classifier-free guidance of two ε-predictions."""
    CFG_EPS.check(student_fn)
