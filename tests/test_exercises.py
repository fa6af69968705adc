"""The exercise checks: the shared machinery, and every declared exercise through the registry.

Adding an exercise (an `Exercise` in a topic file) adds its tests here: the reference passes, each
declared mistake fails with its own message, a zero function and a stub fail. Every check runs
with fixed seeds, so no test depends on the draw.
"""

import contextlib
import io
import random

import pytest
import torch

from course_utils import exercises
from course_utils.exercises import EXERCISES, Case, Crash, Exercise, ExerciseError, Mistake, Symptom, run_check
from course_utils.exercises.welcome import reference_gaussian_log_prob

SEEDS = (0, 1, 2)


def inputs(gen):
    return (torch.randn(6, 3, generator=gen),)


def ref(x):
    return x.pow(2).sum(1)


# ---------------------------------------------------------------------------- compare and check


@pytest.mark.parametrize(
    "student, message",
    [
        (lambda x: -ref(x), "wrong sign"),
        (lambda x: 2 * ref(x), "constant factor: the result is about 2 times"),
        (lambda x: ref(x) + 1.5, "off by a constant: the result is the reference plus about 1.5"),
        (lambda x: x.pow(2), "shape (6, 3), but it should have shape (6,) (did you forget a sum"),
        (lambda x: ref(x) / 0, "NaN or infinite"),
        (lambda x: ref(x) + x[:, 0], "wrong values"),
        (lambda x: ref(x).tolist(), "should return a torch tensor"),
        (lambda x: x.undefined(), "raised AttributeError"),
    ],
)
def test_check_names_the_mistake(student, message):
    with pytest.raises(exercises.ExerciseError) as err:
        exercises.check("f", student, ref, inputs, seed=0)
    assert message in str(err.value)


def test_check_passes_correct_code_and_reports_stub(capsys):
    exercises.check("f", lambda x: (x * x).sum(-1), ref, inputs)
    assert "✓ f agrees" in capsys.readouterr().out

    def stub(x):
        raise NotImplementedError("Exercise")

    with pytest.raises(exercises.ExerciseError, match="not implemented yet"):
        exercises.check("f", stub, ref, inputs)
    with pytest.raises(exercises.ExerciseError, match="should be a function"):
        exercises.check("f", 3, ref, inputs)


def test_multiple_outputs_are_compared_one_by_one():
    def two(x):
        return ref(x), x

    with pytest.raises(exercises.ExerciseError, match="output 2 of 2"):
        exercises.check("g", lambda x: (ref(x), -x), two, inputs, seed=1)
    with pytest.raises(exercises.ExerciseError, match="should return 2 value"):
        exercises.check("g", lambda x: ref(x), two, inputs, seed=1)


def test_keyword_inputs():
    exercises.check("h", lambda *, x: ref(x), lambda *, x: ref(x), lambda gen: {"x": inputs(gen)[0]}, quiet=True)


# ---------------------------------------------------------------------------- run_check: cases, mistakes


def _run(student, mistakes=(), cases=(Case(inputs),), **kw):
    run_check("f", student, ref, list(cases), list(mistakes), seed=0, quiet=True, **kw)


def test_a_matching_mistake_replaces_the_generic_message():
    halved = Mistake(lambda x: ref(x) / 2, "halved")
    with pytest.raises(ExerciseError, match="^`f`: halved$"):
        _run(lambda x: 0.5 * ref(x), [halved])
    with pytest.raises(ExerciseError, match="constant factor"):  # no declared mistake matches
        _run(lambda x: 3 * ref(x), [halved])


def test_the_first_matching_mistake_wins_and_symptoms_are_seen():
    mistakes = [Mistake(lambda x: ref(x).sqrt(), "norm, not squared"),
                Symptom(lambda got, x: bool((got < 0).any()), "negative")]
    with pytest.raises(ExerciseError, match="negative"):
        _run(lambda x: -ref(x), mistakes)
    with pytest.raises(ExerciseError, match="norm, not squared"):
        _run(lambda x: x.norm(dim=1), mistakes)


def test_a_mistake_must_match_on_every_drawn_input():
    """Two mistakes that agree on the case that fails first are told apart by the other cases."""
    at = lambda a: Case(lambda gen: (torch.randn(4, generator=gen), a))  # noqa: E731

    def reference(x, a):
        return a * x

    mistakes = [Mistake(lambda x, a: 0 * x, "zero"), Mistake(lambda x, a: (a - 1) * x, "a − 1")]
    with pytest.raises(ExerciseError, match="a − 1"):
        run_check("f", lambda x, a: (a - 1) * x, reference, [at(1.0), at(3.0)], mistakes, seed=0, quiet=True)


def test_a_failure_names_the_case_when_there_are_several(capsys):
    cases = [Case(lambda gen: (torch.zeros(2, 3),), "zeros"), Case(inputs, "random")]
    with pytest.raises(ExerciseError, match=r"wrong values .* Case: random\.$"):
        _run(lambda x: ref(x) + x[:, 0], cases=cases)
    run_check("f", ref, ref, cases, seed=0)
    assert "agrees with the reference on 6 inputs (zeros; random)" in capsys.readouterr().out


