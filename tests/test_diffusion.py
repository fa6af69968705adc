import math

import pytest
import torch

from course_utils import diffusion as D
from course_utils import exercises, guidance
from course_utils.models import TimeClassifier
from course_utils import sde as sdes
from course_utils.tensors import append_dims
from course_utils.schedules import VPSchedule

F64 = torch.float64


def make(T=50, variance="small", kind="linear"):
    sched = D.DiscreteSchedule.linear(T) if kind == "linear" else D.DiscreteSchedule.cosine(T)
    return D.GaussianDiffusion(sched, variance=variance)


def gaussian_eps(diff, mean, var):
    """The exact E[ε | x_t] when x_0 ~ N(mean, var·I): √(1−ᾱ)(x − √ᾱ mean)/(ᾱ var + 1 − ᾱ)."""

    def eps_fn(x, tau):  # a model: continuous time τ = t/T
        abar = diff.abar(diff.schedule.step_index(tau), x)
        return (1 - abar).sqrt() * (x - abar.sqrt() * mean) / (abar * var + 1 - abar)

    return eps_fn


# --- schedules ----------------------------------------------------------------------------------


def test_linear_betas_are_ho_et_al_at_T_1000_and_tables_are_float64():
    betas = D.linear_betas(1000)
    assert betas.dtype == F64 and betas.shape == (1000,)
    torch.testing.assert_close(betas[[0, -1]], torch.tensor([1e-4, 0.02], dtype=F64))
    sched = D.DiscreteSchedule(betas)
    assert sched.betas[0] == 0 and sched.alphas_cumprod[0] == 1
    torch.testing.assert_close(sched.alphas_cumprod[1:], torch.cumprod(1 - betas, 0))


