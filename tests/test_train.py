import os
import signal
import tempfile
from pathlib import Path

import pytest
import torch

from course_utils import models as nn
from course_utils import train


def regression_problem():
    """Fit y = 3x − 1 with a linear model: a loss with a known minimum of 0."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, generator=gen)
    y = 3 * x - 1

    def next_batch(step):
        idx = torch.randint(0, 256, (64,), generator=torch.Generator().manual_seed(step))
        return x[idx], y[idx]

    def loss_fn(model, batch):
        xb, yb = batch
        return (model(xb) - yb).pow(2).mean()

    return loss_fn, next_batch


class Linear(torch.nn.Linear):
    def __init__(self, i=1, o=1):
        super().__init__(i, o)
        self.config = {"i": i, "o": o}


def test_fit_reaches_the_known_minimum_and_ema_follows():
    torch.manual_seed(0)
    loss_fn, next_batch = regression_problem()
    res = train.fit(Linear(), loss_fn, next_batch,
                    train.TrainConfig(steps=600, lr=5e-2, ema_decay=0.9, progress=False))
    assert res.losses[-1] < 1e-4 < res.losses[0]
    torch.testing.assert_close(res.model.weight, torch.tensor([[3.0]]), atol=1e-2, rtol=0)
    torch.testing.assert_close(res.ema_model.bias, torch.tensor([-1.0]), atol=1e-2, rtol=0)
    assert res.eval_model is res.ema_model


def test_ema_is_the_exponential_average():
    model = Linear()
    ema = train.EMA(model, 0.5)
    with torch.no_grad():
        w0 = model.weight.clone()
        model.weight.add_(2.0)
    ema.update(model)
    torch.testing.assert_close(ema.model.weight, w0 + 1.0)
    with pytest.raises(ValueError, match="decay"):
        train.EMA(model, 1.5)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    loss_fn, next_batch = regression_problem()
    torch.manual_seed(1)
    full = train.fit(Linear(), loss_fn, next_batch, train.TrainConfig(steps=40, lr=1e-2, progress=False))
    ckpt = tmp_path / "run.pt"
    torch.manual_seed(1)
    model = Linear()
    first = train.fit(model, loss_fn, next_batch,
                      train.TrainConfig(steps=25, lr=1e-2, checkpoint=str(ckpt), progress=False))
    assert first.step == 25 and ckpt.is_file()
    torch.manual_seed(99)  # the resumed run must not depend on a fresh init
    second = train.fit(Linear(), loss_fn, next_batch,
                       train.TrainConfig(steps=40, lr=1e-2, checkpoint=str(ckpt), progress=False))
    assert second.resumed_from == 25 and len(second.losses) == 40
    torch.testing.assert_close(second.model.weight, full.model.weight)
    assert second.losses == pytest.approx(full.losses)
    saved = train.read_checkpoint(ckpt)
    assert saved["step"] == 40 and saved["model_config"] == {"i": 1, "o": 1}
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left no temporary files


def test_checkpoint_errors_are_clear(tmp_path):
    path = tmp_path / "m.pt"
    train.save_checkpoint(path, nn.TimeMLP(hidden=8, depth=1), step=3)
    with pytest.raises(train.CheckpointError, match="another config.*hidden"):
        train.load_model(path, nn.TimeMLP(hidden=16, depth=1))
    with pytest.raises(train.CheckpointError, match="holds a TimeMLP, not a Linear"):
        train.load_model(path, Linear())
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:200])
    with pytest.raises(train.CheckpointError, match="corrupt"):
        train.read_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(train.CheckpointError, match="not a course checkpoint"):
        train.read_checkpoint(foreign)
    with pytest.raises(FileNotFoundError):
        train.read_checkpoint(tmp_path / "none.pt")
    model = nn.TimeMLP(hidden=8, depth=1)
    ckpt = train.load_model(path, model)
    assert ckpt["step"] == 3


def test_non_finite_loss_stops_with_a_message():
    def loss_fn(model, batch):
        return model(batch).sum() * float("nan")

    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        train.fit(Linear(), loss_fn, lambda s: torch.ones(2, 1), train.TrainConfig(steps=3, progress=False))


def test_smooth_is_a_moving_average():
    out = train.smooth([0, 2, 4, 6], window=2)
    torch.testing.assert_close(out, torch.tensor([1.0, 3.0, 5.0], dtype=torch.float64))


def test_export_weights_keeps_one_copy_and_training_can_start_from_it(tmp_path):
    loss_fn, next_batch = regression_problem()
    torch.manual_seed(2)
    run = tmp_path / "run.pt"
    res = train.fit(Linear(), loss_fn, next_batch, train.TrainConfig(
        steps=30, lr=1e-2, ema_decay=0.9, checkpoint=str(run), progress=False))
    for use_ema, expected in ((True, res.ema_model), (False, res.model)):
        out = tmp_path / f"ship_{use_ema}.pt"
        train.export_weights(run, out, ema=use_ema)
        model = Linear()
        ckpt = train.load_model(out, model)
        torch.testing.assert_close(model.weight, expected.weight)
        assert ckpt["optimizer"] is None and ckpt["ema"] is None and len(ckpt["losses"]) == 30
    assert not torch.equal(res.ema_model.weight, res.model.weight)  # the two choices really differ
    more = train.fit(Linear(), loss_fn, next_batch, train.TrainConfig(
        steps=35, lr=1e-2, checkpoint=str(tmp_path / "ship_True.pt"), progress=False))
    assert more.resumed_from == 30 and len(more.losses) == 35
    with pytest.raises(train.CheckpointError):
        (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
        train.export_weights(tmp_path / "junk.pt", tmp_path / "x.pt")


def test_ema_resumed_from_a_checkpoint_without_one_starts_at_its_weights(tmp_path):
    """An exported checkpoint has no EMA; training on from it averages from its weights, not random ones."""
    loss_fn, next_batch = regression_problem()
    run, shipped = tmp_path / "run.pt", tmp_path / "shipped.pt"
    train.fit(Linear(), loss_fn, next_batch, train.TrainConfig(
        steps=300, lr=5e-2, checkpoint=str(run), progress=False))
    train.export_weights(run, shipped)
    more = train.fit(Linear(), loss_fn, next_batch, train.TrainConfig(
        steps=302, lr=1e-3, ema_decay=0.99, checkpoint=str(shipped), progress=False))
    assert more.resumed_from == 300
    # two small steps from w ≈ 3: the average stays at 3 (a fresh EMA would sit near its random start)
    torch.testing.assert_close(more.ema_model.weight, torch.tensor([[3.0]]), atol=1e-2, rtol=0)
    torch.testing.assert_close(more.ema_model.bias, torch.tensor([-1.0]), atol=1e-2, rtol=0)


# -- Ctrl-C, leftovers of a killed write, unwritable outputs, a changed learning rate


def interrupted_at(stop, next_batch, *, kill=False):
    """`next_batch` that is interrupted when asked for batch `stop`: KeyboardInterrupt, or a real SIGINT."""

    def batch(step):
        if step == stop:
            if kill:
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise KeyboardInterrupt
        return next_batch(step)

    return batch


@pytest.fixture
def python_sigint_handler():
    """Python's own SIGINT handler (a terminal's or a Jupyter kernel's), whatever the test runner set."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def assert_same_run(a, b):
    """Two results, or two checkpoints, hold bit-identical weights, EMA weights and losses."""
    assert a["losses"] == b["losses"] and a["step"] == b["step"]
    for part in ("model", "ema"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)


