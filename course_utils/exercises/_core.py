"""The machinery every exercise check shares: run, compare, diagnose in one sentence."""

from __future__ import annotations

import random
from typing import Any, Callable

import torch


class ExerciseError(AssertionError):
    """A student's function disagrees with the reference; the message says how."""


def _as_tuple(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


def compare(name: str, got: Any, want: torch.Tensor, *, atol: float = 1e-5, rtol: float = 1e-4,
            what: str = "the result") -> None:
    """Raise `ExerciseError` describing how `got` differs from the reference `want`."""
    want = torch.as_tensor(want)
    if isinstance(got, (int, float)):
        got = torch.tensor(float(got), dtype=want.dtype)
    if not isinstance(got, torch.Tensor):
        raise ExerciseError(f"`{name}` should return a torch tensor as {what}, but returned {type(got).__name__}.")
    if got.shape != want.shape:
        hint = ""
        if got.ndim == want.ndim + 1:
            hint = " (did you forget a sum or mean over a dimension?)"
        elif got.ndim == want.ndim - 1:
            hint = " (did you sum or average over one dimension too many?)"
        elif got.numel() == want.numel():
            hint = " (same number of entries: check the order of dimensions or a missing reshape)"
        raise ExerciseError(
            f"`{name}` returns {what} of shape {tuple(got.shape)}, but it should have shape "
            f"{tuple(want.shape)}{hint}."
        )
    got = got.detach().to(torch.float64).cpu()
    want = want.detach().to(torch.float64).cpu()
    if not torch.isfinite(got).all():
        raise ExerciseError(f"`{name}` returns NaN or infinite values in {what}; the reference is finite.")

    def close(a, b):
        return torch.allclose(a, b, atol=atol, rtol=rtol)

    if close(got, want):
        return
    scale = want.abs().max().item()
    if scale > 1e-8 and close(-got, want):
        raise ExerciseError(f"`{name}` has the wrong sign: {what} is the negative of the reference.")
    denom = (want * want).sum()
    if denom > 1e-12:
        factor = ((got * want).sum() / denom).item()
        if abs(factor - 1) > 1e-3 and close(got, factor * want):
            raise ExerciseError(
                f"`{name}` is off by a constant factor: {what} is about {factor:.4g} times the reference."
            )
    offset = (got - want).mean().item()
    if abs(offset) > atol and close(got - offset, want):
        raise ExerciseError(
            f"`{name}` is off by a constant: {what} is the reference plus about {offset:.4g}."
        )
    err = (got - want).abs().max().item()
    raise ExerciseError(
        f"`{name}` gives wrong values in {what}: the largest error is {err:.3g} "
        f"(allowed: {atol:g} + {rtol:g}·|reference|)."
    )


def check(
    name: str,
    student_fn: Callable,
    reference_fn: Callable,
    make_inputs: Callable[[torch.Generator], tuple | dict],
    *,
    trials: int = 3,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    seed: int | None = None,
    quiet: bool = False,
) -> None:
    """Compare `student_fn` with `reference_fn` on `trials` fresh random inputs.

    `make_inputs(generator)` returns the positional arguments (a tuple) or keyword
    arguments (a dict) for one trial.
    """
    if not callable(student_fn):
        raise ExerciseError(f"`{name}` should be a function, but it is a {type(student_fn).__name__}.")
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    for trial in range(trials):
        gen = torch.Generator().manual_seed(seed + trial)
        inputs = make_inputs(gen)
        args, kwargs = (inputs, {}) if isinstance(inputs, tuple) else ((), inputs)
        want = _as_tuple(reference_fn(*args, **kwargs))
        try:
            got = student_fn(*args, **kwargs)
        except NotImplementedError:
            raise ExerciseError(
                f"`{name}` is not implemented yet: replace the `raise NotImplementedError(...)` line with your code."
            ) from None
        except Exception as err:  # a student's bug: report it in their words, not torch's stack
            raise ExerciseError(f"`{name}` raised {type(err).__name__}: {err}") from err
        got = _as_tuple(got)
        if len(got) != len(want):
            raise ExerciseError(f"`{name}` should return {len(want)} value(s), but returned {len(got)}.")
        for k, (g, w) in enumerate(zip(got, want)):
            what = "the result" if len(want) == 1 else f"output {k + 1} of {len(want)}"
            compare(name, g, w, atol=atol, rtol=rtol, what=what)
    if not quiet:
        print(f"✓ {name} agrees with the reference on {trials} random inputs.")


def diagnose_known_mistakes(name, student_fn, inputs, mistakes, err: ExerciseError, *, output=None):
    """Re-raise `err`, or a sharper message when the student's output matches a known mistake.

    `mistakes` is a list of `(wrong_fn, message)`; `output` picks one output of a tuple.
    """
    if "not implemented" in str(err):
        raise err
    args = inputs(torch.Generator().manual_seed(12345))
    try:
        got = student_fn(*args)
    except Exception:
        raise err from None
    if output is not None:
        got = got[output] if isinstance(got, (tuple, list)) and len(got) > output else None
    for wrong, message in mistakes:
        want = wrong(*args)
        if isinstance(got, torch.Tensor) and got.shape == want.shape and torch.allclose(
                got.detach().double(), want.double(), atol=1e-6, rtol=1e-5):
            raise ExerciseError(f"`{name}`: {message}") from None
    raise err


def random_state(gen: torch.Generator) -> torch.Tensor:
    """A float64 state of a random batch size, shaped (B, 2), (B, 3) or (B, 1, 2, 2): one code path for all."""
    b = int(torch.randint(2, 7, (1,), generator=gen))
    shape = [(b, 2), (b, 3), (b, 1, 2, 2)][int(torch.randint(0, 3, (1,), generator=gen))]
    return torch.randn(*shape, generator=gen, dtype=torch.float64)