def test_cosine_schedule_alpha_bar_is_the_squared_cosine():
    T, s = 100, 0.008
    sched = D.DiscreteSchedule.cosine(T, s)
    t = torch.arange(T + 1, dtype=F64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    # identical until β hits its 0.999 cap at the very last step
    torch.testing.assert_close(sched.alphas_cumprod[:-1], (f / f[0])[:-1])
    assert sched.betas.max() <= 0.999


def test_discrete_linear_schedule_converges_to_the_vp_sde():
    vp = VPSchedule(0.1, 20.0)

    def gap(T):
        sched = D.DiscreteSchedule.linear(T)
        tau = torch.arange(T + 1, dtype=F64) / T
        return (sched.alphas_cumprod.sqrt() - vp(tau).alpha_t).abs().max().item()

    g100, g1000 = gap(100), gap(1000)
    assert g1000 < 5e-3 and g1000 < g100 / 5


def test_log_snr_is_decreasing_and_infinite_at_the_data():
    sched = D.DiscreteSchedule.cosine(64)
    lam = sched.log_snr(torch.arange(65))
    assert math.isinf(lam[0]) and (lam[1:].diff() < 0).all()
    torch.testing.assert_close(lam[1:], torch.log(sched.alphas_cumprod[1:]) - torch.log1p(-sched.alphas_cumprod[1:]))
    # as a schedule on τ = t/T: exact at the steps, and its derivative is that of log ᾱ's interpolant
    tau = torch.tensor([0.25, 0.5], dtype=F64)
    torch.testing.assert_close(sched.log_snr(tau), lam[[16, 32]])
    out = sched(tau + 0.5 / 64)
    torch.testing.assert_close(2 * out.d_alpha_t / out.alpha_t,
                               64 * (torch.log(sched.alphas_cumprod[[17, 33]]) - torch.log(sched.alphas_cumprod[[16, 32]])))


def test_schedule_errors():
    with pytest.raises(ValueError, match="between 0 and 1"):
        D.DiscreteSchedule(torch.tensor([0.1, 1.0]))
    with pytest.raises(ValueError, match="positive integer"):
        D.linear_betas(0)
    with pytest.raises(ValueError, match="T > beta_max"):
        D.linear_betas(20)
    with pytest.raises(ValueError, match="DiscreteSchedule"):
        D.GaussianDiffusion(VPSchedule())
    with pytest.raises(ValueError, match="variance"):
        make(variance="medium")


# --- forward process ------------------------------------------------------------------------------


def test_closed_form_marginal_matches_simulating_the_chain():
    diff = make(T=40)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.tensor([1.5, -0.5], dtype=F64).expand(40_000, 2)
    x = x0
    for t in range(1, 26):
        x = diff.q_step(x, t, generator=gen)
    q = diff.q_marginal(x0, 25)
    se = (q.var[0] / x.shape[0]).sqrt()
    assert ((x.mean(0) - q.mean[0]).abs() < 5 * se).all()
    torch.testing.assert_close(x.var(0), q.var[0], rtol=0.03, atol=0)
    torch.testing.assert_close(q.var[0], (1 - diff.schedule.alphas_cumprod[25]).expand(2))


def test_q_sample_on_images_and_dtype_device_follow_the_input():
    diff = make(T=30)
    x0, eps = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = torch.tensor([0, 5, 30])
    x_t = diff.q_sample(x0, t, eps)
    assert x_t.dtype == torch.float32 and x_t.shape == x0.shape
    torch.testing.assert_close(x_t[0], x0[0])  # t = 0 is the data
    abar = diff.schedule.alphas_cumprod[5].float()
    torch.testing.assert_close(x_t[1], abar.sqrt() * x0[1] + (1 - abar).sqrt() * eps[1])
    torch.testing.assert_close(diff.schedule.eps_to_x(eps[1:], x_t[1:], t[1:]), x0[1:], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(diff.schedule.x_to_eps(x0[1:], x_t[1:], t[1:]), eps[1:], rtol=1e-4, atol=1e-4)
    # the same conversions read on τ = t/T, the time networks see
    torch.testing.assert_close(diff.schedule.eps_to_x(eps[1:], x_t[1:], t[1:] / 30), x0[1:], rtol=1e-4, atol=1e-4)


def test_time_errors_are_clear():
    diff, x = make(T=30), torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"0\.\.30"):
        diff.q_sample(x, 31)
    with pytest.raises(ValueError, match="integers"):
        diff.q_sample(x, torch.full((4,), 0.5))
    with pytest.raises(ValueError, match="shape"):
        diff.q_sample(x, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="s < t"):
        diff.q_posterior(x, x, 3, 3)
    with pytest.raises(ValueError, match="eta"):
        diff.ddim_step(x, x, 3, eta=-0.1)
    with pytest.raises(ValueError, match="steps"):
        diff.timesteps(31)
    with pytest.raises(ValueError, match="shape"):
        diff.ddim_step(x, torch.randn(4, 3), 3)
    with pytest.raises(ValueError, match="sampler"):
        diff.sample(lambda x, t: x, x, method="euler")


# --- reverse process and the ELBO ---------------------------------------------------------------


@pytest.mark.parametrize("s", [None, 2])
def test_posterior_is_bayes_rule_for_gaussians(s):
    diff = make(T=30)
    t, s_ = 9, (8 if s is None else s)
    ab = diff.schedule.alphas_cumprod
    a_ts = ab[t] / ab[s_]  # x_t | x_s ~ N(√a_ts x_s, (1 − a_ts) I)
    var = 1 / (1 / (1 - ab[s_]) + a_ts / (1 - a_ts))
    x0, x_t = torch.randn(5, 2, dtype=F64), torch.randn(5, 2, dtype=F64)
    mean = var * (ab[s_].sqrt() * x0 / (1 - ab[s_]) + a_ts.sqrt() * x_t / (1 - a_ts))
    post = diff.q_posterior(x0, x_t, t, s)
    torch.testing.assert_close(post.mean, mean)
    torch.testing.assert_close(post.var, var.expand(5, 2))


def test_model_mean_is_ho_eq_11_and_large_variance_is_beta():
    diff = make(T=30)
    x_t, eps = torch.randn(6, 1, 3, 3, dtype=F64), torch.randn(6, 1, 3, 3, dtype=F64)
    sc, t = diff.schedule, 7
    p = diff.p_mean_variance(x_t, eps, t)
    ho = (x_t - sc.betas[t] / (1 - sc.alphas_cumprod[t]).sqrt() * eps) / sc.alphas[t].sqrt()
    torch.testing.assert_close(p.mean, ho)
    big = D.GaussianDiffusion(sc, "large").p_mean_variance(x_t, eps, t)
    torch.testing.assert_close(big.var, sc.betas[t].expand_as(x_t))
    assert (p.var < big.var).all()


@pytest.mark.parametrize("s", [None, 3])
def test_ddim_with_eta_one_is_the_ddpm_step(s):
    diff = make(T=40)
    x_t, eps = torch.randn(8, 2, dtype=F64), torch.randn(8, 2, dtype=F64)
    ddpm = diff.p_mean_variance(x_t, eps, 17, s)
    ddim = diff.ddim_mean_variance(x_t, eps, 17, s, eta=1.0)
    torch.testing.assert_close(ddim.mean, ddpm.mean)
    torch.testing.assert_close(ddim.var, ddpm.var)
    assert (diff.ddim_mean_variance(x_t, eps, 17, s, eta=0.0).var == 0).all()


def test_deterministic_ddim_is_euler_in_scaled_variables():
    """x̄ = x/√ᾱ, σ̄ = √((1−ᾱ)/ᾱ): one η = 0 step is x̄_s = x̄_t + (σ̄_s − σ̄_t) ε̂ exactly."""
    diff = make(T=60, kind="cosine")
    x_t, eps = torch.randn(5, 2, dtype=F64), torch.randn(5, 2, dtype=F64)
    ab = diff.schedule.alphas_cumprod
    t, s = 40, 25
    sig = ((1 - ab) / ab).sqrt()
    x_bar_s = x_t / ab[t].sqrt() + (sig[s] - sig[t]) * eps
    torch.testing.assert_close(diff.ddim_step(x_t, eps, t, s), ab[s].sqrt() * x_bar_s)


def test_deterministic_ddim_is_euler_on_the_vp_sde_probability_flow_ode():
    """`sde.VPSDE(0.1, 20).reverse(score, probability_flow=True)` with ∇log p = −ε/σ_τ, τ = t/T: in (x̄, σ̄) its
    field is dx̄/dσ̄ = ε exactly (the DDIM step's slope); in τ one DDIM step t → t − 1 is its Euler step up to O(1/T²)."""
    vpsde = sdes.VPSDE(0.1, 20.0)
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.randn(8, 2, generator=gen, dtype=F64), torch.randn(8, 2, generator=gen, dtype=F64)
    pf = vpsde.reverse(lambda y, tau: -eps / append_dims(vpsde.marginal_prob(y, tau).std, y.ndim), probability_flow=True)
    tau = torch.rand(8, generator=gen, dtype=F64) * 0.98 + 0.01
    c = vpsde.schedule(tau)
    a, s, da, ds = (append_dims(v, 2) for v in (c.alpha_t, c.sigma_t, c.d_alpha_t, c.d_sigma_t))
    d_x_bar = pf.drift(x, tau) / a - x * da / a**2  # d(x/α)/dτ
    torch.testing.assert_close(d_x_bar / ((ds * a - s * da) / a**2), eps)  # ÷ d(σ/α)/dτ
    assert (pf.diffusion(tau) == 0).all()

    def gap(T):
        diff, t = make(T=T), T // 2
        euler = x - pf.drift(x, torch.full((8,), t / T, dtype=F64)) / T
        step = diff.ddim_step(x, eps, t, t - 1, eta=0.0)
        return (step - euler).abs().max().item(), (step - x).abs().max().item()

    (gap_100, step_100), (gap_1000, _) = gap(100), gap(1000)
    assert gap_100 < 0.1 * step_100 and gap_1000 < gap_100 / 50


def test_kl_term_is_weighted_eps_error_and_a_constant_for_large_variance():
    x0, x_t = torch.randn(7, 2, dtype=F64), torch.randn(7, 2, dtype=F64)
    eps_a, eps_b = torch.randn(7, 2, dtype=F64), torch.randn(7, 2, dtype=F64)
    for variance in D.VARIANCES:
        diff = make(T=30, variance=variance)
        t = 12
        eps = diff.schedule.x_to_eps(x0, x_t, t)  # the ε that produced x_t from x_0
        gaps = []
        for eps_hat in (eps_a, eps_b):
            kl = D.gaussian_kl(diff.q_posterior(x0, x_t, t), diff.p_mean_variance(x_t, eps_hat, t))
            gaps.append(kl - diff.vlb_weight(t) * (eps - eps_hat).pow(2).sum(1))
        if variance == "small":
            torch.testing.assert_close(gaps[0], torch.zeros(7, dtype=F64))
        else:  # KL of two different variances: a constant that does not depend on ε̂
            torch.testing.assert_close(gaps[0], gaps[1])
            assert (gaps[0] > 1e-3).all()
    with pytest.raises(ValueError, match="2..30"):
        diff.vlb_weight(1)


def test_gaussian_kl_and_nll_match_torch_distributions():
    from torch.distributions import Normal, kl_divergence

    m1, m2 = torch.randn(4, 3, dtype=F64), torch.randn(4, 3, dtype=F64)
    v1, v2 = torch.rand(4, 3, dtype=F64) + 0.1, torch.rand(4, 3, dtype=F64) + 0.1
    want = kl_divergence(Normal(m1, v1.sqrt()), Normal(m2, v2.sqrt())).sum(1)
    torch.testing.assert_close(D.gaussian_kl(D.Gaussian(m1, v1), D.Gaussian(m2, v2)), want)
    x = torch.randn(4, 3, dtype=F64)
    torch.testing.assert_close(D.gaussian_nll(x, D.Gaussian(m1, v1)), -Normal(m1, v1.sqrt()).log_prob(x).sum(1))


def test_elbo_is_tight_for_gaussian_data_and_the_exact_model():
    """x_0 ~ N(0, I): with ε̂ = E[ε|x_t] and σ_t² = β_t the model's chain is the true reverse chain,
    so E[−ELBO(x_0)] = −log N(x_0; 0, I) for every x_0."""
    diff = make(T=30, variance="large")
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 2, dtype=F64, generator=gen).expand(10_000, 2)
    vlb = diff.vlb_terms(gaussian_eps(diff, 0.0, 1.0), x0, generator=gen)
    nll = 0.5 * (x0[0] ** 2).sum() + math.log(2 * math.pi)
    total = vlb.total
    assert abs(total.mean() - nll) < 4 * total.std() / math.sqrt(len(total)) + 1e-3
    assert vlb.terms.shape == (10_000, 30)
    # a worse model (ε̂ off by 20 %) gives a looser bound
    worse = diff.vlb_terms(lambda x, t: 1.2 * gaussian_eps(diff, 0.0, 1.0)(x, t), x0, generator=gen)
    assert worse.total.mean() > nll + 0.05


