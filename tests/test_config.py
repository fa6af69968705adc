import os

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


# --- CPU threads ---------------------------------------------------------------------------------


@pytest.fixture
def threads_restored(monkeypatch):
    """Leave torch's thread count and config's record of it as they were (1 under pytest)."""
    saved = torch.get_num_threads()
    monkeypatch.setattr(config, "_threads_choice", None)
    yield
    torch.set_num_threads(saved)


def test_set_threads_per_workload(monkeypatch, threads_restored):
    monkeypatch.delenv("COURSE_THREADS", raising=False)
    for cores, image in ((1, 1), (2, 2), (4, 3), (8, 7)):
        monkeypatch.setattr(config, "physical_cores", lambda cores=cores: cores)
        assert config.set_threads("2d") == 1 and torch.get_num_threads() == 1, cores
        assert config.set_threads("image") == image and torch.get_num_threads() == image, cores
    assert config.set_threads(" Image ") == image  # spelled loosely


def test_image_threads_follow_the_machine(monkeypatch, threads_restored):
    monkeypatch.delenv("COURSE_THREADS", raising=False)
    usable = config.usable_cpus()
    assert 1 <= config.physical_cores() <= usable <= (os.cpu_count() or usable)
    if hasattr(os, "sched_getaffinity"):
        assert usable == len(os.sched_getaffinity(0))
    n = config.set_threads("image")
    assert 1 <= n <= config.physical_cores() and torch.get_num_threads() == n


def test_course_threads_overrides_the_workload(monkeypatch, threads_restored):
    monkeypatch.setenv("COURSE_THREADS", " 3 ")
    assert config.set_threads("2d") == 3 and torch.get_num_threads() == 3
    assert "| threads: 3 (2d, COURSE_THREADS) |" in config.describe(torch.device("cpu"))
    monkeypatch.setenv("COURSE_THREADS", "")  # empty: as if unset
    assert config.set_threads("2d") == 1


def test_pytest_keeps_one_thread_per_process(threads_restored):
    # the root conftest.py sets COURSE_THREADS (to 1 unless the caller chose otherwise), so a
    # notebook kernel's set_threads("image") does not fight the other pytest-xdist workers
    assert config.set_threads("image") == int(os.environ["COURSE_THREADS"])


@pytest.mark.parametrize("raw", ["0", "-2", "two", "1.5"])
def test_a_bad_course_threads_is_one_clear_line(monkeypatch, threads_restored, raw):
    monkeypatch.setenv("COURSE_THREADS", raw)
    before = torch.get_num_threads()
    with pytest.raises(ValueError) as err:
        config.set_threads("2d")
    message = str(err.value)
    assert message.startswith(f"COURSE_THREADS={raw!r} is not a positive integer")
    assert "unset it" in message and "\n" not in message
    assert torch.get_num_threads() == before


def test_unknown_workload_names_the_allowed_ones(threads_restored):
    with pytest.raises(ValueError, match=r"Unknown thread workload 'video': use one of '2d', 'image'\."):
        config.set_threads("video")


def test_set_threads_after_parallel_work_still_sets_the_intra_op_count(monkeypatch, threads_restored):
    monkeypatch.setenv("COURSE_THREADS", "2")
    torch.randn(256, 256) @ torch.randn(256, 256)

    def too_late(n):
        raise RuntimeError("Error: cannot set number of interop threads after parallel work has started")

    monkeypatch.setattr(torch, "set_num_interop_threads", too_late)
    assert config.set_threads("image") == 2 and torch.get_num_threads() == 2
    monkeypatch.undo()
    monkeypatch.setattr(config, "_threads_choice", None)
    config.set_threads("2d")  # the real torch call, twice in one process: no error either
    config.set_threads("2d")


def test_describe_says_the_threads_on_one_line(monkeypatch, threads_restored):
    monkeypatch.delenv("COURSE_THREADS", raising=False)
    line = config.describe(torch.device("cpu"))
    assert f"| device: cpu | threads: {torch.get_num_threads()} | torch {torch.__version__}" in line
    config.set_threads("2d")
    line = config.describe(torch.device("cpu"))
    assert line == f"course mode: {config.get_mode()} | device: cpu | threads: 1 (2d) | torch {torch.__version__}"
    torch.set_num_threads(2)  # changed behind config's back: no workload claimed
    assert "| threads: 2 | torch" in config.describe(torch.device("cpu"))
