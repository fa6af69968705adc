"""SDEs: closed forms against the generic affine SDE, Euler–Maruyama against the marginals,
the reverse SDE and probability-flow ODE against known answers."""

import math

import pytest
import torch

from course_utils import mixtures, solvers
from course_utils import sde as sdes
from course_utils.schedules import LinearSchedule, OUSchedule, VESchedule, VPSchedule

T_GRID = torch.linspace(0.02, 1.0, 50, dtype=torch.float64)


def closed_and_generic():
    return [
        (sdes.VPSDE(0.1, 20.0), sdes.AffineSDE(VPSchedule(0.1, 20.0))),
        (sdes.VESDE(0.01, 10.0), sdes.AffineSDE(VESchedule(0.01, 10.0))),
        (sdes.OrnsteinUhlenbeck(0.7, 1.3), sdes.AffineSDE(OUSchedule(0.7, 1.3))),
    ]


@pytest.mark.parametrize("closed,generic", closed_and_generic())
def test_closed_forms_equal_the_generic_affine_sde(closed, generic):
    x = torch.randn(50, 2, dtype=torch.float64)
    torch.testing.assert_close(closed.drift(x, T_GRID), generic.drift(x, T_GRID))
    torch.testing.assert_close(closed.diffusion(T_GRID).double().expand(50), generic.diffusion(T_GRID))


@pytest.mark.parametrize("sde", [pair[0] for pair in closed_and_generic()])
def test_variance_ode_holds(sde):
    """For dx = a(t) x dt + g dW the variance obeys dσ²/dt = 2 a σ² + g² (finite differences in t)."""
    h = 1e-5
    t = T_GRID[:-1]
    var = lambda s: sde.schedule(s).sigma_t ** 2
    d_var = (var(t + h) - var(t - h)) / (2 * h)
    one = torch.ones(len(t), 1, dtype=torch.float64)
    a = sde.drift(one, t)[:, 0]
    torch.testing.assert_close(d_var, 2 * a * var(t) + sde.diffusion(t) ** 2, rtol=1e-5, atol=1e-6)


