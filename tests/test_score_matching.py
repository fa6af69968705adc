"""Tests of course_utils.score_matching: the four objectives and Tweedie, against the analytic
mixture of course_utils.mixtures (its noised density p_σ = `noised(1, σ)`, its denoiser)."""

import math

import pytest
import torch

from course_utils import exercises, score_matching
from course_utils.cnf import divergence_exact
from course_utils.mixtures import GaussianMixture
from course_utils.models import mlp
from course_utils.score_matching import (
    RegionErrors,
    autograd_score,
    between_modes,
    denoising_score_matching_loss,
    dsm_minimum,
    explicit_score_matching_loss,
    implicit_score_matching_loss,
    ncsn_toy,
    poor_where_rare,
    rare_region_error,
    sliced_score_matching_loss,
    tweedie_denoise,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def mix():
    means = torch.tensor([[-1.5, -1.0], [1.5, -1.0], [0.0, 1.5]], dtype=torch.float64)
    return GaussianMixture(means, [0.5, 0.4, 0.3], [0.5, 0.3, 0.2])


def test_log_prob_integrates_to_one(mix):
    xs = torch.linspace(-6, 6, 401, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    pts = torch.stack([gx.ravel(), gy.ravel()], 1)
    cell = (xs[1] - xs[0]) ** 2
    for sigma in (0.0, 0.7):
        total = (mix.noised(1.0, sigma).log_prob(pts).exp().sum() * cell).item()
        assert abs(total - 1) < 1e-4


def test_log_prob_matches_single_gaussian():
    g = GaussianMixture(torch.tensor([[1.0, -2.0]], dtype=torch.float64), 0.5)
    x = torch.randn(7, 2, generator=gen(), dtype=torch.float64)
    want = torch.distributions.MultivariateNormal(g.means[0], 0.25 * torch.eye(2, dtype=torch.float64)).log_prob(x)
    torch.testing.assert_close(g.log_prob(x), want)
    torch.testing.assert_close(g.score(x), -(x - g.means[0]) / 0.25)


def test_score_closed_form_equals_autograd(mix):
    x = mix.sample(64, generator=gen()) * 1.5
    for sigma in (0.0, 0.3, torch.rand(64, generator=gen(1), dtype=torch.float64)):
        p_sigma = mix.noised(1.0, sigma)
        torch.testing.assert_close(p_sigma.score(x), autograd_score(p_sigma.log_prob, x))
        torch.testing.assert_close(mix.marginal_score()(x, sigma), p_sigma.score(x))  # NCSN's score(x, σ)
    # the normaliser drops out: an unnormalised log-density has the same score
    torch.testing.assert_close(autograd_score(lambda y: mix.log_prob(y) + 17.0, x), mix.score(x))


def test_sample_moments(mix):
    x = mix.sample(200_000, generator=gen())
    mean = (mix.weights[:, None] * mix.means).sum(0)
    assert (x.mean(0) - mean).abs().max() < 0.01
    # E||x||² = Σ w_k (||μ_k||² + Σ_d s_kd²)
    second = (mix.weights * (mix.means.pow(2).sum(1) + mix.stds.pow(2).sum(1))).sum()
    assert abs(x.pow(2).sum(1).mean() - second) < 0.02


def test_noised_density_is_the_convolution(mix):
    """p_σ(y) = E_x N(y; x, σ²I), estimated by Monte Carlo over x ~ p."""
    sigma = 0.5
    x = mix.sample(400_000, generator=gen())
    y = torch.tensor([[0.0, 0.0], [-1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    kernel = torch.exp(-torch.cdist(y, x).pow(2) / (2 * sigma**2)) / (2 * math.pi * sigma**2)
    torch.testing.assert_close(mix.noised(1.0, sigma).log_prob(y), kernel.mean(1).log(), atol=0.02, rtol=0)


def test_tweedie_equals_posterior_mean(mix):
    sigma = 0.6
    x_tilde = torch.randn(50, 2, generator=gen(), dtype=torch.float64) * 2
    torch.testing.assert_close(tweedie_denoise(x_tilde, mix.noised(1.0, sigma).score(x_tilde), sigma),
                               mix.posterior_mean(x_tilde, 1.0, sigma))
    # one noise level per row, and a scaled path z = αx + σε: E[x | z] = (z + σ² ∇log p_t(z)) / α
    sig = torch.linspace(0.1, 1.9, 50, dtype=torch.float64)
    torch.testing.assert_close(tweedie_denoise(x_tilde, mix.noised(1.0, sig).score(x_tilde), sig),
                               mix.posterior_mean(x_tilde, 1.0, sig))
    alpha = torch.sqrt(1 - sig**2 / 4)
    want = (x_tilde + (sig**2)[:, None] * mix.noised(alpha, sig).score(x_tilde)) / alpha[:, None]
    torch.testing.assert_close(mix.posterior_mean(x_tilde, alpha, sig), want)


def test_posterior_mean_is_the_regression_of_x_on_x_tilde(mix):
    """E[x | x̃] leaves a residual uncorrelated with x̃ and beats the identity denoiser."""
    sigma = 0.6
    x = mix.sample(200_000, generator=gen())
    x_tilde = x + sigma * torch.randn(x.shape, generator=gen(1), dtype=torch.float64)
    residual = x - mix.posterior_mean(x_tilde, 1.0, sigma)
    assert residual.mean(0).abs().max() < 0.01
    assert (residual[:, :, None] * x_tilde[:, None, :]).mean(0).abs().max() < 0.01
    assert residual.pow(2).sum(1).mean() < 0.5 * (x - x_tilde).pow(2).sum(1).mean()


def test_ism_trace_is_the_cnf_divergence():
    """ISM's tr ∇s is notebook 03's exact divergence: the trace of a linear field, on points and images."""
    a = torch.randn(4, 4, generator=gen(), dtype=torch.float64)
    x = torch.randn(5, 4, generator=gen(1), dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(divergence_exact(x @ a.T, x), torch.full((5,), a.trace().item(), dtype=torch.float64))
    img = torch.randn(3, 1, 2, 2, generator=gen(2), dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(divergence_exact(3 * img, img), torch.full((3,), 12.0, dtype=torch.float64))
    # ISM of s(x) = A x is E[tr A + ½||A x||²]
    y = x.detach()
    want = a.trace() + 0.5 * (y @ a.T).pow(2).sum(1).mean()
    torch.testing.assert_close(implicit_score_matching_loss(lambda v: v @ a.T, y), want)


def gaussian_model(m, v):
    return lambda x: -(x - m) / v


def test_ism_closed_form_and_esm_gap_for_gaussian_data():
    """Data N(μ, s²I), model −(x − m)/v: ISM = −D/v + (D s² + ||μ − m||²)/(2v²), ESM − ISM = D/(2s²)."""
    mu, s, d = torch.tensor([0.5, -1.0], dtype=torch.float64), 0.8, 2
    x = mu + s * torch.randn(400_000, d, generator=gen(), dtype=torch.float64)
    true_score = gaussian_model(mu, s**2)
    for m, v in [(0.0, 0.5), (1.0, 2.0), (-0.5, 0.64), (0.3, 4.0)]:
        ism = implicit_score_matching_loss(gaussian_model(m, v), x).item()
        want = -d / v + (d * s**2 + (mu - m).pow(2).sum().item()) / (2 * v**2)
        assert abs(ism - want) < 0.02 * max(1.0, abs(want))
        esm = explicit_score_matching_loss(gaussian_model(m, v), x, true_score).item()
        assert abs((esm - ism) - d / (2 * s**2)) < 0.03
        # negative control: without the trace term the gap to ESM moves with θ (by D/v here)
        no_trace = 0.5 * gaussian_model(m, v)(x).pow(2).sum(1).mean().item()
        assert abs((esm - no_trace) - d / (2 * s**2)) > 0.4


def test_sliced_matches_implicit_on_average(mix):
    x = mix.sample(4000, generator=gen())
    score = lambda y: -(y - 0.3) / 0.9 + 0.2 * torch.sin(2 * y)  # a nonlinear score model
    ism = implicit_score_matching_loss(score, x).item()
    for vr in (False, True):
        ssm = sliced_score_matching_loss(score, x, n_projections=200, generator=gen(1), variance_reduction=vr)
        assert abs(ssm.item() - ism) < 0.03 * abs(ism) + 0.02
    # negative control: the projected trace term left out, the sliced objective misses ISM by far
    v = torch.randn(x.shape, generator=gen(3), dtype=x.dtype)
    no_jacobian = 0.5 * (score(x) * v).sum(1).pow(2).mean().item()
    assert abs(no_jacobian - ism) > 0.05 * abs(ism) + 0.03 + 1.0
    # one projection is noisy but unbiased: it differs from ISM on a small batch
    one = sliced_score_matching_loss(score, x[:64], n_projections=1, generator=gen(2)).item()
    assert one != pytest.approx(implicit_score_matching_loss(score, x[:64]).item(), abs=1e-6)


def test_losses_are_differentiable_in_parameters(mix):
    theta = torch.tensor([0.1, 1.0], dtype=torch.float64, requires_grad=True)
    score = lambda y: -(y - theta[0]) / theta[1]
    x = mix.sample(100, generator=gen())
    for loss in (implicit_score_matching_loss(score, x),
                 sliced_score_matching_loss(score, x, generator=gen(1)),
                 denoising_score_matching_loss(score, x, 0.3, generator=gen(2))):
        (grad,) = torch.autograd.grad(loss, theta)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_dsm_equals_esm_of_noised_density_plus_constant(mix):
    """DSM(s) − ½E||s − ∇log p_σ||² is the same for every model s (Vincent 2011)."""
    sigma = 0.4
    x = mix.sample(300_000, generator=gen())
    eps = torch.randn(x.shape, generator=gen(1), dtype=torch.float64)
    x_tilde = x + sigma * eps
    p_sigma = mix.noised(1.0, sigma)
    gaps = []
    for m, v in [(0.0, 0.5), (1.0, 2.0), (-0.5, 1.0)]:
        model = gaussian_model(m, v)
        dsm = denoising_score_matching_loss(model, x, sigma, eps).item()
        esm = explicit_score_matching_loss(model, x_tilde, p_sigma.score).item()
        gaps.append(dsm - esm)
    assert max(gaps) - min(gaps) < 0.03
    # hence the noised score itself has the smallest DSM loss of all
    best = denoising_score_matching_loss(p_sigma.score, x, sigma, eps).item()
    clean = denoising_score_matching_loss(lambda y: mix.score(y), x, sigma, eps).item()
    assert best < clean - 0.1
    assert abs(best - gaps[0]) < 0.03


def test_dsm_closed_form_for_gaussian_data():
    """Data N(0, s²I): at the optimum s* = −x̃/(s² + σ²), DSM = ½ D (1/σ² − 1/(s² + σ²)) > 0."""
    s, sigma, d = 1.0, 0.5, 3
    x = s * torch.randn(300_000, d, generator=gen(), dtype=torch.float64)
    loss = denoising_score_matching_loss(lambda y: -y / (s**2 + sigma**2), x, sigma, generator=gen(1)).item()
    # residual −x̃/(s²+σ²) + ε/σ: E||·||² = D[1/(s²+σ²) − 2/(s²+σ²) + 1/σ²]
    want = 0.5 * d * (1 / sigma**2 - 1 / (s**2 + sigma**2))
    assert abs(loss - want) < 0.01 * want


def test_dsm_minimum_closed_form_for_gaussian_data():
    """Data N(0, s²I): p_σ = N(0, (s² + σ²)I), E||∇log p_σ||² = D/(s² + σ²), so the minimum is
    ½ D (1/σ² − 1/(s² + σ²)); `dsm_minimum` gets it from log p_σ's Laplacian alone."""
    s, d = 1.0, 3
    for sigma in (0.1, 0.5):
        x_tilde = math.sqrt(s**2 + sigma**2) * torch.randn(1000, d, generator=gen(), dtype=torch.float64)
        noised = GaussianMixture(torch.zeros(1, d, dtype=torch.float64), math.sqrt(s**2 + sigma**2))
        want = 0.5 * d * (1 / sigma**2 - 1 / (s**2 + sigma**2))
        torch.testing.assert_close(dsm_minimum(noised.log_prob, x_tilde, sigma).item(), want)  # Δ log p is constant
    with pytest.raises(ValueError, match="positive noise"):
        dsm_minimum(noised.log_prob, x_tilde, 0.0)


def test_dsm_minimum_is_attained_only_by_the_noised_score(mix):
    """The notebook's check, DSM(s) within 3 % of `dsm_minimum` at σ = 0.1 and 0.5, holds for ∇log p_σ
    and fails for the negative controls: the zero field, the clean score ∇log p, the wrong sign, and
    the score of the wrong noise level σ² (σ and σ² confused)."""
    x = mix.sample(50_000, generator=gen(5))
    eps = torch.randn(x.shape, generator=gen(6), dtype=torch.float64)

    def passes(make_score):
        ok = True
        for sigma in (0.1, 0.5):
            best = dsm_minimum(mix.noised(1.0, sigma).log_prob, x + sigma * eps, sigma).item()
            loss = denoising_score_matching_loss(make_score(sigma), x, sigma, eps).item()
            ok &= abs(loss / best - 1) < 0.03
        return ok

    assert passes(lambda sigma: mix.noised(1.0, sigma).score)
    assert not passes(lambda sigma: (lambda y: torch.zeros_like(y)))
    assert not passes(lambda sigma: mix.score)
    assert not passes(lambda sigma: (lambda y: -mix.noised(1.0, sigma).score(y)))
    assert not passes(lambda sigma: mix.noised(1.0, sigma**2).score)

def test_image_shapes_and_per_example_sigma():
    x = torch.randn(4, 1, 3, 3, generator=gen())
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0])
    loss = denoising_score_matching_loss(lambda y: -y, x, sigma, generator=gen(1))
    assert loss.ndim == 0 and torch.isfinite(loss)
    out = tweedie_denoise(x, -x, sigma)
    torch.testing.assert_close(out, x * (1 - sigma**2).reshape(4, 1, 1, 1))


def test_ncsn_toy():
    toy = ncsn_toy()
    assert isinstance(toy, GaussianMixture)
    x = toy.sample(20_000, generator=gen())
    assert x.dtype == torch.float32 and abs((x.sum(1) > 0).float().mean().item() - 0.8) < 0.01
    torch.testing.assert_close(toy.weights, torch.tensor([0.8, 0.2]))
    torch.testing.assert_close(toy.means, torch.tensor([[5.0, 5.0], [-5.0, -5.0]]))
    torch.testing.assert_close(toy.stds, torch.ones(2, 2))


def test_clear_errors(mix):
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        mix.score(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="non-negative"):
        mix.noised(1.0, -0.1)
    with pytest.raises(ValueError, match="rows"):
        mix.noised(1.0, torch.ones(4)).log_prob(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="one length"):
        mix.posterior_mean(torch.zeros(3, 2), torch.ones(2), torch.ones(3))
    with pytest.raises(ValueError, match="positive noise"):
        denoising_score_matching_loss(lambda y: y, torch.zeros(3, 2), 0.0)
    with pytest.raises(ValueError, match="eps"):
        denoising_score_matching_loss(lambda y: y, torch.zeros(3, 2), 0.1, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="n_projections"):
        sliced_score_matching_loss(lambda y: y, torch.zeros(3, 2), n_projections=0)
    with pytest.raises(ValueError, match="positive integer"):
        mix.sample(0)


def test_exercise_checks_accept_the_library_and_name_the_usual_mistakes():
    """The exercises take the general corruption x̃ = αx + σε; the library's keyword `alpha` is the same."""
    exercises.check_dsm_loss(lambda s, x, alpha, sigma, eps: denoising_score_matching_loss(s, x, sigma, eps, alpha=alpha))
    exercises.check_tweedie_denoiser(lambda x_tilde, score, alpha, sigma: tweedie_denoise(x_tilde, score, sigma, alpha=alpha))

    def dsm_no_half(score_fn, x, alpha, sigma, eps):
        return 2 * denoising_score_matching_loss(score_fn, x, sigma, eps, alpha=alpha)

    with pytest.raises(exercises.ExerciseError, match="factor ½"):
        exercises.check_dsm_loss(dsm_no_half)

    def stub(*args):
        raise NotImplementedError

    with pytest.raises(exercises.ExerciseError, match="not implemented"):
        exercises.check_tweedie_denoiser(stub)
    wrong_dsm = {  # σ for σ², a missing sign, ε/σ² for ε/σ, and α forgotten in the conditional mean
        "noises with σ²": lambda s, x, a, sig, eps: 0.5 * (s(a * x + sig**2 * eps) + eps / sig).pow(2).sum(1).mean(),
        "wrong sign": lambda s, x, a, sig, eps: 0.5 * (s(a * x + sig * eps) - eps / sig).pow(2).sum(1).mean(),
        "uses ε/σ²": lambda s, x, a, sig, eps: 0.5 * (s(a * x + sig * eps) + eps / sig**2).pow(2).sum(1).mean(),
        r"is −\(x̃ − x\)/σ²": lambda s, x, a, sig, eps: 0.5 * (s(a * x + sig * eps) + (a * x + sig * eps - x) / sig**2)
        .pow(2).sum(1).mean(),
    }
    for message, wrong in wrong_dsm.items():
        with pytest.raises(exercises.ExerciseError, match=message):
            exercises.check_dsm_loss(wrong)
    wrong_tweedie = {
        "scales the score by σ;": lambda xt, s, a, sig: (xt + sig * s) / a,
        "sign of the score term": lambda xt, s, a, sig: (xt - sig**2 * s) / a,
        "divides the score by σ²": lambda xt, s, a, sig: (xt + s / sig**2) / a,
        r"E\[αx \| x̃\]": lambda xt, s, a, sig: xt + sig**2 * s,
    }
    wrong_dsm_more = {
        "sums over the batch": lambda s, x, a, sig, eps: 0.5 * (s(a * x + sig * eps) + eps / sig).pow(2).sum(),
        "σ²-weighted loss": lambda s, x, a, sig, eps: 0.5 * (sig * s(a * x + sig * eps) + eps).pow(2).sum(1).mean(),
        "factor α": lambda s, x, a, sig, eps: 0.5 * (s(a * x + sig * eps) + a * eps / sig).pow(2).sum(1).mean(),
    }
    for message, wrong in wrong_dsm_more.items():
        with pytest.raises(exercises.ExerciseError, match=message):
            exercises.check_dsm_loss(wrong)
    wrong_tweedie.update({
        "divides by α²": lambda xt, s, a, sig: (xt + sig**2 * s) / a**2,
        "leaves out the score": lambda xt, s, a, sig: xt / a,
        "returns x̃ unchanged": lambda xt, s, a, sig: xt,
    })
    for message, wrong in wrong_tweedie.items():
        with pytest.raises(exercises.ExerciseError, match=message):
            exercises.check_tweedie_denoiser(wrong)


# ---------------------------------------------------------------------------- the general corruption αx + σε
def test_dsm_with_a_signal_scale(mix):
    """x̃ = αx + σε: the target is still −ε/σ, and the law of x̃ (`noised(α, σ)`) has the best score."""
    alpha, sigma = 0.7, 0.5
    x = mix.sample(100_000, generator=gen())
    eps = torch.randn(x.shape, generator=gen(1), dtype=torch.float64)
    model = gaussian_model(0.2, 1.5)
    want = 0.5 * (model(alpha * x + sigma * eps) + eps / sigma).pow(2).sum(1).mean()
    torch.testing.assert_close(denoising_score_matching_loss(model, x, sigma, eps, alpha=alpha), want)
    best = denoising_score_matching_loss(mix.noised(alpha, sigma).score, x, sigma, eps, alpha=alpha).item()
    unscaled = denoising_score_matching_loss(mix.noised(1.0, sigma).score, x, sigma, eps, alpha=alpha).item()
    assert best < unscaled - 0.1
    # per-example α, and α = 1 is the default
    a = torch.linspace(0.5, 1.0, 8, dtype=torch.float64)
    e8 = eps[:8]
    torch.testing.assert_close(denoising_score_matching_loss(model, x[:8], sigma, e8, alpha=a),
                               0.5 * (model(a[:, None] * x[:8] + sigma * e8) + e8 / sigma).pow(2).sum(1).mean())
    torch.testing.assert_close(denoising_score_matching_loss(model, x, sigma, eps, alpha=1.0),
                               denoising_score_matching_loss(model, x, sigma, eps))


def test_tweedie_with_a_signal_scale(mix):
    x_tilde = torch.randn(40, 2, generator=gen(), dtype=torch.float64) * 2
    for alpha, sigma in [(0.8, 0.6), (torch.linspace(0.3, 1.2, 40, dtype=torch.float64), 0.5)]:
        score = mix.noised(alpha, sigma).score(x_tilde)
        torch.testing.assert_close(tweedie_denoise(x_tilde, score, sigma, alpha=alpha),
                                   mix.posterior_mean(x_tilde, alpha, sigma))
    with pytest.raises(ValueError, match="positive signal scale"):
        tweedie_denoise(x_tilde, x_tilde, 0.5, alpha=0.0)
    with pytest.raises(ValueError, match="alpha must be a float"):
        tweedie_denoise(x_tilde, x_tilde, 0.5, alpha=torch.ones(3))


# ---------------------------------------------------------------------------- noise prediction, reverse step
def test_score_is_minus_the_noise_prediction_over_sigma(mix):
    """E[ε | x̃] = −σ ∇log p_σ(x̃): the residual ε + σ s(x̃) has mean 0 and is uncorrelated with x̃;
    the clean score in its place (a model that ignores the noise level) leaves a correlated residual."""
    sigma = 0.5
    x = mix.sample(200_000, generator=gen())
    eps = torch.randn(x.shape, generator=gen(1), dtype=torch.float64)
    x_tilde = x + sigma * eps
    for score, ok in [(mix.noised(1.0, sigma).score, True), (mix.score, False)]:
        residual = eps + sigma * score(x_tilde)
        centred = x_tilde - x_tilde.mean(0)
        corr = (residual[:, :, None] * centred[:, None, :]).mean(0).abs().max().item()
        assert (residual.mean(0).abs().max().item() < 0.01 and corr < 0.01) == ok


def posterior_on_grid(gm, x_t, sigma, xs):
    """p(x | x̃ = x_t) ∝ p(x) N(x_t; x, σ²) on a 1D grid: its mean and variance."""
    w = torch.softmax(gm.log_prob(xs[:, None]) - (x_t - xs) ** 2 / (2 * sigma**2), dim=0)
    mean = (w * xs).sum()
    return mean.item(), (w * (xs - mean) ** 2).sum().item()


def test_posterior_mean_and_variance_are_first_and_second_order_tweedie():
    gm = GaussianMixture(torch.tensor([[-2.0], [1.0], [2.5]], dtype=torch.float64),
                         torch.tensor([0.5, 0.3, 0.6], dtype=torch.float64), [0.3, 0.3, 0.4])
    xs = torch.linspace(-10, 10, 20001, dtype=torch.float64)
    for sigma in (0.1, 0.5, 1.0):
        noised = gm.noised(1.0, sigma)
        for x_t in (-2.0, 0.0, 1.7):
            point = torch.tensor([[x_t]], dtype=torch.float64)
            mean, var = posterior_on_grid(gm, x_t, sigma, xs)
            assert abs(mean - (x_t + sigma**2 * noised.score(point).item())) < 1e-6
            curv = torch.autograd.functional.jacobian(noised.score, point).reshape(()).item()
            assert abs(var - (sigma**2 + sigma**4 * curv)) < 1e-6
            # negative control: the clean density's curvature in place of p_σ's is wrong at σ = 1
            if sigma == 1.0 and x_t == 0.0:
                clean_curv = torch.autograd.functional.jacobian(gm.score, point).reshape(()).item()
                assert abs(var - (sigma**2 + sigma**4 * clean_curv)) > 0.1


# ---------------------------------------------------------------------------- where data is rare
def test_between_modes_stays_away_from_the_modes():
    toy = ncsn_toy()
    pts = between_modes(toy, 5000, generator=gen())
    assert pts.shape == (5000, 2) and pts.dtype == torch.float32
    gap = (toy.means[1] - toy.means[0]).norm()
    dist = torch.cdist(pts, toy.means).min(1).values
    assert dist.min() >= 0.35 * gap - 1e-4
    assert toy.log_prob(pts).exp().max() < 1e-5  # the region the data never visits
    one_d = GaussianMixture([[-2.0], [3.0]], 0.5)
    line = between_modes(one_d, 100, span=(0.2, 0.8), generator=gen())
    assert line.shape == (100, 1) and line.min() >= -1.0 - 1e-6 and line.max() <= 2.0 + 1e-6
    with pytest.raises(ValueError, match="two components"):
        between_modes(GaussianMixture([[0.0, 0.0]], 1.0), 10)
    with pytest.raises(ValueError, match="span"):
        between_modes(toy, 10, span=(0.5, 1.5))


def test_rare_region_error_is_scale_invariant():
    """c × the exact score has relative error |1 − c| on the data and between the modes alike."""
    toy, sigma = ncsn_toy(), 0.2
    exact = toy.noised(1.0, sigma).score
    for c in (0.0, 0.5, 0.9, 1.0, 1.3):
        e = rare_region_error(lambda y: c * exact(y), toy, sigma, n=500, generator=gen())
        assert isinstance(e, RegionErrors)
        assert abs(e.dense - abs(1 - c)) < 1e-5 and abs(e.rare - abs(1 - c)) < 1e-5


def test_poor_where_rare_and_its_negative_controls():
    """The check holds for a score that is exact on the data and wrong between the modes, and
    fails for the exact score, for 0.9 × the exact score (uniform error) and for an untrained
    network (error everywhere): the contrast, not the size of the error, is what it detects."""
    toy, sigma = ncsn_toy(), 0.2
    noised = toy.noised(1.0, sigma)
    errors = lambda score: rare_region_error(score, toy, sigma, generator=gen(9))

    def exact_only_on_the_data(y):  # zero beyond 4.9 from every mode: no information where there is no data
        return noised.score(y) * (torch.cdist(y, toy.means).min(1).values < 4.9)[:, None]

    good = errors(exact_only_on_the_data)
    assert good.dense < 0.01 and good.rare > 0.99 and poor_where_rare(good)
    assert not poor_where_rare(errors(noised.score))
    scaled = errors(lambda y: 0.9 * noised.score(y))
    assert abs(scaled.dense - 0.1) < 1e-5 and not poor_where_rare(scaled)
    torch.manual_seed(0)
    untrained = errors(mlp(2, 2, hidden=64, depth=3))
    assert untrained.dense > 0.5 and not poor_where_rare(untrained)
    # the thresholds, one at a time
    assert not poor_where_rare(RegionErrors(0.3, 2.0, 0.0, 0.0))   # not accurate on the data
    assert not poor_where_rare(RegionErrors(0.1, 0.4, 0.0, 0.0))   # not poor enough between the modes
    assert not poor_where_rare(RegionErrors(0.2, 0.55, 0.0, 0.0))  # no contrast (< 3 ×)
    assert poor_where_rare(RegionErrors(0.1, 0.55, 0.0, 0.0))


def test_relative_score_error_is_scale_free_and_refuses_mismatched_shapes():
    true = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert score_matching.relative_score_error(true, true) == 0.0
    assert abs(score_matching.relative_score_error(0.9 * true, true) - 0.1) < 1e-12
    assert score_matching.relative_score_error(torch.zeros_like(true), true) == 1.0
    with pytest.raises(ValueError, match="one shape"):
        score_matching.relative_score_error(true[:, :1], true)