@pytest.mark.parametrize("kill", [False, True], ids=["KeyboardInterrupt", "SIGINT"])
def test_ctrl_c_saves_the_last_completed_step_and_the_resumed_run_equals_an_unbroken_one(
        tmp_path, kill, python_sigint_handler):
    loss_fn, next_batch = regression_problem()
    cfg = dict(lr=1e-2, ema_decay=0.9, progress=False, checkpoint_every=100)  # no periodic checkpoint in 6 steps
    torch.manual_seed(1)
    train.fit(Linear(), loss_fn, next_batch, train.TrainConfig(steps=6, checkpoint=str(tmp_path / "a.pt"), **cfg))
    run = tmp_path / "b.pt"
    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt) as caught:
        train.fit(Linear(), loss_fn, interrupted_at(3, next_batch, kill=kill),
                  train.TrainConfig(steps=6, checkpoint=str(run), **cfg))
    err = caught.value
    assert isinstance(err, train.TrainingInterrupted)
    assert (err.step, err.steps, err.checkpoint, err.saved_step) == (3, 6, str(run), 3)
    assert str(err) == f"interrupted at step 3 of 6; saved {run}"
    saved = train.read_checkpoint(run)
    assert saved["step"] == 3 and len(saved["losses"]) == 3 and saved["metrics"] == {"interrupted": True}
    torch.manual_seed(99)  # the resumed run must not depend on a fresh init
    resumed = train.fit(Linear(), loss_fn, next_batch, train.TrainConfig(steps=6, checkpoint=str(run), **cfg))
    assert resumed.resumed_from == 3
    assert_same_run(torch.load(tmp_path / "a.pt", weights_only=True), torch.load(run, weights_only=True))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # fit put the handler back
    assert not list(tmp_path.glob("*.tmp"))


