import math

import pytest
import torch

from course_utils import metrics
from course_utils.models import classifier
from course_utils.mnist import load_mnist


def test_w2_of_a_shift_is_the_shift_length():
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    shift = torch.tensor([3.0, 4.0])
    assert metrics.wasserstein2(x, x + shift) == pytest.approx(5.0, rel=1e-6)
    assert metrics.wasserstein2(x, x[torch.randperm(300)]) == pytest.approx(0.0, abs=1e-6)


def test_w2_between_1d_samples_matches_sorted_matching():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(200, 1, generator=gen), 2 * torch.rand(200, 1, generator=gen)
    exact = (x.sort(0).values - y.sort(0).values).pow(2).mean().sqrt().item()
    assert metrics.wasserstein2(x, y) == pytest.approx(exact, rel=1e-6)


def test_w2_works_on_images_and_checks_shapes():
    x = torch.zeros(10, 1, 4, 4)
    assert metrics.wasserstein2(x, x + 0.5) == pytest.approx(0.5 * 4, rel=1e-6)
    with pytest.raises(ValueError, match="same D"):
        metrics.wasserstein2(torch.zeros(5, 2), torch.zeros(5, 3))


def test_mmd_is_near_zero_for_same_law_and_large_otherwise():
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(500, 2, generator=gen), torch.randn(500, 2, generator=gen)
    same = metrics.mmd_rbf(a, b)
    differ = metrics.mmd_rbf(a, b + 2.0)
    assert abs(same) < 0.01 and differ > 0.5
    with pytest.raises(ValueError, match="two samples"):
        metrics.mmd_rbf(a[:1], b)


def test_nll_of_standard_normal_matches_closed_form():
    x = torch.randn(100_000, 2, generator=torch.Generator().manual_seed(3))
    log_prob = lambda z: -0.5 * z.pow(2).sum(1) - math.log(2 * math.pi)  # noqa: E731
    nll = metrics.nll_nats(log_prob, x, batch_size=30_000)
    assert nll == pytest.approx(math.log(2 * math.pi) + 1, abs=0.02)
    assert metrics.bits_per_dim(nll, 2) == pytest.approx(nll / (2 * math.log(2)))
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        metrics.nll_nats(lambda z: z, x[:10])


@pytest.mark.parametrize("metric", [metrics.wasserstein2, metrics.mmd_rbf])
def test_non_finite_samples_are_refused(metric):
    good = torch.randn(20, 2)
    for bad_value in (float("nan"), float("inf")):
        bad = good.clone()
        bad[3, 1] = bad_value
        with pytest.raises(ValueError, match="first sample set has 1 point"):
            metric(bad, good)
        with pytest.raises(ValueError, match="second sample set has 1 point"):
            metric(good, bad)


def test_frechet_distance_of_shifted_and_scaled_gaussians():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 3, generator=gen)
    b = 2.0 * torch.randn(20000, 3, generator=gen) + torch.tensor([1.0, 0.0, 0.0])
    # ||Δμ||² + tr(I + 4I − 2·2I) = 1 + 3
    assert metrics.frechet_distance(a, b) == pytest.approx(4.0, abs=0.1)
    with pytest.raises(ValueError, match="Feature sets"):
        metrics.frechet_distance(a, b[:, :2])


def test_frechet_distance_matches_the_gaussian_closed_form():
    gen = torch.Generator().manual_seed(0)
    n, d = 200_000, 3
    mu_a, mu_b = torch.tensor([0.0, 1.0, -1.0]), torch.tensor([0.5, 1.0, 1.0])
    sd_a, sd_b = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([1.5, 1.0, 0.5])
    a = mu_a + sd_a * torch.randn(n, d, generator=gen)
    b = mu_b + sd_b * torch.randn(n, d, generator=gen)
    # diagonal covariances: ||mu_a - mu_b||^2 + sum (sd_a - sd_b)^2
    exact = ((mu_a - mu_b) ** 2).sum() + ((sd_a - sd_b) ** 2).sum()
    assert metrics.frechet_distance(a, b) == pytest.approx(exact.item(), abs=0.03)
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


class PixelClassifier(torch.nn.Module):
    """A stand-in classifier: logits are the first 10 pixels, features the first 6."""

    def forward(self, x):
        return x.flatten(1)[:, :10]

    def features(self, x):
        return x.flatten(1)[:, :6]


def test_class_accuracy_counts_the_argmax_hits_across_batches():
    gen = torch.Generator().manual_seed(4)
    images = torch.rand(1234, 1, 4, 4, generator=gen)
    argmax = images.flatten(1)[:, :10].argmax(1)
    labels = argmax.clone()
    labels[:300] = (labels[:300] + 1) % 10  # 300 of the 1,234 read wrong
    for batch_size in (1234, 500, 7):  # whole, uneven and tiny batches give the same count
        assert metrics.class_accuracy(PixelClassifier(), images, labels, batch_size) == pytest.approx(934 / 1234)
    assert metrics.class_accuracy(PixelClassifier(), images, argmax) == 1.0