def test_simple_loss_at_its_known_minimum():
    """For x_0 ~ N(m, v): min L_simple = mean_t of Var(ε | x_t) = ᾱv/(ᾱv + 1 − ᾱ) per dimension."""
    diff, m, v = make(T=50), torch.tensor([1.0, -2.0]), 0.25
    gen = torch.Generator().manual_seed(1)
    x0 = m + v**0.5 * torch.randn(200_000, 2, generator=gen)
    loss = diff.loss(gaussian_eps(diff, m, v), x0, generator=gen)
    ab = diff.schedule.alphas_cumprod[1:]
    assert abs(loss.item() - (ab * v / (ab * v + 1 - ab)).mean().item()) < 0.005
    assert diff.loss(lambda x, t: torch.zeros_like(x), x0, generator=gen) > loss + 0.05


# --- sampling ------------------------------------------------------------------------------------------


def sampler_variance(diff, v, method, eta):
    """Var of the final sample for N(m, v) data and the exact ε, by a scalar recursion written out
    by hand: each step is x_s = c x_t + const + σ z, so Var_s = c² Var_t + σ²."""
    ab, var = diff.schedule.alphas_cumprod, 1.0
    for t in range(diff.T, 0, -1):
        s, k = t - 1, 1 / (ab[t] * v + 1 - ab[t])  # ε̂ = √(1−ᾱ_t) k (x_t − √ᾱ_t m)
        if method == "ddpm":  # Ho et al. eq. 11
            beta = 1 - ab[t] / ab[s]
            c = (1 - beta * k) / (1 - beta).sqrt()
            sigma2 = beta * (1 if diff.variance == "large" else (1 - ab[s]) / (1 - ab[t]))
        else:  # DDIM eq. 12: √ᾱ_s x̂_0 + √(1 − ᾱ_s − σ²) ε̂
            sigma2 = eta**2 * (1 - ab[s]) / (1 - ab[t]) * (1 - ab[t] / ab[s])
            c = (ab[s] / ab[t]).sqrt() * (1 - (1 - ab[t]) * k) + (1 - ab[s] - sigma2).sqrt() * (1 - ab[t]).sqrt() * k
        var = c**2 * var + sigma2
    return float(var)