def test_ou_with_constant_beta_is_the_vp_sde():
    beta = 3.0
    ou, vp = sdes.OrnsteinUhlenbeck(beta / 2, math.sqrt(beta)), sdes.VPSDE(beta, beta)
    x0 = torch.randn(50, 3, dtype=torch.float64)
    for a, b in zip(ou.marginal_prob(x0, T_GRID), vp.marginal_prob(x0, T_GRID)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(ou.prior_std, 1.0)


@pytest.mark.parametrize("sde", [sdes.VPSDE(), sdes.VESDE(0.05, 5.0), sdes.OrnsteinUhlenbeck(1.0, 1.5)])
def test_euler_maruyama_matches_the_closed_form_marginal(sde):
    n, x_start = 10_000, 1.5
    gen = torch.Generator().manual_seed(0)
    x0 = torch.full((n, 1), x_start, dtype=torch.float64)
    # the marginals start from the schedule at t = 0 (VE: the data already carries noise σ_min)
    start = sde.sample_marginal(x0, 0.0, generator=gen)
    sol = solvers.euler_maruyama(sde.drift, sde.diffusion, start, (0.0, 1.0), steps=400,
                                 generator=gen, return_trajectory=True)
    for k in (100, 200, 400):
        mean, std = sde.marginal_prob(x0[:1], sol.t[k])
        x = sol.trajectory[k]
        assert abs(x.mean() - mean[0, 0]) < 4 * std[0] / math.sqrt(n) + 0.01 * abs(mean[0, 0]) + 1e-3
        assert abs(x.std() / std[0] - 1) < 0.04  # sampling error of the std ≈ 0.7 %


def test_marginal_prob_shapes_and_sampling_on_images():
    vp = sdes.VPSDE()
    x0 = torch.randn(4, 1, 28, 28)
    mean, std = vp.marginal_prob(x0, torch.rand(4))
    assert mean.shape == x0.shape and std.shape == (4,) and mean.dtype == torch.float32
    xt = vp.sample_marginal(x0, 1.0, generator=torch.Generator().manual_seed(0))
    assert xt.shape == x0.shape and abs(xt.std().item() - 1) < 0.05  # at t = 1 almost pure noise
    assert vp.drift(x0, 0.5).shape == x0.shape


def test_prior_sample_and_log_prob():
    ve = sdes.VESDE(0.01, 10.0)
    z = ve.prior_sample((20_000, 2), generator=torch.Generator().manual_seed(0))
    assert abs(z.std().item() / 10.0 - 1) < 0.02
    want = torch.distributions.Normal(0.0, 10.0).log_prob(z[:5]).sum(1)
    torch.testing.assert_close(ve.prior_log_prob(z[:5]), want)
    assert sdes.VPSDE().prior_sample((3, 2)).shape == (3, 2)


def test_reverse_drifts():
    vp = sdes.VPSDE()
    score = lambda x, t: -x * 2.0
    x, t = torch.randn(5, 2), torch.rand(5)
    g2 = vp.diffusion(t)[:, None] ** 2
    rev, ode = vp.reverse(score), vp.reverse(score, probability_flow=True)
    torch.testing.assert_close(rev.drift(x, t), vp.drift(x, t) - g2 * score(x, t))
    torch.testing.assert_close(ode.drift(x, t), vp.drift(x, t) - 0.5 * g2 * score(x, t))
    torch.testing.assert_close(rev.diffusion(t), vp.diffusion(t))
    assert (ode.diffusion(t) == 0).all()


def test_probability_flow_of_a_gaussian_rescales_quantiles():
    """Data N(0, s²) under VP: p_t = N(0, std_t²) with std_t² = alpha_t² s² + sigma_t², and the
    ODE (1D, monotone) maps x_T to x_T · s / std_T."""
    s0, vp = 0.5, sdes.VPSDE()
    gm = mixtures.GaussianMixture([[0.0]], [s0])
    ode = vp.reverse(gm.marginal_score(vp.schedule), probability_flow=True)
    x1 = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    out = solvers.odeint(solvers.model_field(ode.drift), x1, (1.0, 0.0), method="rk4", steps=200)
    std1 = gm.marginal(vp.schedule, 1.0).stds[0, 0]
    torch.testing.assert_close(out.x, x1 * s0 / std1, atol=1e-5, rtol=1e-5)


def test_reverse_sde_with_exact_score_recovers_the_mixture():
    gm = mixtures.GaussianMixture([[-2.0], [1.5]], [0.3, 0.4], [0.25, 0.75])
    vp, gen = sdes.VPSDE(), torch.Generator().manual_seed(0)
    rev = vp.reverse(gm.marginal_score(vp.schedule))
    x1 = vp.prior_sample((4000, 1), generator=gen)
    x0 = solvers.euler_maruyama(rev.drift, rev.diffusion, x1, (1.0, 0.0), steps=200, generator=gen).x
    weight_left = (gm.responsibilities(x0).argmax(1) == 0).double().mean()
    assert abs(weight_left - 0.25) < 0.03
    assert abs(x0.mean().item() - gm.mean().item()) < 0.08
    # a wrong reverse drift (no score) would only contract the noise: check we did better
    assert abs(x0[x0 > 0].std().item() - 0.4) < 0.05


def test_clear_errors():
    with pytest.raises(ValueError, match="data-to-noise"):
        sdes.AffineSDE(LinearSchedule())
    with pytest.raises(ValueError, match="beta_min"):
        sdes.VPSDE(5.0, 1.0)
    with pytest.raises(ValueError, match="sigma_min"):
        sdes.VESDE(1.0, 0.5)
    with pytest.raises(ValueError, match="theta"):
        sdes.OrnsteinUhlenbeck(-1.0)
    with pytest.raises(ValueError, match="callable"):
        sdes.VPSDE().reverse(3.0)
    with pytest.raises(ValueError, match="shape"):
        sdes.VPSDE().marginal_prob(torch.zeros(4, 2), torch.zeros(3))


# ---------------------------------------------------------------------------- exercise check (notebook 04)
def test_euler_maruyama_step_check_names_the_mistake(capsys):
    import math as m

    from course_utils import exercises
    from course_utils.exercises.sdes import reference_euler_maruyama_step

    exercises.check_euler_maruyama_step(reference_euler_maruyama_step)
    assert "agrees" in capsys.readouterr().out
    wrong_scale = lambda f, g, x, t, dt, z: x + f(x, t) * dt + g(t)[:, None] * dt * z
    with pytest.raises(exercises.ExerciseError, match="√Δt, not Δt"):
        exercises.check_euler_maruyama_step(wrong_scale)
    no_noise = lambda f, g, x, t, dt, z: x + f(x, t) * dt
    with pytest.raises(exercises.ExerciseError, match="noise term"):
        exercises.check_euler_maruyama_step(no_noise)
    wrong_sign = lambda f, g, x, t, dt, z: x - f(x, t) * dt + g(t)[:, None] * m.sqrt(dt) * z
    with pytest.raises(exercises.ExerciseError, match="drift has the wrong sign"):
        exercises.check_euler_maruyama_step(wrong_sign)
    no_g = lambda f, g, x, t, dt, z: x + f(x, t) * dt + m.sqrt(dt) * z
    with pytest.raises(exercises.ExerciseError, match="factor g"):
        exercises.check_euler_maruyama_step(no_g)
    g_squared = lambda f, g, x, t, dt, z: x + f(x, t) * dt + g(t)[:, None] ** 2 * m.sqrt(dt) * z
    with pytest.raises(exercises.ExerciseError, match=r"not g\(t\)²"):
        exercises.check_euler_maruyama_step(g_squared)

    def stub(f, g, x, t, dt, z):
        raise NotImplementedError

    with pytest.raises(exercises.ExerciseError, match="not implemented yet"):
        exercises.check_euler_maruyama_step(stub)


# ---------------------------------------------------------------------------- the reverse-time family (notebook 04)
MIX = mixtures.GaussianMixture([[-2.0], [1.5]], [0.3, 0.4], [0.25, 0.75])
MIX_VAR = (MIX.weights * (MIX.stds[:, 0] ** 2 + MIX.means[:, 0] ** 2)).sum() - MIX.mean() ** 2


def _reverse_check(drift, diffusion, n=4000, steps=200, seed=0):
    vp = sdes.VPSDE()
    x1 = vp.prior_sample((n, 1), generator=torch.Generator().manual_seed(seed))
    return sdes.check_reverse(drift, diffusion, x1, MIX.mean(), MIX_VAR, steps=steps,
                              generator=torch.Generator().manual_seed(seed + 1))


def test_reverse_drift_is_the_family_of_the_reverse_sde_and_the_probability_flow():
    vp, score = sdes.VPSDE(), lambda x, t: -x * 2.0 + 0.3
    x, t = torch.randn(5, 2), torch.rand(5)
    g2 = vp.diffusion(t)[:, None] ** 2
    for lam in (0.0, 0.5, 1.0, 2.0):
        want = vp.drift(x, t) - 0.5 * (1 + lam**2) * g2 * score(x, t)
        torch.testing.assert_close(sdes.reverse_drift(vp.drift, vp.diffusion, score, lam)(x, t), want)
        member = vp.reverse(score, lam=lam)
        torch.testing.assert_close(member.drift(x, t), want)
        torch.testing.assert_close(member.diffusion(t), lam * vp.diffusion(t))
    torch.testing.assert_close(vp.reverse(score, lam=1.0).drift(x, t), vp.reverse(score).drift(x, t))
    torch.testing.assert_close(vp.reverse(score, lam=0.0).drift(x, t),
                               vp.reverse(score, probability_flow=True).drift(x, t))
    assert vp.reverse(score, lam=0.0).probability_flow and not vp.reverse(score, lam=0.5).probability_flow
    torch.testing.assert_close(sdes.reverse_drift(vp.drift, vp.diffusion, None)(x, t), vp.drift(x, t))
    with pytest.raises(ValueError, match="non-negative"):
        sdes.reverse_drift(vp.drift, vp.diffusion, score, -1.0)
    with pytest.raises(ValueError, match="λ = 0"):
        vp.reverse(score, probability_flow=True, lam=0.5)


def test_the_score_term_brings_the_data_back_and_its_absence_or_wrong_sign_does_not():
    """Notebook 04, section 6: the same check passes Anderson's drift and fails the naive reversal
    (no score term) and the wrong sign."""
    vp = sdes.VPSDE()
    score = MIX.marginal_score(vp.schedule)
    good = _reverse_check(sdes.reverse_drift(vp.drift, vp.diffusion, score), vp.diffusion)
    assert good.passed and good.mean_error < 0.05 and abs(good.var_ratio - 1) < 0.05
    naive = _reverse_check(sdes.reverse_drift(vp.drift, vp.diffusion, None), vp.diffusion)
    assert not naive.passed and naive.var_ratio > 1000  # the noise is blown up, not brought back
    # the naive reversal is linear: from Var = 1 at t = 1 its variance ends near 2 e^{∫β} − 1
    closed = 2 * math.exp(vp.beta_min + 0.5 * (vp.beta_max - vp.beta_min)) - 1
    assert abs(naive.var.item() / closed - 1) < 0.2
    wrong = _reverse_check(sdes.reverse_drift(vp.drift, vp.diffusion, lambda x, t: -score(x, t)), vp.diffusion)
    assert not wrong.passed and wrong.var_ratio > 1000
    # the probability-flow coefficient ½ with the reverse SDE's noise g is a wrong member too
    half = _reverse_check(sdes.reverse_drift(vp.drift, vp.diffusion, score, lam=0.0), vp.diffusion)
    assert not half.passed


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0, 2.0])
def test_every_member_of_the_family_recovers_the_mixture(lam):
    vp = sdes.VPSDE()
    member = vp.reverse(MIX.marginal_score(vp.schedule), lam=lam)
    r = _reverse_check(member.drift, member.diffusion)
    assert r.passed, (r.mean_error, r.var_ratio)
    left = (MIX.responsibilities(r.x).argmax(1) == 0).double().mean()
    assert abs(left - 0.25) < 0.03


