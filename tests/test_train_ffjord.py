"""The `train-ffjord` command: resumable, seeded per step, exports small EMA weights that load."""

import math

import pytest
import torch

from course_utils import cnf, data
from course_utils.cli import COMMANDS, train_ffjord
from course_utils.models import TimeMLP

TINY = dict(batch_size=16, hidden=8, depth=2, ode_steps=2, device="cpu", progress=False)


def test_first_loss_is_the_nll_of_the_initial_field_and_training_resumes(tmp_path):
    path = tmp_path / "ffjord.pt"
    first = train_ffjord.train_ffjord(path, steps=2, **TINY)
    torch.manual_seed(0)
    init = train_ffjord.make_model(**TINY)
    x, _ = train_ffjord.batch_stream(train_ffjord.FFJORDTrainConfig(**TINY))(0)
    want = cnf.nll_loss(init, x, method="rk4", steps=2).item()  # step 0's batch under the initial field
    assert first.losses[0] == pytest.approx(want, rel=1e-5)
    resumed = train_ffjord.train_ffjord(path, steps=3, **TINY)
    assert resumed.resumed_from == 2 and len(resumed.losses) == 3
    assert torch.load(path, weights_only=True)["step"] == 3
    assert len(list(tmp_path.iterdir())) == 1  # a path: no export


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_a_run_resumed_after_two_steps_equals_four_straight_steps(tmp_path, trace):
    cfg = dict(TINY, export="", trace=trace)  # with Hutchinson the probe, too, comes from the step's generator
    straight = train_ffjord.train_ffjord(train_ffjord.FFJORDTrainConfig(steps=4, checkpoint=str(tmp_path / "a.pt"), **cfg))
    train_ffjord.train_ffjord(train_ffjord.FFJORDTrainConfig(steps=2, checkpoint=str(tmp_path / "b.pt"), **cfg))
    resumed = train_ffjord.train_ffjord(train_ffjord.FFJORDTrainConfig(steps=4, checkpoint=str(tmp_path / "b.pt"), **cfg))
    assert resumed.resumed_from == 2
    assert resumed.losses == straight.losses  # bit for bit
    a, b = torch.load(tmp_path / "a.pt", weights_only=True), torch.load(tmp_path / "b.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
        assert torch.equal(a["ema"][key], b["ema"][key]), key


def test_the_batch_is_a_function_of_the_step():
    cfg = train_ffjord.FFJORDTrainConfig(batch_size=32, seed=3)
    a, b = train_ffjord.batch_stream(cfg), train_ffjord.batch_stream(cfg)
    for step in (5, 0, 5):
        (x, gen), (x2, gen2) = a(step), b(step)
        assert torch.equal(x, x2) and x.shape == (32, 2)
        assert torch.equal(cnf.probe(x, "rademacher", gen), cnf.probe(x2, "rademacher", gen2))
    assert not torch.equal(a(0)[0], a(1)[0])
    assert not torch.equal(a(0)[0], train_ffjord.batch_stream(train_ffjord.FFJORDTrainConfig(batch_size=32, seed=4))(0)[0])


def test_command_exports_small_ema_weights_that_load_with_their_config(tmp_path):
    run, shipped = tmp_path / "run.pt", tmp_path / "shipped.pt"
    args = ["--checkpoint", str(run), "--export", str(shipped), "--steps", "2", "--batch-size", "16",
            "--hidden", "8", "--depth", "2", "--ode-steps", "2", "--device", "cpu", "--no-progress"]
    train_ffjord.main(args)
    full, small = torch.load(run, weights_only=True), torch.load(shipped, weights_only=True)
    assert small["optimizer"] is None and small["ema"] is None and small["step"] == 2
    assert small["metrics"]["weights"] == "ema"
    for key, value in full["ema"].items():  # the shipped weights are the EMA weights, not the last iterate
        torch.testing.assert_close(small["model"][key], value)
    model, cfg = train_ffjord.load_ffjord(shipped, device="cpu")
    assert isinstance(model, TimeMLP) and not model.training
    assert cfg["hidden"] == 8 and cfg["ode_steps"] == 2 and cfg["data"] == "checkerboard"
    torch.testing.assert_close(model.net[0].weight, full["ema"]["net.0.weight"])
    with pytest.raises(ValueError, match="exists; pass --force"):  # checked before any training
        train_ffjord.main(args)
    train_ffjord.main(args + ["--force"])
    with pytest.raises(ValueError, match="the same file"):
        train_ffjord.main(["--checkpoint", str(run), "--export", str(run), "--force"])


def test_defaults_write_to_runs_not_data_and_the_command_is_registered():
    cfg = train_ffjord.FFJORDTrainConfig()
    assert cfg.checkpoint.endswith("runs/ffjord_checkerboard.pt")
    assert cfg.export.endswith("runs/ffjord_checkerboard_export.pt")
    assert cfg.data == "checkerboard" and cfg.trace == "exact" and cfg.method == "rk4"
    assert train_ffjord.default_path().name == "ffjord_checkerboard.pt"
    assert train_ffjord.default_path().parent.name == "data"
    assert COMMANDS["train-ffjord"][:2] == ("train_ffjord", "main")


def test_the_shipped_file_was_made_by_the_command_defaults():
    """data/ffjord_checkerboard.pt is what `train-ffjord` with its defaults writes (notebook 03 loads it)."""
    model, cfg = train_ffjord.load_ffjord(device="cpu")
    defaults = train_ffjord.FFJORDTrainConfig()
    for key in ("steps", "data", "batch_size", "hidden", "depth", "time_dim", "time_scale", "lr", "ema_decay",
                "method", "ode_steps", "trace", "seed"):
        assert cfg[key] == getattr(defaults, key), key
    assert torch.load(train_ffjord.default_path(), weights_only=True)["step"] == defaults.steps


@pytest.mark.parametrize("args, words", [(["--ode-steps", "0"], "--ode-steps must be an integer >= 1"),
                                         (["--method", "dopri5"], "invalid choice"),
                                         (["--data", "mnist"], "invalid choice")])
def test_bad_options_are_one_line_errors(capsys, args, words):
    with pytest.raises(SystemExit) as exit_:
        train_ffjord.main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and words in err and len(err.strip().splitlines()) == 1


def test_the_loss_of_a_trained_step_is_finite_and_near_the_untrained_gap():
    """A fresh field sits near N(0, I): its NLL on the board exceeds the entropy by more than log 2."""
    result = train_ffjord.train_ffjord(train_ffjord.FFJORDTrainConfig(steps=1, checkpoint="", export="", **TINY))
    assert math.isfinite(result.losses[0])
    assert result.losses[0] - data.checkerboard_entropy() > math.log(2)