@pytest.mark.parametrize("method,eta,variance", [("ddpm", 0.0, "small"), ("ddpm", 0.0, "large"),
                                                  ("ddim", 0.0, "small"), ("ddim", 1.0, "small")])
def test_samplers_on_gaussian_data_with_the_exact_eps(method, eta, variance):
    """Each sampler's output has the variance its steps imply. At v = 0.25 the deterministic
    sampler follows the ODE (v up to Euler error); β̃ ("small", exact for a point mass) and
    β ("large", exact for v = 1) bracket v."""
    diff, m, v = make(T=50, variance=variance), torch.tensor([1.0, -2.0]), 0.25
    gen = torch.Generator().manual_seed(2)
    x_T = torch.randn(20_000, 2, generator=gen)
    out = diff.sample(gaussian_eps(diff, m, v), x_T, method=method, eta=eta, generator=gen)
    assert out.nfe == 50 and out.trajectory is None
    torch.testing.assert_close(out.x.mean(0), m, atol=0.02, rtol=0)
    want = sampler_variance(diff, v, method, eta)
    torch.testing.assert_close(out.x.var(0), torch.full((2,), want), atol=0.01, rtol=0)
    if method == "ddim" and eta == 0:
        assert abs(want - v) < 0.03
    if method == "ddpm":
        assert (want < v) == (variance == "small") and abs(want - v) > 0.005