@pytest.mark.parametrize("coefficient", ["linear", "forward"])
def test_a_wrong_family_coefficient_fails_the_check(coefficient):
    """Negative controls of the family: ½(1 + λ) instead of ½(1 + λ²), or the forward member's ½(1 − λ²),
    with the noise λ g, at λ = 2."""
    vp, lam = sdes.VPSDE(), 2.0
    score = MIX.marginal_score(vp.schedule)
    c = 0.5 * (1 + lam) if coefficient == "linear" else 0.5 * (1 - lam**2)
    drift = lambda x, t: vp.drift(x, t) - c * vp.diffusion(t)[:, None] ** 2 * score(x, t)
    assert not _reverse_check(drift, lambda t: lam * vp.diffusion(t)).passed


def test_check_reverse_reports_moments():
    vp = sdes.VPSDE()
    x1 = torch.randn(3000, 2, generator=torch.Generator().manual_seed(0))
    zero = lambda x, t: torch.zeros_like(x)
    r = sdes.check_reverse(zero, lambda t: 0.0, x1, 0.0, 1.0, steps=5)  # nothing moves: N(0, I) stays
    assert r.passed and r.x.shape == (3000, 2) and r.mean.shape == (2,)
    r = sdes.check_reverse(zero, lambda t: 0.0, 3 * x1, 0.0, 1.0, steps=5)
    assert not r.passed and abs(r.var_ratio - 9) < 1
    r = sdes.check_reverse(zero, lambda t: 0.0, x1 + 1, 0.0, 1.0, steps=5)
    assert not r.passed and abs(r.mean_error - 1) < 0.1