def test_a_declared_crash_explains_the_error():
    def student(x):
        raise RuntimeError("element 0 of tensors does not require grad")

    with pytest.raises(ExerciseError, match="`f` raised an autograd error"):
        _run(student, crashes=[exercises._core.AUTOGRAD_CRASH])
    with pytest.raises(ExerciseError, match="`f` says why"):
        _run(student, crashes=[Crash(("element 0",), "says why")])


def test_an_exercise_registers_itself_and_rejects_repeated_messages():
    try:
        ex = Exercise("_test_only", ref, inputs, [Mistake(lambda x: -ref(x), "minus")])
        assert EXERCISES["_test_only"] is ex and ex.cases == (Case(inputs),)
        assert ex.diagnose(-ref(torch.ones(2, 3)), (torch.ones(2, 3),)) == "minus"
        with pytest.raises(ValueError, match="same message"):
            Exercise("_test_only_2", ref, inputs, [Mistake(abs, "m"), Mistake(abs, "m")])
    finally:
        EXERCISES.pop("_test_only", None)
        EXERCISES.pop("_test_only_2", None)


# ---------------------------------------------------------------------------- every declared exercise

NAMES = sorted(EXERCISES)
MISTAKES = [(name, k) for name in NAMES for k in range(len(EXERCISES[name].mistakes))]


def _wrong_implementation(mistake):
    return mistake.wrong if isinstance(mistake, Mistake) else mistake.example


def _zero(reference):
    def zero(*args):
        out = reference(*args)
        return tuple(torch.zeros_like(o) for o in out) if isinstance(out, tuple) else torch.zeros_like(out)

    return zero


def _quietly(fn, *args, **kw):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        fn(*args, **kw)
    return out.getvalue()


def test_every_notebook_check_is_a_registered_exercise():
    public = {name for name in dir(exercises) if name.startswith("check_")}
    assert public == {f"check_{name}" for name in NAMES}
    assert len(NAMES) >= 25


@pytest.mark.parametrize("name", NAMES)
def test_the_reference_passes(name):
    ex = EXERCISES[name]
    out = _quietly(getattr(exercises, f"check_{name}"), ex.reference)  # the notebook's call, a fresh draw
    assert f"✓ {name} agrees with the reference" in out
    for seed in SEEDS:
        ex.check(ex.reference, seed=seed, quiet=True)


@pytest.mark.parametrize("name, k", MISTAKES, ids=[f"{n}-{k}" for n, k in MISTAKES])
def test_each_declared_mistake_fails_and_is_named(name, k):
    ex = EXERCISES[name]
    mistake = ex.mistakes[k]
    wrong = _wrong_implementation(mistake)
    assert wrong is not None, "a Symptom needs an example for its test"
    for seed in SEEDS:
        with pytest.raises(ExerciseError) as err:
            ex.check(wrong, seed=seed)
        assert str(err.value).startswith(f"`{name}`: {mistake.message}"), str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_the_notebook_check_names_a_mistake(name, monkeypatch):
    """The public `check_<name>` runs the registered exercise: its first mistake is named (seed fixed here)."""
    monkeypatch.setattr(exercises._core.random, "SystemRandom", lambda: random.Random(0))
    ex = EXERCISES[name]
    if not ex.mistakes:
        pytest.skip("no declared mistakes")
    with pytest.raises(ExerciseError, match=f"^`{name}`: ") as err:
        getattr(exercises, f"check_{name}")(_wrong_implementation(ex.mistakes[0]))
    assert ex.mistakes[0].message in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_a_zero_function_a_stub_and_a_non_function_fail(name):
    ex = EXERCISES[name]
    for seed in SEEDS:
        with pytest.raises(ExerciseError, match=f"`{name}`"):
            ex.check(_zero(ex.reference), seed=seed)

    def stub(*args):
        raise NotImplementedError("Exercise")

    with pytest.raises(ExerciseError, match="not implemented yet"):
        getattr(exercises, f"check_{name}")(stub)
    with pytest.raises(ExerciseError, match="should be a function"):
        getattr(exercises, f"check_{name}")(None)


@pytest.mark.parametrize("name", NAMES)
def test_every_exercise_declares_mistakes(name):
    assert len(EXERCISES[name].mistakes) >= 2


# ---------------------------------------------------------------------------- particular checks


def test_gaussian_log_prob_reference_matches_torch_distributions():
    x, mean, std = torch.randn(5, 3), torch.randn(3), torch.rand(3) + 0.5
    want = torch.distributions.Normal(mean, std).log_prob(x).sum(-1)
    torch.testing.assert_close(reference_gaussian_log_prob(x, mean, std), want)
    exercises.check_gaussian_log_prob(reference_gaussian_log_prob)


def test_a_wrong_patch_layout_fails_every_time():
    """Images of two or more channels: the (C, p, p) layout can never agree by chance."""
    ex = EXERCISES["patchify"]
    channels_first = ex.mistakes[0].wrong
    for seed in range(20):
        with pytest.raises(ExerciseError, match=r"\(C, p, p\)"):
            ex.check(channels_first, seed=seed)


def test_the_ot_pair_case_tells_the_squared_cost_from_the_plain_one():
    """On the hand-picked batch the plain-distance pairing differs from the squared one, whatever the seed."""
    from course_utils.exercises.flow_matching import OT_PAIR

    plain = OT_PAIR.mistakes[1].wrong
    fixed = OT_PAIR.cases[1].make(None)
    assert not torch.equal(plain(*fixed), OT_PAIR.reference(*fixed))
