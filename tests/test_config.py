import pytest
import torch

from course_utils import config


def test_mode_from_env_and_argument(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "full")
    assert config.get_mode() == "full"
    assert config.sizes().train_steps == config.FULL.train_steps
    assert config.get_mode("FAST") == "fast"


def test_full_is_larger_than_fast_in_every_count():
    for field in ("n_samples", "n_test", "batch_size", "train_steps", "hidden", "mnist_steps", "n_images"):
        assert getattr(config.FULL, field) > getattr(config.FAST, field), field


def test_unknown_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "turbo")
    with pytest.raises(ValueError, match="Unknown course mode 'turbo'"):
        config.sizes()


def test_device_override_and_errors(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert config.get_device() == torch.device("cpu")
    with pytest.raises(ValueError, match="Unknown device 'gpu0'"):
        config.get_device("gpu0")
    with pytest.raises(ValueError, match="Unsupported device|Unknown device"):
        config.get_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            config.get_device("cuda")


def test_seed_everything_repeats_draws():
    config.seed_everything(3)
    a = torch.randn(5)
    gen = config.seed_everything(3)
    assert torch.equal(a, torch.randn(5))
    assert torch.equal(torch.randn(3, generator=gen), torch.randn(3, generator=torch.Generator().manual_seed(3)))