def test_sample_trajectory_nfe_and_images():
    diff = make(T=30)
    calls = []

    def eps_fn(x, t):
        calls.append(t)
        return 0.1 * x

    x_T = torch.randn(4, 1, 5, 5)
    out = diff.sample(eps_fn, x_T, steps=6, method="ddim", return_trajectory=True)
    assert out.nfe == 6 == len(calls) and out.trajectory.shape == (7, 4, 1, 5, 5)
    assert (out.t * 30).round().long().tolist() == [30, 25, 20, 15, 10, 5, 0]
    assert calls[0].shape == (4,) and calls[0].dtype == torch.float32  # the model sees τ = t/T
    torch.testing.assert_close(calls[1], torch.full((4,), 25 / 30))
    torch.testing.assert_close(out.trajectory[0], x_T)
    again = diff.sample(eps_fn, x_T, steps=6, method="ddim")
    torch.testing.assert_close(again.x, out.x)  # η = 0 is deterministic
    clipped = diff.sample(lambda x, t: torch.zeros_like(x), 10 * x_T, steps=3, method="ddim", clip_x0=1.0)
    assert clipped.x.abs().max() <= 1 + 1e-5  # the last step returns x̂_0


def test_ddim_inversion_is_exact_for_a_constant_eps_and_converges_otherwise():
    diff = make(T=200)
    x0 = torch.randn(50, 2, dtype=F64)
    const = torch.randn(50, 2, dtype=F64)
    latent = diff.ddim_invert(lambda x, t: const, x0, steps=17).x
    torch.testing.assert_close(diff.sample(lambda x, t: const, latent, steps=17, method="ddim").x, x0)

    eps_fn = gaussian_eps(diff, torch.tensor([1.0, -2.0], dtype=F64), 0.25)
    x0 = torch.tensor([1.0, -2.0], dtype=F64) + 0.5 * torch.randn(50, 2, dtype=F64)

    def round_trip(steps):
        z = diff.ddim_invert(eps_fn, x0, steps=steps).x
        return (diff.sample(eps_fn, z, steps=steps, method="ddim").x - x0).abs().max().item()

    fine, coarse = round_trip(200), round_trip(20)
    assert fine < 0.06 and fine < coarse / 4


def test_loss_feeds_continuous_time_and_conditioning():
    diff = make(T=50)
    seen = {}

    def net(x, tau, y=None):
        seen["tau"], seen["y"] = tau, y
        return torch.zeros_like(x)

    diff.loss(net, torch.randn(2000, 2), y=3, generator=torch.Generator().manual_seed(0))
    tau = seen["tau"]
    assert seen["y"] == 3 and tau.dtype == torch.float32
    torch.testing.assert_close(tau * 50, (tau * 50).round())  # on the grid k/T
    assert tau.min() >= 1 / 50 and tau.max() <= 1 and tau.min() < 0.05 and tau.max() > 0.95


def test_ddpm_step_is_euler_maruyama_of_the_reverse_vp_sde_to_first_order():
    """x_{t−1} = x + β_t(½x + ∇log p) + √β_t z + O(β²): the gap shrinks ~T² as T grows."""

    def gap(T):
        diff = make(T=T, variance="large")
        t = T // 2
        x, eps, z = torch.randn(10, 2, dtype=F64), torch.randn(10, 2, dtype=F64), torch.randn(10, 2, dtype=F64)
        beta = diff.schedule.betas[t]
        score = diff.schedule.eps_to_score(eps, x, t)
        em = x + beta * (0.5 * x + score) + beta.sqrt() * z
        return (diff.ddpm_step(x, eps, t, noise=z) - em).abs().max().item()

    assert gap(1000) < gap(100) / 30


# --- guidance ------------------------------------------------------------------------------------------


def test_classifier_guidance_adds_the_scaled_gradient_to_the_score():
    diff = make(T=40)
    c = torch.tensor([2.0, -1.0])

    def log_prob(x, t, y):  # log p(y | x) = −½||x − c_y||² + const, gradient c_y − x
        return -0.5 * (x - y[:, None] * c).pow(2).sum(1)

    x, tau, y = torch.randn(6, 2), torch.full((6,), 20 / 40), torch.tensor([1, 1, 1, 2, 2, 2])
    guided = guidance.ClassifierGuidance(lambda x, t: torch.zeros_like(x), log_prob, diff.schedule, scale=3.0)
    score = diff.schedule.eps_to_score(guided(x, tau, y), x, tau)
    torch.testing.assert_close(score, 3.0 * (y[:, None] * c - x))
    # wrong sign (or no guidance) fails the same check
    assert not torch.allclose(diff.schedule.eps_to_score(
        guidance.ClassifierGuidance(lambda x, t: torch.zeros_like(x), log_prob, diff.schedule, scale=-3.0)(x, tau, y), x, tau),
        3.0 * (y[:, None] * c - x))