def test_probability_flow_likelihood_is_the_mixture_density():
    """Notebook 04, section 7: log p_0 by the probability-flow ODE (cnf's exact divergence) against the
    exact mixture density, also off the modes; a wrong score (none, or another mixture's) fails."""
    vp, eight = sdes.VPSDE(), mixtures.eight_gaussians()
    gen = torch.Generator().manual_seed(0)
    wide = mixtures.GaussianMixture(eight.means, 2 * eight.stds)
    x = torch.cat([eight.sample(8, generator=gen), wide.sample(8, generator=gen)]).double()
    exact = eight.log_prob(x)
    got = sdes.probability_flow_log_prob(vp, eight.marginal_score(vp.schedule), x)
    assert got.shape == (16,) and not got.requires_grad
    torch.testing.assert_close(got, exact, atol=0.02, rtol=0)
    no_score = sdes.probability_flow_log_prob(vp, lambda y, t: torch.zeros_like(y), x)
    assert (no_score - exact).abs().max() > 0.5
    # the score of another mixture gives that mixture's density, not this one's
    other = sdes.probability_flow_log_prob(vp, wide.marginal_score(vp.schedule), x)
    torch.testing.assert_close(other, wide.log_prob(x), atol=0.02, rtol=0)
    assert (other - exact).abs().max() > 0.5


