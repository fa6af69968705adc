import pytest
import torch

from course_utils import exercises
from course_utils.exercises.welcome import reference_gaussian_log_prob


def inputs(gen):
    return (torch.randn(6, 3, generator=gen),)


def ref(x):
    return x.pow(2).sum(1)


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


def test_gaussian_log_prob_reference_matches_torch_distributions():
    x, mean, std = torch.randn(5, 3), torch.randn(3), torch.rand(3) + 0.5
    want = torch.distributions.Normal(mean, std).log_prob(x).sum(-1)
    torch.testing.assert_close(reference_gaussian_log_prob(x, mean, std), want)
    exercises.check_gaussian_log_prob(reference_gaussian_log_prob)