def test_classifier_free_guidance_is_linear_in_w():
    u, c = torch.randn(3, 2), torch.randn(3, 2)
    torch.testing.assert_close(guidance.combine(u, c, 0.0), u)
    torch.testing.assert_close(guidance.combine(u, c, 1.0), c)
    torch.testing.assert_close(guidance.combine(u, c, 3.0), c + 2 * (c - u))


def test_time_classifier_shapes_and_errors():
    clf = TimeClassifier(dim=2, num_classes=5, hidden=16, depth=2)
    assert clf(torch.randn(7, 2), torch.rand(7)).shape == (7, 5)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        clf(torch.randn(7, 3), 0.5)


# --- exercise checks ----------------------------------------------------------------------------------


def test_exercise_checks_accept_the_references_and_reject_typical_mistakes():
    from course_utils.exercises import diffusion as ex

    exercises.check_q_sample(ex.reference_q_sample)
    exercises.check_ddim_step(ex.reference_ddim_step)
    exercises.check_cfg_eps(ex.reference_cfg_eps)

    def stub(*args):
        raise NotImplementedError

    for check in (exercises.check_q_sample, exercises.check_ddim_step, exercises.check_cfg_eps):
        with pytest.raises(exercises.ExerciseError, match="not implemented"):
            check(stub)

    def no_sqrt(x0, eps, abar_t):
        a = abar_t.reshape(-1, *[1] * (x0.ndim - 1))
        return a * x0 + (1 - a) * eps

    with pytest.raises(exercises.ExerciseError, match="square root"):
        exercises.check_q_sample(no_sqrt)

    def swapped(eps_uncond, eps_cond, w):
        return (1 - w) * eps_cond + w * eps_uncond

    with pytest.raises(exercises.ExerciseError, match="w = 0"):
        exercises.check_cfg_eps(swapped)

    def ignores_eta(x_t, eps, abar_t, abar_s, eta, noise):
        return ex.reference_ddim_step(x_t, eps, abar_t, abar_s, 0.0, noise)

    with pytest.raises(exercises.ExerciseError, match="η = 1"):
        exercises.check_ddim_step(ignores_eta)


# --- the posterior by regression, Heun in σ̄, rectified flow = DDIM ------------------------------------


def _closed_posterior(diff, x0, t):
    """Slope (the coefficient of x_t), intercept (the x_0 term) and variance of q(x_{t−1} | x_t, x_0)."""
    zeros, ones = torch.zeros(1, x0.numel(), dtype=F64), torch.ones(1, x0.numel(), dtype=F64)
    return (diff.q_posterior(zeros, ones, t).mean[0], diff.q_posterior(x0[None], zeros, t).mean[0],
            diff.q_posterior(zeros, ones, t).var[0])


@pytest.mark.parametrize("t", [2, 25])
def test_posterior_by_regression_matches_the_closed_form_and_rejects_wrong_ones(t):
    diff, x0 = make(50), torch.tensor([0.7, -1.2], dtype=F64)
    fit = D.posterior_by_regression(diff, x0, t, 20000, generator=torch.Generator().manual_seed(t))
    slope, intercept, var = _closed_posterior(diff, x0, t)
    assert fit.max_z(slope, intercept, var) < 5
    # negative controls: the forward step's β_t as the variance, the x_0 and x_t coefficients swapped
    beta = diff.schedule.betas[t]
    if t == 2:
        assert fit.max_z(slope, intercept, beta.expand(2)) > 20
    coef_x0 = intercept / x0
    assert fit.max_z(coef_x0, slope * x0, var) > 20
    with pytest.raises(ValueError, match="2..50"):
        D.posterior_by_regression(diff, x0, 1, 100)