# ---------------------------------------------------------------------------- exercise check: family_drift
def test_family_drift_check_names_the_mistake(capsys):
    from course_utils import exercises
    from course_utils.exercises.sdes import reference_family_drift

    # the reference is the library's drift of the member λ
    vp, score = sdes.VPSDE(), lambda x, t: -1.7 * x
    x, t = torch.randn(6, 2, dtype=torch.float64), torch.rand(6, dtype=torch.float64)
    for lam in (0.0, 0.7, 1.0):
        torch.testing.assert_close(reference_family_drift(vp.drift, vp.diffusion, score, x, t, lam),
                                   vp.reverse(score, lam=lam).drift(x, t))
    exercises.check_family_drift(reference_family_drift)
    assert "agrees" in capsys.readouterr().out

    def member(c, score_sign=-1.0, g_power=2, drift_sign=1.0):
        return lambda f, g, s, x, t, lam: (drift_sign * f(x, t)
                                           + score_sign * c(lam) * g(t)[:, None] ** g_power * s(x, t))

    cases = {
        "wrong sign": member(lambda lam: 0.5 * (1 + lam**2), score_sign=1.0),
        "reversed time": member(lambda lam: 0.5 * (1 + lam**2), score_sign=1.0, drift_sign=-1.0),
        r"g\(t\)²": member(lambda lam: 0.5 * (1 + lam**2), g_power=1),
        "linear in λ": member(lambda lam: 0.5 * (1 + lam)),
        "FORWARD-time": member(lambda lam: 0.5 * (1 - lam**2)),
        "a ½ is missing": member(lambda lam: 1 + lam**2),
        "reverse SDE": member(lambda lam: 1.0),
        "probability-flow ODE": member(lambda lam: 0.5),
        "score term is missing": member(lambda lam: 0.0),
    }
    for message, wrong in cases.items():
        with pytest.raises(exercises.ExerciseError, match=message):
            exercises.check_family_drift(wrong)

    def stub(f, g, s, x, t, lam):
        raise NotImplementedError

    with pytest.raises(exercises.ExerciseError, match="not implemented yet"):
        exercises.check_family_drift(stub)


def test_probability_flow_needs_its_half():
    """Negative control of section 7: the reverse SDE's drift (full g²) run without noise is not the
    probability-flow ODE; it over-contracts and fails the same check the member λ = 0 passes."""
    vp = sdes.VPSDE()
    score = MIX.marginal_score(vp.schedule)
    zero_noise = lambda t: 0.0 * vp.diffusion(t)
    assert _reverse_check(sdes.reverse_drift(vp.drift, vp.diffusion, score, lam=0.0), zero_noise).passed
    full = _reverse_check(sdes.reverse_drift(vp.drift, vp.diffusion, score, lam=1.0), zero_noise)
    assert not full.passed and full.var_ratio < 0.9


# ---------------------------------------------------------------------------- DDIM's η is the member λ = η
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("t", [0.05, 0.5, 0.95])
def test_ddim_step_is_the_euler_maruyama_step_of_the_member_lambda_eta(eta, t):
    """Notebook 04, section 8: DDIM's step with η and the Euler–Maruyama step of the member λ = η agree to
    first order in the step (relative gaps ∝ Δt); the members λ = η² and λ = √η do not (negative controls)."""
    vp = sdes.VPSDE()

    def gap(dt, lam):
        d, f = sdes.ddim_step_coefficients(vp, t, dt, eta), sdes.family_step_coefficients(vp, t, dt, lam)
        gaps = [abs((d.a_x - 1) / (f.a_x - 1) - 1), abs(d.a_s / f.a_s - 1)]
        return max(gaps + ([abs(d.var / f.var - 1)] if f.var > 0 else [d.var]))

    assert gap(1e-5, eta) < 1e-3 and gap(1e-5, eta) < gap(1e-3, eta) / 50  # first order: the gap ∝ Δt
    if 0 < eta < 1:
        assert gap(1e-5, eta**2) > 0.1 and gap(1e-5, eta**0.5) > 0.1
    # the exact relation of the noise: σ_η² = η² (1 − ᾱ_u)/(1 − ᾱ_t) (1 − ᾱ_t/ᾱ_u)
    a_t, a_u = (vp.schedule(torch.tensor([s], dtype=torch.float64)).alpha_t.item() ** 2 for s in (t, t - 1e-2))
    assert math.isclose(sdes.ddim_step_coefficients(vp, t, 1e-2, eta).var,
                        eta**2 * (1 - a_u) / (1 - a_t) * (1 - a_t / a_u), rel_tol=1e-12)
    with pytest.raises(ValueError, match="0 < h < t"):
        sdes.ddim_step_coefficients(vp, t, t, eta)