def test_image_fd_is_the_frechet_distance_of_the_features():
    gen = torch.Generator().manual_seed(5)
    a, b = torch.randn(400, 1, 4, 4, generator=gen), 1.5 * torch.randn(300, 1, 4, 4, generator=gen) + 0.3
    direct = metrics.frechet_distance(a.flatten(1)[:, :6], b.flatten(1)[:, :6])
    assert metrics.image_fd(PixelClassifier(), a, b, batch_size=64) == pytest.approx(direct, rel=1e-12)
    # closed form for these laws: 6 · 0.3² + 6 · (1.5 − 1)², up to sampling error
    assert direct == pytest.approx(6 * 0.09 + 6 * 0.25, abs=0.4)


def test_classifier_metrics_refuse_bad_input():
    clf = PixelClassifier()
    with pytest.raises(ValueError, match="5 images but 4 labels"):
        metrics.class_accuracy(clf, torch.rand(5, 1, 4, 4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels \(N,\)"):
        metrics.class_accuracy(clf, torch.rand(5, 1, 4, 4), torch.zeros(5, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one image"):
        metrics.class_accuracy(clf, torch.rand(0, 1, 4, 4), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="features"):
        metrics.image_fd(torch.nn.Flatten(), torch.rand(5, 1, 4, 4), torch.rand(5, 1, 4, 4))


@pytest.fixture(scope="module")
def shipped():
    clf = classifier.load_classifier()
    test = load_mnist("test", quiet=True)
    return clf, test, load_mnist("train", quiet=True)


def test_accuracy_of_real_test_digits_is_the_shipped_classifiers_test_accuracy(shipped):
    clf, test, _ = shipped
    recorded = torch.load(classifier.default_path(), weights_only=True)["metrics"]
    if recorded["source"] != test.source:
        pytest.skip(f"the shipped classifier was scored on {recorded['source']} digits, this run reads {test.source}")
    acc = metrics.class_accuracy(clf, test.images, test.labels)
    assert acc == pytest.approx(recorded["test_accuracy"], abs=1e-6) and recorded["test_images"] == len(test)
    assert acc > 0.97
    assert metrics.class_accuracy(clf, test.images, (test.labels + 1) % 10) < 0.05  # wrong labels score near 0


def test_image_fd_is_zero_for_a_set_with_itself_and_grows_with_noise(shipped):
    clf, test, train = shipped
    real = test.images[:500]
    assert metrics.image_fd(clf, real, real) == pytest.approx(0.0, abs=1e-6)
    gen = torch.Generator().manual_seed(6)
    noise = torch.randn(real.shape, generator=gen)
    fds = [metrics.image_fd(clf, (real + sigma * noise).clamp(-1, 1), real) for sigma in (0.1, 0.3, 0.6, 1.0)]
    assert all(a < b for a, b in zip(fds, fds[1:])), fds
    # other real digits sit far closer than noised ones: the FD sees what a digit looks like
    fd_real = metrics.image_fd(clf, train.images[:500], real)
    assert fd_real < 0.5 * fds[-1], (fd_real, fds)


# --- metrics refuse what would give a silently wrong number ------------------------------------------

def _digits(n=30, seed=7):
    """Images in [-1, 1] and labels that PixelClassifier reads right (argmax of the first 10 pixels)."""
    images = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return images, images.flatten(1)[:, :10].argmax(1)


def test_class_accuracy_refuses_non_finite_images():
    images, labels = _digits(3)
    for bad_value in (float("nan"), float("inf"), -float("inf")):
        bad = images.clone()
        bad[1, 0, 2, 2] = bad_value  # today: a silent 0.333
        with pytest.raises(ValueError, match="class_accuracy: 1 of the 3 images have NaN or infinite pixels"):
            metrics.class_accuracy(PixelClassifier(), bad, labels)


def test_class_accuracy_refuses_images_off_the_minus_one_one_scale():
    images, labels = _digits()
    pixels = ((images + 1) * 127.5).round().index_fill(0, torch.tensor([0]), 255.0)  # 0..255
    with pytest.raises(ValueError, match=r"the classifier expects images in \[−1, 1\]; got values up to 255: "
                                         r"divide by 127.5 and subtract 1\.$"):
        metrics.class_accuracy(PixelClassifier(), pixels, labels)
    with pytest.raises(ValueError, match=r"the classifier expects images in \[−1, 1\]; got values up to 2: "
                                         r"map them to \[−1, 1\]"):
        zero_two = (images + 1).index_fill(0, torch.tensor([0]), 2.0)  # [0, 2]
        metrics.class_accuracy(PixelClassifier(), zero_two, labels)
    with pytest.raises(ValueError, match=r"got values from -[\d.]+ to [\d.]+: samples this far out are no images"):
        metrics.class_accuracy(PixelClassifier(), images * 40, labels)  # a sampler that diverged
    with pytest.raises(ValueError, match=r"images are torch.uint8, but the classifier expects float images"):
        metrics.class_accuracy(PixelClassifier(), pixels.to(torch.uint8), labels)
    # unclamped samples of a few-step sampler overshoot [-1, 1] a little: judged as they are
    assert metrics.class_accuracy(PixelClassifier(), images * 3, labels) == 1.0


def test_class_accuracy_refuses_labels_out_of_range_or_not_integers():
    images, labels = _digits()
    for wrong, shown in (((labels + 10), r"from 1\d to 1\d"), (labels - 10, r"from -\d+ to -\d+")):
        with pytest.raises(ValueError, match=r"labels must be class indices in 0..9 \(the classifier has 10 logits\); "
                                             "got values " + shown):
            metrics.class_accuracy(PixelClassifier(), images, wrong)
    with pytest.raises(ValueError, match=r"labels are torch.float32; pass integer class indices \(labels.long\(\)\)"):
        metrics.class_accuracy(PixelClassifier(), images, labels.float())
    with pytest.raises(ValueError, match="30 images but 29 labels"):
        metrics.class_accuracy(PixelClassifier(), images, labels[:29])


def test_class_accuracy_casts_float64_images_to_the_classifiers_dtype():
    net = classifier.MNISTClassifier(width=8).eval()
    images = torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    labels = torch.arange(12) % 10
    assert metrics.class_accuracy(net, images.double(), labels) == metrics.class_accuracy(net, images, labels)


def test_frechet_distance_refuses_non_finite_features_and_single_samples():
    a, b = torch.randn(50, 3), torch.randn(40, 3)
    bad = a.clone()
    bad[[3, 7], 0] = float("nan")
    with pytest.raises(ValueError, match=r"The first feature set has 2 row\(s\) with NaN or infinite values"):
        metrics.frechet_distance(bad, b)
    with pytest.raises(ValueError, match=r"The second feature set has 2 row\(s\)"):
        metrics.frechet_distance(b, bad.clone().fill_(float("inf"))[:2])
    with pytest.raises(ValueError, match="frechet_distance needs at least two samples in each feature set "
                                         r"\(a covariance needs two\), got 1 and 40"):
        metrics.frechet_distance(a[:1], b)


def test_image_fd_refuses_non_finite_images_and_fewer_than_two():
    a, b = torch.rand(20, 1, 4, 4) * 2 - 1, torch.rand(10, 1, 4, 4) * 2 - 1
    bad = b.clone()
    bad[4] = float("nan")
    with pytest.raises(ValueError, match="image_fd: 1 of the 10 images of the second set have NaN or infinite pixels"):
        metrics.image_fd(PixelClassifier(), a, bad)
    pixels = ((a + 1) * 127.5).round().index_fill(0, torch.tensor([3]), 255.0)
    with pytest.raises(ValueError, match=r"image_fd: the classifier expects images in \[−1, 1\]; got values up to 255:"):
        metrics.image_fd(PixelClassifier(), pixels, b)
    with pytest.raises(ValueError, match=r"image_fd needs at least two images in each set \(a covariance needs two\), "
                                         "got 20 and 1"):
        metrics.image_fd(PixelClassifier(), a, b[:1])


@pytest.mark.parametrize("metric, least", [(metrics.wasserstein2, "one sample"), (metrics.mmd_rbf, "two samples")])
def test_sample_metrics_refuse_empty_sets(metric, least):
    x = torch.randn(10, 2)
    for first, second, shown in ((x[:0], x, "0 and 10"), (x, x[:0], "10 and 0")):
        with pytest.raises(ValueError, match=f"needs at least {least} in each set, got {shown}"):
            metric(first, second)


def test_nll_refuses_empty_and_non_finite_points_and_a_nan_log_density():
    log_prob = lambda z: -0.5 * z.pow(2).sum(1) - math.log(2 * math.pi)  # noqa: E731
    with pytest.raises(ValueError, match=r"nll_nats needs a non-empty set of points \(N, \*D\), got \(0, 2\)"):
        metrics.nll_nats(log_prob, torch.zeros(0, 2))
    x = torch.randn(20, 2)
    x[5, 1] = float("nan")
    with pytest.raises(ValueError, match=r"The set of points passed to nll_nats has 1 point\(s\) with NaN or infinite"):
        metrics.nll_nats(log_prob, x)
    with pytest.raises(ValueError, match="log_prob returned NaN for some points"):
        metrics.nll_nats(lambda z: log_prob(z).log(), torch.randn(20, 2))  # log of negative numbers
    assert metrics.nll_nats(lambda z: torch.full((len(z),), -math.inf), torch.randn(3, 2)) == math.inf  # zero density
    with pytest.raises(ValueError, match="bits_per_dim needs the number of dimensions"):
        metrics.bits_per_dim(1.0, 0)
