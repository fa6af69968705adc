"""Checks for notebook 07a (DDPM and DDIM on 2D data).

Each reference takes the cumulative products ᾱ directly, so a check runs without a schedule
object, on 2D points and on image-shaped batches alike.
"""

from __future__ import annotations

import torch

from ..tensors import append_dims
from ._core import ExerciseError, check


def reference_q_sample(x0: torch.Tensor, eps: torch.Tensor, abar_t: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, with `abar_t: (B,)` broadcast over `x0: (B, *D)`."""
    abar_t = append_dims(abar_t, x0.ndim)
    return abar_t.sqrt() * x0 + (1 - abar_t).sqrt() * eps


def reference_ddim_step(x_t, eps, abar_t, abar_s, eta, noise) -> torch.Tensor:
    """x_s = √ᾱ_s x̂_0 + √(1 − ᾱ_s − σ²) ε̂ + σ z,  σ = η √((1 − ᾱ_s)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_s)."""
    abar_t, abar_s = append_dims(abar_t, x_t.ndim), append_dims(abar_s, x_t.ndim)
    x0 = (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
    sigma = eta * ((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)).sqrt()
    return abar_s.sqrt() * x0 + (1 - abar_s - sigma**2).sqrt() * eps + sigma * noise


def reference_cfg_eps(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, w: float) -> torch.Tensor:
    """ε̃ = (1 − w) ε̂(x, ∅) + w ε̂(x, y)."""
    return (1 - w) * eps_uncond + w * eps_cond


def _shape(gen):
    """A random batch shape: (B, 2) points or (B, 1, H, W) images."""
    b = int(torch.randint(3, 9, (1,), generator=gen))
    if torch.rand(1, generator=gen) < 0.5:
        return (b, 2)
    return (b, 1, int(torch.randint(2, 6, (1,), generator=gen)), int(torch.randint(2, 6, (1,), generator=gen)))


def _abar_pair(b, gen):
    """ᾱ_t < ᾱ_s in (0, 1), shape (B,) each (s is the less noisy time)."""
    abar_t = torch.rand(b, generator=gen) * 0.9 + 0.02
    abar_s = abar_t + (1 - abar_t) * (torch.rand(b, generator=gen) * 0.9 + 0.05)
    return abar_t, abar_s


def _staged(name, student_fn, reference_fn, cases) -> None:
    """Run `check` on each (label, make_inputs) case in turn; a failure names the case it failed on."""
    for label, make_inputs in cases:
        try:
            check(name, student_fn, reference_fn, make_inputs, quiet=True)
        except ExerciseError as err:
            if "not implemented" in str(err):
                raise
            raise ExerciseError(f"{err} Case: {label}.") from None
    print(f"✓ {name} agrees with the reference on {len(cases)} kinds of random input.")


def check_q_sample(student_fn) -> None:
    """q_sample(x0, eps, abar_t): noise a batch of any shape to time t in one jump."""

    def inputs(gen):
        shape = _shape(gen)
        abar_t = torch.rand(shape[0], generator=gen) * 0.98 + 0.01
        return (torch.randn(shape, generator=gen), torch.randn(shape, generator=gen), abar_t)

    x0, eps = torch.ones(2, 3), torch.zeros(2, 3)
    try:
        out = student_fn(x0, eps, torch.tensor([0.25, 0.25]))
    except Exception:  # `check` below reports it in plain words
        out = None
    if isinstance(out, torch.Tensor) and out.shape == x0.shape and torch.allclose(out, 0.25 * x0):
        raise ExerciseError("`q_sample` scales x0 by ᾱ_t; the signal coefficient is its square root, √ᾱ_t.")
    check("q_sample", student_fn, reference_q_sample, inputs)


def check_ddim_step(student_fn) -> None:
    """ddim_step(x_t, eps, abar_t, abar_s, eta, noise): one DDIM step from t to s < t."""

    def inputs(gen):
        shape = _shape(gen)
        abar_t, abar_s = _abar_pair(shape[0], gen)
        eta = float(torch.rand(1, generator=gen))
        return (torch.randn(shape, generator=gen), torch.randn(shape, generator=gen), abar_t, abar_s,
                eta, torch.randn(shape, generator=gen))

    def deterministic(gen):
        x_t, eps, abar_t, abar_s, _, noise = inputs(gen)
        return (x_t, eps, abar_t, abar_s, 0.0, noise)

    def ddpm_like(gen):
        x_t, eps, abar_t, abar_s, _, noise = inputs(gen)
        return (x_t, eps, abar_t, abar_s, 1.0, noise)

    _staged("ddim_step", student_fn, reference_ddim_step,
            [("η = 0, the deterministic step", deterministic), ("η = 1, DDPM's variance", ddpm_like), ("random η", inputs)])


def check_cfg_eps(student_fn) -> None:
    """cfg_eps(eps_uncond, eps_cond, w): classifier-free guidance of two ε-predictions."""

    def inputs(gen):
        shape = _shape(gen)
        w = float(torch.rand(1, generator=gen) * 6)
        return (torch.randn(shape, generator=gen), torch.randn(shape, generator=gen), w)

    def at(w):
        return lambda gen: inputs(gen)[:2] + (w,)

    _staged("cfg_eps", student_fn, reference_cfg_eps,
            [("w = 0 must give the unconditional ε", at(0.0)), ("w = 1 must give the conditional ε", at(1.0)),
             ("random w", inputs)])