def test_a_sigint_during_the_optimiser_step_lands_once_the_step_is_complete(tmp_path, python_sigint_handler):
    loss_fn, next_batch = regression_problem()

    class KilledAdamW(torch.optim.AdamW):
        """Ctrl-C pressed in the middle of the third update, before its parameters change."""
        calls = 0

        def step(self, closure=None):
            KilledAdamW.calls += 1
            if KilledAdamW.calls == 3:
                os.kill(os.getpid(), signal.SIGINT)
            return super().step(closure)

    cfg = dict(lr=1e-2, ema_decay=0.9, progress=False)
    torch.manual_seed(1)
    train.fit(Linear(), loss_fn, next_batch, train.TrainConfig(steps=6, checkpoint=str(tmp_path / "a.pt"), **cfg))
    torch.manual_seed(1)
    model = Linear()
    run = tmp_path / "b.pt"
    with pytest.raises(train.TrainingInterrupted) as caught:
        train.fit(model, loss_fn, next_batch, train.TrainConfig(steps=6, checkpoint=str(run), **cfg),
                  optimizer=KilledAdamW(model.parameters(), lr=1e-2, weight_decay=0.0))  # fit's own optimiser
    assert caught.value.step == 3  # the third step finished: its update, EMA and loss are all in
    saved = train.read_checkpoint(run)
    assert saved["step"] == 3 and len(saved["losses"]) == 3
    train.fit(Linear(), loss_fn, next_batch, train.TrainConfig(steps=6, checkpoint=str(run), **cfg))
    assert_same_run(torch.load(tmp_path / "a.pt", weights_only=True), torch.load(run, weights_only=True))


def test_ctrl_c_without_a_checkpoint_says_nothing_was_saved_and_before_the_first_step_writes_nothing(tmp_path):
    loss_fn, next_batch = regression_problem()
    with pytest.raises(train.TrainingInterrupted) as caught:
        train.fit(Linear(), loss_fn, interrupted_at(2, next_batch), train.TrainConfig(steps=6, progress=False))
    assert caught.value.checkpoint is None and "nothing saved" in str(caught.value)
    run = tmp_path / "run.pt"
    with pytest.raises(train.TrainingInterrupted) as caught:
        train.fit(Linear(), loss_fn, interrupted_at(0, next_batch),
                  train.TrainConfig(steps=6, checkpoint=str(run), progress=False))
    assert caught.value.step == 0 and caught.value.checkpoint is None and not run.exists()


def test_ctrl_c_while_the_final_metrics_are_measured_keeps_the_steps_and_measures_them_on_resume(tmp_path):
    loss_fn, next_batch = regression_problem()
    calls = []

    def metrics_fn(model):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return {"w": model.weight.item()}

    run = tmp_path / "run.pt"
    cfg = train.TrainConfig(steps=5, lr=1e-2, checkpoint=str(run), checkpoint_every=100, progress=False)
    with pytest.raises(train.TrainingInterrupted) as caught:
        train.fit(Linear(), loss_fn, next_batch, cfg, metrics_fn=metrics_fn)
    assert caught.value.step == 5 and train.read_checkpoint(run)["metrics"] == {"interrupted": True}
    again = train.fit(Linear(), loss_fn, next_batch, cfg, metrics_fn=metrics_fn)
    assert again.resumed_from == 5 and train.read_checkpoint(run)["metrics"] == again.metrics == {
        "w": again.model.weight.item()}


