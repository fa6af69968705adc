"""The machinery every exercise check shares: declare, run, compare, diagnose in one sentence.

An exercise is DATA (an `Exercise`): the reference solution, the `Case`s that draw its inputs, and
the typical wrong answers (`Mistake`: a wrong implementation; `Symptom`: a property of a wrong
output) with the sentence that names each. `run_check` does the rest, the same way for every
exercise: it calls the student's function on fresh random inputs, compares it with the
reference and, on a mismatch, names the first declared mistake the student's function matches
(a `Mistake` on every input drawn, a `Symptom` on the failing one), or else says how the output
differs (shape, sign, constant factor, ...).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

import torch


class ExerciseError(AssertionError):
    """A student's function disagrees with the reference; the message says how."""


def _as_tuple(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


def _call(fn: Callable, inputs: tuple | dict):
    return fn(**inputs) if isinstance(inputs, dict) else fn(*inputs)


# ------------------------------------------------------------------------------ declarations


class Case(NamedTuple):
    """One kind of input. `make(generator)` returns the positional arguments (a tuple) or keyword
    arguments (a dict) of one trial; it may ignore the generator for a fixed, hand-picked input.
    `label` says what the case tests; a failure message quotes it when an exercise has several."""

    make: Callable[[torch.Generator], tuple | dict]
    label: str = ""


class Mistake(NamedTuple):
    """A typical wrong answer, given as a wrong implementation with the reference's signature:
    when the student's function agrees with `wrong` on every input the check draws, the check
    says `message`."""

    wrong: Callable
    message: str

    def matches(self, got, inputs, *, atol: float, rtol: float) -> bool:
        try:
            want = _as_tuple(_call(self.wrong, inputs))
        except Exception:  # a wrong formula may not apply to every input
            return False
        got = _as_tuple(got)
        return len(got) == len(want) and all(_same(g, w, atol, rtol) for g, w in zip(got, want))


class Symptom(NamedTuple):
    """A wrong answer recognised by a property of the output rather than by one wrong formula:
    `seen(got, *inputs)` is true when the student's output `got` shows it. `example` is one wrong
    implementation that shows it (for the tests)."""

    seen: Callable[..., bool]
    message: str
    example: Callable | None = None

    def matches(self, got, inputs, *, atol: float, rtol: float) -> bool:
        try:
            return bool(self.seen(got, *inputs) if isinstance(inputs, tuple) else self.seen(got, **inputs))
        except Exception:
            return False


class Crash(NamedTuple):
    """When the student's function raises an error whose text contains one of `fragments`,
    the check says `message` (after the function's name) instead of the raw error."""

    fragments: tuple[str, ...]
    message: str


AUTOGRAD_CRASH = Crash(
    ("does not require grad", "element 0 of tensors", "One of the differentiated"),
    "raised an autograd error: make x require gradients before applying f, e.g. "
    "`x = x.detach().requires_grad_(True)` inside `with torch.enable_grad():`.",
)


def _same(got, want, atol: float, rtol: float) -> bool:
    if not isinstance(got, torch.Tensor) or not isinstance(want, torch.Tensor) or got.shape != want.shape:
        return False
    return torch.allclose(got.detach().double().cpu(), want.detach().double().cpu(), atol=atol, rtol=rtol)


def first_mistake(mistakes: Sequence[Mistake | Symptom], got, inputs: tuple | dict, *, atol: float = 1e-5,
                  rtol: float = 1e-4, confirm: Callable[[Mistake], bool] | None = None) -> Mistake | Symptom | None:
    """The first declared mistake that the output `got` (of the student's function on `inputs`) matches.

    `confirm(mistake)`, when given, must also hold for a `Mistake` to count: `run_check` uses it to
    require the match on every input it drew, so two mistakes that agree on one input are told apart.
    """
    for mistake in mistakes:
        if mistake.matches(got, inputs, atol=atol, rtol=rtol) and (
                confirm is None or isinstance(mistake, Symptom) or confirm(mistake)):
            return mistake
    return None


# ------------------------------------------------------------------------------ comparing


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


def _compare_outputs(name: str, got, want: tuple, *, atol: float, rtol: float) -> None:
    got = _as_tuple(got)
    if len(got) != len(want):
        raise ExerciseError(f"`{name}` should return {len(want)} value(s), but returned {len(got)}.")
    for k, (g, w) in enumerate(zip(got, want)):
        what = "the result" if len(want) == 1 else f"output {k + 1} of {len(want)}"
        compare(name, g, w, atol=atol, rtol=rtol, what=what)


# ------------------------------------------------------------------------------ running


def _run_student(name: str, student_fn: Callable, inputs, crashes: Sequence[Crash]):
    try:
        return _call(student_fn, inputs)
    except NotImplementedError:
        raise ExerciseError(
            f"`{name}` is not implemented yet: replace the `raise NotImplementedError(...)` line with your code."
        ) from None
    except Exception as err:  # a student's bug: report it in their words, not torch's stack
        for crash in crashes:
            if any(fragment in str(err) for fragment in crash.fragments):
                raise ExerciseError(f"`{name}` {crash.message}") from None
        raise ExerciseError(f"`{name}` raised {type(err).__name__}: {err}") from err


def run_check(
    name: str,
    student_fn: Callable,
    reference_fn: Callable,
    cases: Sequence[Case],
    mistakes: Sequence[Mistake | Symptom] = (),
    *,
    trials: int = 3,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    seed: int | None = None,
    quiet: bool = False,
    crashes: Sequence[Crash] = (),
) -> None:
    """Compare `student_fn` with `reference_fn` on `trials` random inputs of each case, in order.

    On the first mismatch, the first of `mistakes` that the student's output matches on those
    inputs is named (`` `name`: message``); otherwise `compare` says how the output differs. With
    several cases, the message ends with the label of the case that failed.
    """
    if not callable(student_fn):
        raise ExerciseError(f"`{name}` should be a function, but it is a {type(student_fn).__name__}.")
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    drawn = [(case, seed + trial) for case in cases for trial in range(trials)]
    for case, case_seed in drawn:
        inputs = _draw(case, case_seed)
        want = _as_tuple(_call(reference_fn, inputs))
        got = _run_student(name, student_fn, inputs, crashes)
        try:
            _compare_outputs(name, got, want, atol=atol, rtol=rtol)
        except ExerciseError as err:
            mistake = first_mistake(mistakes, got, _draw(case, case_seed), atol=atol, rtol=rtol,
                                    confirm=lambda m: _matches_everywhere(m, student_fn, drawn, atol, rtol))
            message = f"`{name}`: {mistake.message}" if mistake else str(err)
            if len(cases) > 1 and case.label:
                message += f" Case: {case.label}."
            raise ExerciseError(message) from None
    if not quiet:
        kinds = f"inputs ({'; '.join(c.label for c in cases)})" if len(cases) > 1 else "random inputs"
        print(f"✓ {name} agrees with the reference on {len(drawn)} {kinds}.")


def _draw(case: Case, seed: int):
    """The inputs of one trial, drawn afresh (a student's function may modify its arguments in place)."""
    return case.make(torch.Generator().manual_seed(seed))


def _matches_everywhere(mistake: Mistake, student_fn: Callable, drawn, atol: float, rtol: float) -> bool:
    """Whether the student's function gives the mistake's output on every input the check draws."""
    for case, case_seed in drawn:
        try:
            got = _call(student_fn, _draw(case, case_seed))
        except Exception:
            return False
        if not mistake.matches(got, _draw(case, case_seed), atol=atol, rtol=rtol):
            return False
    return True


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
    """`run_check` with one kind of input and no declared mistakes.

    `make_inputs(generator)` returns the positional arguments (a tuple) or keyword
    arguments (a dict) for one trial.
    """
    run_check(name, student_fn, reference_fn, [Case(make_inputs)], trials=trials, atol=atol, rtol=rtol,
              seed=seed, quiet=quiet)


# ------------------------------------------------------------------------------ the registry

EXERCISES: dict[str, "Exercise"] = {}
"""Every declared exercise by name; its notebook check is `exercises.check_<name>`."""


@dataclass(frozen=True)
class Exercise:
    """One exercise as data: the reference, the cases that draw inputs, the known mistakes.

    `cases` is one input maker `make(generator)` or a sequence of `Case`s. Declaring an exercise
    registers it in `EXERCISES` under its name.
    """

    name: str
    reference: Callable
    cases: Sequence[Case] | Callable[[torch.Generator], tuple | dict]
    mistakes: Sequence[Mistake | Symptom] = ()
    atol: float = 1e-5
    rtol: float = 1e-4
    trials: int = 3
    crashes: Sequence[Crash] = ()

    def __post_init__(self):
        cases = (Case(self.cases),) if callable(self.cases) else tuple(self.cases)
        object.__setattr__(self, "cases", cases)
        object.__setattr__(self, "mistakes", tuple(self.mistakes))
        messages = [m.message for m in self.mistakes]
        if len(set(messages)) != len(messages):
            raise ValueError(f"Exercise {self.name!r} declares two mistakes with the same message.")
        EXERCISES[self.name] = self

    def check(self, student_fn: Callable, *, seed: int | None = None, quiet: bool = False) -> None:
        """Run the check on `student_fn`; raise `ExerciseError` naming what is wrong."""
        run_check(self.name, student_fn, self.reference, self.cases, self.mistakes, trials=self.trials,
                  atol=self.atol, rtol=self.rtol, seed=seed, quiet=quiet, crashes=self.crashes)

    def diagnose(self, got, inputs: tuple | dict) -> str | None:
        """The message of the first declared mistake the output `got` on `inputs` matches, or None."""
        mistake = first_mistake(self.mistakes, got, inputs, atol=self.atol, rtol=self.rtol)
        return mistake.message if mistake else None


# ------------------------------------------------------------------------------ input helpers


def randint(low: int, high: int, gen: torch.Generator) -> int:
    """One integer in [low, high), drawn from `gen`."""
    return int(torch.randint(low, high, (1,), generator=gen))


def uniform(low: float, high: float, gen: torch.Generator) -> float:
    """One float in [low, high), drawn from `gen`."""
    return low + (high - low) * float(torch.rand(1, generator=gen))


def away_from_one(gen: torch.Generator, high: float = 3.0) -> float:
    """A positive scale in [1/high, 0.8] or [1.25, high]: never close to 1, where σ and σ² (or β and 1/β) agree."""
    u = uniform(1.25, high, gen)
    return u if torch.rand(1, generator=gen) < 0.5 else 1 / u


def random_state(gen: torch.Generator) -> torch.Tensor:
    """A float64 state of a random batch size, shaped (B, 2), (B, 3) or (B, 1, 2, 2): one code path for all."""
    b = randint(2, 7, gen)
    shape = [(b, 2), (b, 3), (b, 1, 2, 2)][randint(0, 3, gen)]
    return torch.randn(*shape, generator=gen, dtype=torch.float64)
