"""Gaussian mixtures: density against torch.distributions, score against autograd, noising."""

import math

import pytest
import torch
from torch import distributions as td

from course_utils import data, mixtures
from course_utils.schedules import VPSchedule, VESchedule


def make_mixture(event_shape=(2,), dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    k = 3
    means = 2 * torch.randn(k, *event_shape, generator=gen, dtype=dtype)
    stds = 0.3 + torch.rand(k, *event_shape, generator=gen, dtype=dtype)
    return mixtures.GaussianMixture(means, stds, [0.2, 0.5, 0.3])


def torch_mixture(gm):
    comps = td.Independent(td.Normal(gm.means.flatten(1), gm.stds.flatten(1)), 1)
    return td.MixtureSameFamily(td.Categorical(probs=gm.weights), comps)


@pytest.mark.parametrize("event_shape", [(2,), (1, 4, 4)])
def test_log_prob_matches_torch_distributions(event_shape):
    gm = make_mixture(event_shape)
    x = 2 * torch.randn(7, *event_shape, dtype=torch.float64)
    torch.testing.assert_close(gm.log_prob(x), torch_mixture(gm).log_prob(x.flatten(1)))


@pytest.mark.parametrize("event_shape", [(2,), (1, 4, 4)])
def test_score_is_gradient_of_log_prob(event_shape):
    gm = make_mixture(event_shape)
    x = (2 * torch.randn(5, *event_shape, dtype=torch.float64)).requires_grad_()
    (grad,) = torch.autograd.grad(gm.log_prob(x).sum(), x)
    torch.testing.assert_close(gm.score(x.detach()), grad)


def test_isotropic_stds_and_float32_inputs():
    gm = mixtures.GaussianMixture([[0.0, 0.0], [3.0, 0.0]], [0.5, 1.0])
    assert gm.stds.shape == (2, 2) and gm.stds.dtype == torch.float32
    torch.testing.assert_close(gm.weights, torch.tensor([0.5, 0.5]))
    x = torch.zeros(1, 2)
    want = math.log(0.5 * math.exp(-0.0) / (2 * math.pi * 0.25) + 0.5 * math.exp(-4.5) / (2 * math.pi))
    assert abs(gm.log_prob(x).item() - want) < 1e-5


def test_sample_moments_and_mode_weights():
    gm = make_mixture()
    x = gm.sample(40_000, generator=torch.Generator().manual_seed(1))
    assert x.shape == (40_000, 2) and x.dtype == torch.float64
    torch.testing.assert_close(x.mean(0), gm.mean(), atol=0.05, rtol=0)
    counts = torch.bincount(gm.responsibilities(x).argmax(1), minlength=3).double() / len(x)
    torch.testing.assert_close(counts, gm.weights, atol=0.03, rtol=0)
    # the same generator seed gives the same samples
    torch.testing.assert_close(gm.sample(5, generator=torch.Generator().manual_seed(3)),
                               gm.sample(5, generator=torch.Generator().manual_seed(3)))


def test_noised_is_law_of_alpha_x_plus_sigma_eps():
    gm = make_mixture()
    gen = torch.Generator().manual_seed(2)
    alpha, sigma = 0.6, 0.8
    x = gm.sample(50_000, generator=gen)
    z = alpha * x + sigma * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    noised = gm.noised(alpha, sigma)
    torch.testing.assert_close(noised.means, alpha * gm.means)
    torch.testing.assert_close(noised.stds, torch.sqrt(alpha**2 * gm.stds**2 + sigma**2))
    # the average log-density of draws of z is the (negative) entropy: same for both samplers
    z2 = noised.sample(50_000, generator=gen)
    assert abs(noised.log_prob(z).mean() - noised.log_prob(z2).mean()) < 0.03
    # noise level alpha = 1, sigma = 0 changes nothing
    torch.testing.assert_close(gm.noised(1.0, 0.0).log_prob(x[:10]), gm.log_prob(x[:10]))


def test_batched_noising_equals_one_level_per_row():
    gm = make_mixture()
    x = torch.randn(4, 2, dtype=torch.float64)
    alpha = torch.tensor([1.0, 0.8, 0.5, 0.1], dtype=torch.float64)
    sigma = torch.sqrt(1 - alpha**2)
    batched = gm.noised(alpha, sigma)
    assert batched.batched and batched.means.shape == (4, 3, 2)
    rows_score = torch.cat([gm.noised(a, s).score(x[i:i + 1]) for i, (a, s) in enumerate(zip(alpha, sigma))])
    rows_lp = torch.cat([gm.noised(a, s).log_prob(x[i:i + 1]) for i, (a, s) in enumerate(zip(alpha, sigma))])
    torch.testing.assert_close(batched.score(x), rows_score)
    torch.testing.assert_close(batched.log_prob(x), rows_lp)
    with pytest.raises(ValueError, match="rows"):
        batched.score(torch.randn(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="un-noised"):
        batched.sample(3)


def append(v, x):
    return v.reshape(-1, *([1] * (x.ndim - 1)))


@pytest.mark.parametrize("event_shape", [(2,), (1, 4, 4)])
def test_posterior_mean_is_tweedie_and_the_regression_of_x_on_z(event_shape):
    """E[x | z = αx + σε] by conjugacy equals Tweedie's (z + σ² ∇log p_t(z)) / α, per row, and leaves a
    residual x − E[x | z] uncorrelated with z."""
    gm = make_mixture(event_shape)
    z = 2 * torch.randn(6, *event_shape, dtype=torch.float64)
    alpha = torch.tensor([1.0, 0.9, 0.7, 0.5, 0.3, 0.1], dtype=torch.float64)
    sigma = torch.sqrt(1 - alpha**2) + 0.05
    tweedie = (z + append(sigma**2, z) * gm.noised(alpha, sigma).score(z)) / append(alpha, z)
    torch.testing.assert_close(gm.posterior_mean(z, alpha, sigma), tweedie)
    torch.testing.assert_close(gm.posterior_mean(z, 1.0, 0.0), z)  # no noise: x = z
    gen = torch.Generator().manual_seed(4)
    x = gm.sample(100_000, generator=gen)
    z = 0.8 * x + 0.6 * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    residual = (x - gm.posterior_mean(z, 0.8, 0.6)).flatten(1)
    assert residual.mean(0).abs().max() < 0.02
    assert (residual[:, :, None] * z.flatten(1)[:, None, :]).mean(0).abs().max() < 0.02


def test_noise_levels_broadcast_and_sigma_as_time():
    """A float alpha with one sigma per row is a batched mixture; without a schedule, t is σ (alpha = 1)."""
    gm = make_mixture()
    x = torch.randn(4, 2, dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.5, 1.0, 3.0], dtype=torch.float64)
    ones = torch.ones(4, dtype=torch.float64)
    torch.testing.assert_close(gm.noised(1.0, sigma).score(x), gm.noised(ones, sigma).score(x))
    torch.testing.assert_close(gm.marginal_score()(x, sigma), gm.noised(1.0, sigma).score(x))
    torch.testing.assert_close(gm.marginal_log_prob()(x, 0.5), gm.noised(1.0, 0.5).log_prob(x))
    with pytest.raises(ValueError, match="non-negative"):
        gm.noised(1.0, -sigma)
    with pytest.raises(ValueError, match="one length"):
        gm.noised(torch.ones(3), sigma)


@pytest.mark.parametrize("schedule", [VPSchedule(), VESchedule()])
def test_marginal_score_uses_the_schedule(schedule):
    gm = make_mixture()
    x = torch.randn(6, 2, dtype=torch.float64)
    t = torch.linspace(0.05, 1.0, 6, dtype=torch.float64)
    s = schedule(t)
    torch.testing.assert_close(gm.marginal_score(schedule)(x, t), gm.noised(s.alpha_t, s.sigma_t).score(x))
    torch.testing.assert_close(gm.marginal_log_prob(schedule)(x, 0.3),
                               gm.marginal(schedule, 0.3).log_prob(x))


def test_eight_gaussians_is_the_toy_data_set():
    gm = mixtures.eight_gaussians()
    gen = torch.Generator().manual_seed(0)
    toy = data.sample_toy("8gaussians", 20_000, generator=gen)
    ours = gm.sample(20_000, generator=gen)
    torch.testing.assert_close(toy.mean(0), ours.mean(0), atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(toy.T), torch.cov(ours.T), atol=0.03, rtol=0)
    # both sets have the same average log-density under the mixture (its negative entropy)
    assert abs(gm.log_prob(toy).mean() - gm.log_prob(ours).mean()) < 0.05
    counts = torch.bincount(gm.responsibilities(toy).argmax(1), minlength=8) / len(toy)
    assert (counts - 1 / 8).abs().max() < 0.015


def test_clear_errors():
    with pytest.raises(ValueError, match=r"\(K, \*D\)"):
        mixtures.GaussianMixture([1.0, 2.0], 1.0)
    with pytest.raises(ValueError, match="positive"):
        mixtures.GaussianMixture([[0.0], [1.0]], [1.0, -1.0])
    with pytest.raises(ValueError, match="weights"):
        mixtures.GaussianMixture([[0.0], [1.0]], 1.0, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="stds"):
        mixtures.GaussianMixture([[0.0], [1.0]], [1.0, 2.0, 3.0])
    gm = mixtures.GaussianMixture([[0.0, 0.0]], 1.0)
    with pytest.raises(ValueError, match=r"shape \(B, 2\)"):
        gm.log_prob(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="positive integer"):
        gm.sample(0)