def _ode_errors(diff, model, x_T, k, heun_method):
    step = D.sigma_bar_step(diff.schedule, heun_method)
    reference = D.solvers.sample(model, x_T, torch.linspace(1, 0, 401), method=D.sigma_bar_step(diff.schedule)).x
    heun = D.solvers.sample(model, x_T, diff.grid((k + 1) // 2), method=step)
    ddim = diff.sample(model, x_T, steps=k, method="ddim").x
    assert heun.nfe <= k
    return (heun.x - reference).norm(dim=1).mean().item(), (ddim - reference).norm(dim=1).mean().item()


def test_euler_in_sigma_bar_is_ddim_and_heun_beats_it_at_equal_calls():
    diff = make(100)
    model = gaussian_eps(diff, 0.5, 0.3)
    x_T = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    euler = D.solvers.sample(model, x_T, diff.grid(10), method=D.sigma_bar_step(diff.schedule, "euler"))
    torch.testing.assert_close(euler.x, diff.sample(model, x_T, steps=10, method="ddim").x, atol=1e-5, rtol=1e-5)
    assert euler.nfe == 10
    assert D.solvers.sample(model, x_T, diff.grid(5), method=D.sigma_bar_step(diff.schedule)).nfe == 9  # 2k − 1
    heun, ddim = _ode_errors(diff, model, x_T, 50, "heun")
    assert heun < 0.6 * ddim
    heun_5, ddim_5 = _ode_errors(diff, model, x_T, 5, "heun")
    assert heun_5 > ddim_5  # three long steps: the correction does not pay
    # negative control: the Euler step in Heun's place (half the steps at the same budget) loses
    euler_err, ddim = _ode_errors(diff, model, x_T, 50, "euler")
    assert not euler_err < 0.6 * ddim
    with pytest.raises(ValueError, match="heun"):
        D.sigma_bar_step(diff.schedule, "rk4")


def test_rectified_flow_euler_is_ddim_exactly_and_the_unscaled_rewrite_is_not():
    diff = make(100)
    model = gaussian_eps(diff, 0.5, 0.3)
    x_T = torch.randn(200, 2, generator=torch.Generator().manual_seed(1))
    for k in (3, 10):
        ddim = diff.sample(model, x_T, steps=k, method="ddim").x
        rf = D.rectified_flow_euler(model, diff.schedule, x_T, diff.grid(k))
        assert (rf - ddim).abs().max() < 1e-4
        # negative control: the velocity of the linear path, but with the scale α + σ left out (z = x)
        unscaled = D.rectified_flow_euler(model, diff.schedule, x_T, diff.grid(k), rescale=False)
        assert (unscaled - ddim).abs().max() > 0.1


def test_posterior_variance_check_names_the_usual_mistakes():
    from course_utils.exercises import diffusion as ex

    exercises.check_posterior_variance(ex.reference_posterior_variance)
    torch.testing.assert_close(ex.reference_posterior_variance(make(50).schedule.betas[1:]),
                               torch.stack([make(50).q_posterior(torch.zeros(1, 1, dtype=F64), torch.zeros(1, 1, dtype=F64), t).var[0, 0]
                                            for t in range(1, 51)]))

    def abar_pair(betas):
        abar = torch.cumprod(1 - betas, 0)
        return abar, torch.cat([abar.new_ones(1), abar[:-1]])

    wrong = {
        "forward step": lambda betas: betas,
        "swapped": lambda betas: (1 - abar_pair(betas)[0]) / (1 - abar_pair(betas)[1]) * betas,
        "1 − ᾱ_{t−1} is missing": lambda betas: betas / (1 - abar_pair(betas)[0]),
        "precision is missing α_t": lambda betas: 1 / (1 / betas + 1 / (1 - abar_pair(betas)[1])),
        "ᾱ_0 = 0": lambda betas: (1 - torch.cat([betas.new_zeros(1), abar_pair(betas)[0][:-1]]))
        / (1 - abar_pair(betas)[0]) * betas,
    }
    for message, fn in wrong.items():
        with pytest.raises(exercises.ExerciseError, match=message):
            exercises.check_posterior_variance(fn)

    def stub(betas):
        raise NotImplementedError

    with pytest.raises(exercises.ExerciseError, match="not implemented"):
        exercises.check_posterior_variance(stub)


# --- DDIM inversion and back (notebook 07b's edits) ----------------------------------------------------------


def test_ddim_round_trip_reconstructs_with_many_steps_and_fails_with_few_or_with_eta_one():
    """Gaussian data N(m, 0.25 I) and its exact ε: encoding by deterministic DDIM and decoding over the
    same grid gives the point back up to the Euler error, which shrinks with the steps. The controls:
    10 steps leave a large error, and decoding with η = 1 (fresh noise on the way back) forgets the
    point, landing as far from it as an independent draw of the data (√(2 · 2 · 0.25) = 1 on average)."""
    diff = make(T=200)
    m = torch.tensor([1.0, -2.0], dtype=F64)
    eps_fn = gaussian_eps(diff, m, 0.25)
    x0 = m + 0.5 * torch.randn(200, 2, dtype=F64, generator=torch.Generator().manual_seed(0))

    def error(steps, eta=0.0):
        x_T, back = D.ddim_round_trip(diff, eps_fn, x0, steps=steps, eta=eta,
                                      generator=torch.Generator().manual_seed(1))
        assert x_T.shape == x0.shape and not torch.allclose(x_T, x0)
        return (back - x0).norm(dim=1).mean().item()

    fine, coarse, stochastic = error(200), error(10), error(200, eta=1.0)
    assert fine < 0.03
    assert coarse > 5 * fine  # too few steps: the Euler error of the two runs does not cancel
    assert stochastic > 0.6 and stochastic > 20 * fine  # η = 1: the latent no longer determines the sample
    torch.testing.assert_close(D.ddim_round_trip(diff, eps_fn, x0, steps=20)[0],
                               diff.ddim_invert(eps_fn, x0, steps=20).x)


def test_ddim_inversion_steps_are_euler_steps_in_xbar_sigmabar_taken_upwards():
    """Closed form against the code: with x̄ = x/√ᾱ and σ̄ = √(1 − ᾱ)/√ᾱ, each inversion step from s to a later t
    is x̄_t = x̄_s + (σ̄_t − σ̄_s) ε(x_s, s): Euler's method on dx̄/dσ̄ = ε, with ε taken at the step's start (the
    lower end), where sampling takes it at the upper end. The control: the same formula with ε at the upper end
    (sampling's choice) does not give the inversion's steps."""
    diff = make(T=60)
    x0 = torch.randn(7, 3, dtype=F64, generator=torch.Generator().manual_seed(2))

    def eps_fn(x, tau):  # any smooth ε-model will do
        return torch.tanh(x) * (0.5 + append_dims(tau, x.ndim))

    sol = diff.ddim_invert(eps_fn, x0, steps=6, return_trajectory=True)
    steps = diff.schedule.step_index(sol.t).tolist()
    assert steps == [0, 10, 20, 30, 40, 50, 60] and sol.nfe == 6
    abar = diff.schedule.alphas_cumprod
    sig_bar = ((1 - abar) / abar).sqrt()
    for k, (s, t) in enumerate(zip(steps[:-1], steps[1:])):
        x_s, x_t = sol.trajectory[k], sol.trajectory[k + 1]
        eps_start = eps_fn(x_s, torch.full((7,), s / 60, dtype=F64))
        torch.testing.assert_close(x_t / abar[t].sqrt(), x_s / abar[s].sqrt() + (sig_bar[t] - sig_bar[s]) * eps_start)
        eps_end = eps_fn(x_t, torch.full((7,), t / 60, dtype=F64))
        assert not torch.allclose(x_t / abar[t].sqrt(), x_s / abar[s].sqrt() + (sig_bar[t] - sig_bar[s]) * eps_end)


def test_ddim_edit_between_gaussian_classes_moves_the_point_by_the_difference_of_means():
    """Notebook 07b's edit in closed form. Class y has data N(m_y, s² I) and the exact ε. The probability-flow ODE
    maps x₀ to x_t = √ᾱ_t m + k_t (x₀ − m), k_t = √(ᾱ_t s² + 1 − ᾱ_t)/s, so inverting with class 0 and sampling
    back with class 1 gives m₁ + (x₀ − m₀) + √ᾱ_T (m₀ − m₁)/k_T: the point keeps its offset from its class mean
    (its "style"). DDIM with many steps lands there up to the Euler error. The control: sampling class 1 from
    fresh noise gives a new offset, as far from that target as two independent draws (root-mean-square
    distance √(2·2·s²) = 1, mean about 0.89)."""
    diff, s2 = make(T=200), 0.25
    means = torch.tensor([[1.0, -2.0], [-1.5, 0.5]], dtype=F64)

    def eps_fn(x, tau, y):
        abar = diff.abar(diff.schedule.step_index(tau), x)
        return (1 - abar).sqrt() * (x - abar.sqrt() * means[y]) / (abar * s2 + 1 - abar)

    gen = torch.Generator().manual_seed(3)
    n = 200
    zeros, ones = torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)
    x0 = means[0] + s2**0.5 * torch.randn(n, 2, dtype=F64, generator=gen)
    x_T = diff.ddim_invert(eps_fn, x0, steps=200, y=zeros).x
    edited = diff.sample(eps_fn, x_T, steps=200, method="ddim", y=ones).x
    abar_T = diff.schedule.alphas_cumprod[-1]
    k_T = ((abar_T * s2 + 1 - abar_T) / s2).sqrt()
    target = means[1] + (x0 - means[0]) + abar_T.sqrt() * (means[0] - means[1]) / k_T
    error = (edited - target).norm(dim=1).mean().item()
    fresh = diff.sample(eps_fn, torch.randn(n, 2, dtype=F64, generator=gen), steps=200, method="ddim", y=ones).x
    miss = (fresh - target).norm(dim=1).mean().item()
    assert error < 0.03
    assert miss > 0.7 and miss > 20 * error  # without the inversion the offset is not kept
    assert (edited - means[1]).norm(dim=1).mean() < (edited - means[0]).norm(dim=1).mean()  # and the class changed