def test_temporary_files_of_a_killed_write_are_removed_on_the_next_start(tmp_path):
    loss_fn, next_batch = regression_problem()
    run = tmp_path / "run.pt"
    # what atomic_save leaves when killed mid-write: mkstemp's name in the checkpoint's folder
    orphans = []
    for _ in range(2):
        fd, name = tempfile.mkstemp(dir=tmp_path, prefix=run.name, suffix=".tmp")
        os.write(fd, b"half a checkpoint")
        os.close(fd)
        orphans.append(Path(name))
    others = [tmp_path / n for n in ("other.ptabcdefgh.tmp", "run.pt.notes", "run.ptabcdefgh.tmp.keep",
                                     "run.pt-mine.tmp", "xrun.ptabcdefgh.tmp", "notes.tmp")]
    for p in others:
        p.write_text("keep me")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "run.ptabcdefgh.tmp").write_text("another folder")
    assert train.orphan_temporaries(run) == sorted(orphans)
    train.fit(Linear(), loss_fn, next_batch, train.TrainConfig(steps=2, checkpoint=str(run), progress=False))
    assert not any(p.exists() for p in orphans)
    assert all(p.read_text() == "keep me" for p in others) and (tmp_path / "sub" / "run.ptabcdefgh.tmp").exists()
    assert train.read_checkpoint(run)["step"] == 2


def test_an_unwritable_checkpoint_is_refused_before_the_first_step(tmp_path):
    loss_fn, _ = regression_problem()
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    asked = []

    def next_batch(step):
        asked.append(step)
        return torch.ones(2, 1), torch.ones(2, 1)

    for path in (tmp_path / "notes.txt" / "run.pt", tmp_path / "notes.txt" / "deeper" / "run.pt"):
        with pytest.raises(ValueError, match=r"cannot be written: .*notes.txt is a file, not a folder"):
            train.fit(Linear(), loss_fn, next_batch, train.TrainConfig(steps=2, checkpoint=str(path), progress=False))
    with pytest.raises(ValueError, match="is a folder, not a file"):
        train.fit(Linear(), loss_fn, next_batch, train.TrainConfig(steps=2, checkpoint=str(tmp_path), progress=False))
    assert asked == []


def test_a_changed_learning_rate_on_resume_reaches_the_optimiser(tmp_path, capsys):
    loss_fn, next_batch = regression_problem()
    run = tmp_path / "run.pt"
    torch.manual_seed(1)
    train.fit(Linear(), loss_fn, next_batch, train.TrainConfig(steps=3, lr=1e-2, checkpoint=str(run), progress=False))
    copy = tmp_path / "copy.pt"
    copy.write_bytes(run.read_bytes())
    capsys.readouterr()
    new = train.fit(Linear(), loss_fn, next_batch,
                    train.TrainConfig(steps=6, lr=1e-3, checkpoint=str(run), progress=False))
    assert new.optimizer.param_groups[0]["lr"] == 1e-3
    assert train.read_checkpoint(run)["optimizer"]["param_groups"][0]["lr"] == 1e-3
    assert train.read_checkpoint(run)["train_config"]["lr"] == 1e-3
    out = capsys.readouterr().out
    assert f"lr changed from 0.01 to 0.001 on resume from {run}" in out and len(out.splitlines()) == 1
    same = train.fit(Linear(), loss_fn, next_batch,
                     train.TrainConfig(steps=6, lr=1e-2, checkpoint=str(copy), progress=False))
    assert "changed" not in capsys.readouterr().out  # same lr: no note
    assert not torch.equal(new.model.weight, same.model.weight)  # the new lr took the last three steps
    # an optimiser passed in keeps its own lr too
    model = Linear()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    train.fit(model, loss_fn, next_batch, train.TrainConfig(steps=7, checkpoint=str(copy), progress=False),
              optimizer=opt)
    assert opt.param_groups[0]["lr"] == 5e-4 and "from 0.01 to 0.0005" in capsys.readouterr().out


@pytest.mark.parametrize("field, value, words", [
    ("checkpoint_every", 0, "checkpoint_every must be an integer >= 1, got 0"),
    ("lr", 0.0, "lr must be > 0"),
    ("lr", -1e-3, "lr must be > 0"),
    ("ema_decay", 1.0, r"ema_decay must lie in \(0, 1\)"),
    ("steps", -1, "steps must be >= 0, got -1"),
    ("grad_clip", 0.0, "grad_clip must be > 0"),
])
def test_a_train_config_out_of_range_is_a_clear_error(tmp_path, field, value, words):
    loss_fn, next_batch = regression_problem()
    cfg = train.TrainConfig(**{"steps": 3, "checkpoint": str(tmp_path / "run.pt"), "progress": False, field: value})
    with pytest.raises(ValueError, match=words):
        train.fit(Linear(), loss_fn, next_batch, cfg)
