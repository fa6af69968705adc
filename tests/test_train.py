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
    assert res.best_model is res.ema_model


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
