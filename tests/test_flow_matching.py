"""Tests of course_utils.flow_matching: paths, fields, the CFM loss, couplings, path metrics."""

import itertools
import re
import math

import pytest
import torch

from course_utils import flow_matching as fm
from course_utils import schedules
from course_utils.exercises import ExerciseError, check_cfm_weight, check_conditional_field, check_ot_pair

PATHS = [fm.OTPath(0.0), fm.OTPath(0.05), fm.VPPath(), fm.VEPath(0.01, 5.0)]
SHAPES = [(6, 2), (3, 1, 4, 4)]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("path", PATHS, ids=repr)
@pytest.mark.parametrize("shape", SHAPES)
def test_conditional_field_is_the_time_derivative_of_the_flow(path, shape):
    """u_t(ψ_t(x0) | x1) = d/dt ψ_t(x0), the derivative taken by forward-mode autodiff."""
    g = gen(1)
    x0, x1 = torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)
    t = 0.02 + 0.96 * path.t_max * torch.rand(shape[0], generator=g, dtype=torch.float64)
    flow = lambda tt: path.sample(x0, x1, tt).x_t  # noqa: E731
    x_t, dx_dt = torch.func.jvp(flow, (t,), (torch.ones_like(t),))
    torch.testing.assert_close(path.conditional_field(x_t, x1, t), dx_dt)
    torch.testing.assert_close(path.sample(x0, x1, t).u_t, dx_dt)


def test_special_cases_have_their_closed_forms():
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    s = fm.OTPath(0.1).coefficients(t)
    torch.testing.assert_close(s.alpha_t, t)
    torch.testing.assert_close(s.sigma_t, 1 - 0.9 * t)
    vp = fm.VPPath(0.1, 20.0).coefficients(t)
    big_t = 0.1 * (1 - t) + 0.5 * 19.9 * (1 - t) ** 2  # T(1 − t) = ∫_0^{1−t} β
    torch.testing.assert_close(vp.alpha_t, torch.exp(-0.5 * big_t))
    torch.testing.assert_close(vp.sigma_t, torch.sqrt(1 - torch.exp(-big_t)))
    ve = fm.VEPath(0.01, 5.0).coefficients(t)
    torch.testing.assert_close(ve.alpha_t, torch.ones_like(t))
    torch.testing.assert_close(ve.sigma_t, 0.01 * (5.0 / 0.01) ** (1 - t))


def test_ot_path_end_points_and_straight_constant_speed():
    g = gen(2)
    x0, x1 = torch.randn(5, 2, generator=g), torch.randn(5, 2, generator=g)
    path = fm.OTPath(0.0)
    torch.testing.assert_close(path.sample(x0, x1, torch.zeros(5)).x_t, x0)
    torch.testing.assert_close(path.sample(x0, x1, torch.ones(5)).x_t, x1)
    for t in (0.1, 0.5, 0.9):
        torch.testing.assert_close(path.sample(x0, x1, torch.full((5,), t)).u_t, x1 - x0)
    torch.testing.assert_close(fm.OTPath(0.1).sample(x0, x1, torch.ones(5)).x_t, x1 + 0.1 * x0)


def test_marginal_field_is_the_posterior_weighted_conditional_field():
    g = gen(3)
    path, data = fm.OTPath(0.05), torch.randn(4, 2, generator=g, dtype=torch.float64)
    x, t = torch.randn(50, 2, generator=g, dtype=torch.float64), torch.rand(50, generator=g, dtype=torch.float64)
    log_w = torch.stack([path.conditional_log_prob(x, x1.expand_as(x), t) for x1 in data], 1)
    w = torch.softmax(log_w, 1)
    fields = torch.stack([path.conditional_field(x, x1.expand_as(x), t) for x1 in data], 1)
    torch.testing.assert_close(path.marginal_field(x, t, data), (w[..., None] * fields).sum(1))
    torch.testing.assert_close(path.marginal_log_prob(x, t, data), torch.logsumexp(log_w, 1) - math.log(4))
    one = data[:1]  # a single data point: marginal = conditional
    torch.testing.assert_close(path.marginal_field(x, t, one), path.conditional_field(x, one.expand_as(x), t))


@pytest.mark.parametrize("path", [fm.OTPath(0.05), fm.VPPath(), fm.VEPath(0.05, 3.0)], ids=repr)
def test_continuity_equation_holds_for_the_marginal_field_only(path):
    """∂p/∂t + ∇·(p u) = 0 for the marginal field, not for the unweighted mean of conditional fields."""
    g = gen(4)
    data = torch.randn(3, 2, generator=g, dtype=torch.float64)
    t = 0.1 + 0.8 * torch.rand(200, generator=g, dtype=torch.float64)
    x = path.sample(torch.randn(200, 2, generator=g, dtype=torch.float64), data[torch.arange(200) % 3], t).x_t
    log_p = lambda x, t: path.marginal_log_prob(x, t, data)  # noqa: E731
    good = fm.continuity_residual(log_p, lambda x, t: path.marginal_field(x, t, data), x, t)
    mean = lambda x, t: sum(path.conditional_field(x, d.expand_as(x), t) for d in data) / 3  # noqa: E731
    bad = fm.continuity_residual(log_p, mean, x, t)
    (scale,) = torch.autograd.grad(log_p(x, t.requires_grad_()).exp().sum(), t)
    assert good.abs().max() < 1e-9 * scale.abs().max()
    assert bad.abs().max() > 1e-2 * scale.abs().max()


def test_cfm_loss_is_zero_for_the_exact_field_of_one_point():
    """With one data point the conditional field is the marginal field, so it has zero CFM loss."""
    g = gen(5)
    path, x1 = fm.OTPath(0.05), torch.randn(1, 2, generator=g)
    exact = lambda x, t: path.conditional_field(x, x1.expand_as(x), t)  # noqa: E731
    x0 = torch.randn(256, 2, generator=g)
    assert fm.cfm_loss(exact, path, x0, x1.expand_as(x0), generator=g) < 1e-8
    off = lambda x, t: exact(x, t) + 0.1  # noqa: E731
    torch.testing.assert_close(fm.cfm_loss(off, path, x0, x1.expand_as(x0), generator=g), torch.tensor(0.02))


def test_cfm_and_fm_losses_differ_by_a_constant():
    """L_CFM(θ) − L_FM(θ) = E Var(u_t(x|x1) | x_t) for every θ (Lipman et al. 2023, Thm. 2)."""
    g = gen(6)
    path, data = fm.OTPath(0.05), torch.randn(3, 2, generator=g, dtype=torch.float64)
    n = 100_000
    x1 = data[torch.randint(0, 3, (n,), generator=g)]
    x0, t = torch.randn(n, 2, generator=g, dtype=torch.float64), torch.rand(n, generator=g, dtype=torch.float64)
    s = path.sample(x0, x1, t)
    u_marg = path.marginal_field(s.x_t, s.t, data)
    gaps = []
    for seed in range(3):
        w = torch.randn(2, 2, generator=gen(10 + seed), dtype=torch.float64)
        v = s.x_t @ w + seed * s.t[:, None]  # three different "models"
        cfm, fm_ = (v - s.u_t).pow(2).sum(1).mean(), (v - u_marg).pow(2).sum(1).mean()
        gaps.append((cfm - fm_).item())
    const = (s.u_t.pow(2).sum(1) - u_marg.pow(2).sum(1)).mean().item()
    assert max(gaps) - min(gaps) < 0.05 * const
    assert abs(gaps[0] - const) < 0.05 * const


def test_sample_ode_one_euler_step_is_exact_for_one_point_on_the_ot_path():
    g = gen(7)
    path, x1 = fm.OTPath(0.1), torch.randn(1, 2, generator=g)
    model = lambda x, t: path.marginal_field(x, t, x1)  # noqa: E731
    x0 = torch.randn(64, 2, generator=g)
    sol = fm.sample_ode(model, x0, steps=1, method="euler", return_trajectory=True)
    torch.testing.assert_close(sol.x, x1 + 0.1 * x0)
    assert sol.trajectory.shape == (2, 64, 2) and sol.nfe == 1


def brute_force_ot(x0, x1):
    costs = {p: (x0 - x1[list(p)]).pow(2).sum().item() for p in itertools.permutations(range(len(x0)))}
    return min(costs, key=costs.get)


@pytest.mark.parametrize("shape", [(6, 2), (5, 1, 2, 2)])
def test_ot_coupling_is_the_optimal_permutation(shape):
    g = gen(8)
    x0, x1 = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    y0, y1 = fm.ot_coupling(x0, x1)
    assert y0 is x0
    assert list(fm.ot_assignment(x0, x1)) == list(brute_force_ot(x0.flatten(1), x1.flatten(1)))
    torch.testing.assert_close(torch.sort(y1.flatten())[0], torch.sort(x1.flatten())[0])  # same points
    assert (x0 - y1).pow(2).sum() <= (x0 - x1).pow(2).sum()
    assert torch.equal(fm.ot_coupling(x0, x1)[1], y1)  # deterministic


def test_ot_coupling_in_1d_is_the_sorted_matching():
    g = gen(9)
    x0, x1 = torch.randn(200, 1, generator=g), torch.randn(200, 1, generator=g)
    _, y1 = fm.ot_coupling(x0, x1)
    torch.testing.assert_close(y1[torch.argsort(x0[:, 0]), 0], torch.sort(x1[:, 0])[0])


def test_path_energy_and_straightness_closed_forms():
    t = torch.linspace(0, 1, 201, dtype=torch.float64)
    x0 = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
    x1 = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=torch.float64)
    line = x0 + t[:, None, None] * (x1 - x0)
    assert fm.path_energy(line, t) == pytest.approx(((x1 - x0) ** 2).sum(1).mean().item())
    assert fm.straightness_from_trajectory(line, t).value == pytest.approx(0.0, abs=1e-12)
    r, angle = 2.0, (math.pi / 2) * t  # a quarter circle at constant speed: energy (π r / 2)², chord² = 2 r²
    arc = torch.stack([r * torch.cos(angle), r * torch.sin(angle)], -1)[:, None]
    energy = fm.path_energy(arc, t)
    assert energy == pytest.approx((math.pi * r / 2) ** 2, rel=1e-4)
    # S = E∫||ẋ||² − ||x_1 − x_0||² for constant speed: energy − 2r², by finite differences and exactly
    s_fd = fm.straightness_from_trajectory(arc, t)
    assert s_fd.value == pytest.approx(energy - 2 * r**2, rel=1e-3)
    velocity = (math.pi * r / 2) * torch.stack([-torch.sin(angle), torch.cos(angle)], -1)[:, None]
    s_exact = fm.straightness_integral(arc, velocity, t)
    assert s_exact.value == pytest.approx((math.pi * r / 2) ** 2 - 2 * r**2, rel=1e-4)  # trapezoid: O(Δt²)
    assert s_exact.profile.shape == (201,) and s_exact.trajectory is arc
    assert fm.normalized_path_energy(energy, 2 * r**2) == pytest.approx(math.pi**2 / 8 - 1, rel=1e-4)
    # the chord is the mean velocity (x_T − x_0) / (t_T − t_0): a path on [0, ½] at twice the speed has 2× S
    half = fm.straightness_integral(arc, 2 * velocity, t / 2)
    assert half.value == pytest.approx(2 * s_exact.value, rel=1e-6)
    # time run backwards (diffusion convention) gives the same S
    assert fm.straightness_from_trajectory(arc.flip(0), 1 - t.flip(0)).value == pytest.approx(s_fd.value, rel=1e-9)


def test_time_sampling_and_the_cfm_loss_with_a_time_sampler():
    """The default draw t ~ U[0, t_max] is `sample_time`; a time sampler replaces it; `**cond` reaches the model."""
    path, x0, x1 = fm.OTPath(), torch.randn(64, 2, generator=gen(12)), torch.randn(64, 2, generator=gen(13))
    torch.testing.assert_close(path.draw_t(x1, gen(1)), fm.sample_time(64, generator=gen(1)))
    torch.testing.assert_close(fm.VPPath().draw_t(x1, gen(1)), fm.VPPath().t_max * fm.sample_time(64, generator=gen(1)))
    draw = fm.make_time_sampler("logit_normal", m=0.5, s=0.7)
    torch.testing.assert_close(draw(64, generator=gen(2)),
                               fm.sample_time(64, "logit_normal", m=0.5, s=0.7, generator=gen(2)))
    seen = {}

    def model(x, t, y=None, drop=None):
        seen.update(t=t, y=y, drop=drop)
        return torch.zeros_like(x)

    y, drop = torch.arange(64), torch.rand(64, generator=gen(3)) < 0.1
    loss = fm.cfm_loss(model, path, x0, x1, generator=gen(2), time_sampler=draw, y=y, drop=drop)
    torch.testing.assert_close(seen["t"], draw(64, generator=gen(2)))
    assert seen["y"] is y and seen["drop"] is drop
    torch.testing.assert_close(loss, (x1 - x0).pow(2).sum(1).mean())  # v = 0 on the OT path: E||x1 − x0||²
    with pytest.raises(ValueError, match="time sampling"):
        fm.make_time_sampler("beta")
    with pytest.raises(ValueError, match="positive"):
        fm.make_time_sampler("logit_normal", s=0.0)


def test_predictions_convert_between_eps_x_and_velocity():
    """The posterior means E[x1|z], E[x0|z], E[u|z] map into each other by the schedule's conversions."""
    g = gen(11)
    for path in (fm.OTPath(0.05), fm.VPPath()):
        data = torch.randn(3, 2, generator=g, dtype=torch.float64)
        z = torch.randn(40, 2, generator=g, dtype=torch.float64)
        t = 0.05 + 0.9 * torch.rand(40, generator=g, dtype=torch.float64)
        x_hat = path.posterior_mean(z, t, data)
        eps_hat = path.schedule.x_to_eps(x_hat, z, t)
        torch.testing.assert_close(path.schedule.eps_to_velocity(eps_hat, z, t), path.marginal_field(z, t, data))
        torch.testing.assert_close(path.schedule.velocity_to_x(path.marginal_field(z, t, data), z, t), x_hat)


def test_vp_path_is_the_diffusion_schedule_read_backwards():
    t = torch.linspace(0.0, 0.99, 9, dtype=torch.float64)
    flow, diff = fm.VPPath().coefficients(t), schedules.VPSchedule()(1 - t)
    torch.testing.assert_close(flow.alpha_t, diff.alpha_t)
    torch.testing.assert_close(flow.d_sigma_t, -diff.d_sigma_t)


def test_bad_input_raises_clear_errors():
    path = fm.OTPath()
    with pytest.raises(ValueError, match="same shape"):
        path.sample(torch.zeros(3, 2), torch.zeros(4, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        path.sample(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="AffineSchedule"):
        fm.GaussianPath("linear")
    with pytest.raises(ValueError, match="sigma_min"):
        fm.OTPath(1.5)
    with pytest.raises(ValueError, match="same shape"):
        fm.ot_coupling(torch.zeros(3, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="velocity of shape"):
        fm.cfm_loss(lambda x, t: x[:, :1], path, torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="trajectory"):
        fm.path_energy(torch.zeros(5, 2), torch.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="T >= 2"):
        fm.straightness_from_trajectory(torch.zeros(1, 3, 2), torch.zeros(1))
    with pytest.raises(ValueError, match="trajectory's shape"):
        fm.straightness_integral(torch.zeros(5, 3, 2), torch.zeros(5, 3, 1), torch.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="Unknown method"):
        fm.sample_ode(lambda x, t: x, torch.zeros(3, 2), method="leapfrog")


def test_exercise_checks_accept_the_reference_and_reject_mistakes():
    from course_utils.exercises.flow_matching import reference_conditional_field, reference_ot_pair

    check_conditional_field(reference_conditional_field)
    check_ot_pair(reference_ot_pair)
    with pytest.raises(ExerciseError, match="wrong sign"):
        check_conditional_field(lambda *a: -reference_conditional_field(*a))
    with pytest.raises(ExerciseError, match="independent coupling"):
        check_ot_pair(lambda x0, x1: x1)
    with pytest.raises(ExerciseError, match="rows of x0"):
        check_ot_pair(lambda x0, x1: x0)


def test_ot_pair_check_names_the_unsquared_cost():
    """A pairing that minimises the sum of (unsquared) distances gets its own hint."""
    from course_utils.exercises.flow_matching import _diagnose_pairing, _pair_inputs

    for seed in range(100):  # the first inputs where the two costs pick different pairings
        x0, x1 = _pair_inputs(gen(seed))
        linear = x1[fm.scipy.optimize.linear_sum_assignment(torch.cdist(x0, x1).double().numpy())[1]]
        if not torch.equal(linear, fm.ot_coupling(x0, x1)[1]):
            break
    else:
        pytest.fail("no inputs found where the two costs differ")
    assert "squared distance" in _diagnose_pairing(linear, x0, x1)


def test_ot_path_closed_form_equals_the_general_gaussian_path():
    from course_utils.schedules import LinearSchedule

    g = torch.Generator().manual_seed(5)
    x0, x1, t = torch.randn(6, 1, 3, 3, generator=g), torch.randn(6, 1, 3, 3, generator=g), torch.rand(6, generator=g)
    for sigma_min in (0.0, 0.1):
        fast, general = fm.OTPath(sigma_min).sample(x0, x1, t), fm.GaussianPath(LinearSchedule(sigma_min)).sample(x0, x1, t)
        torch.testing.assert_close(fast.x_t, general.x_t)
        torch.testing.assert_close(fast.u_t, general.u_t)


# SD3's weighted ε-loss, score ↔ velocity, the stochastic sampler, a change of schedule --------------------
def _wrong_weight_b(a, b, da, db):
    return -0.5 * fm.log_snr_derivative(a, b, da, db) * b  # b_t instead of b_t²


@pytest.mark.parametrize("path", [fm.OTPath(0.0), fm.OTPath(0.1), fm.VPPath()], ids=repr)
def test_cfm_loss_is_the_sd3_weighted_eps_loss(path):
    """L_CFM = −½ E w_t λ'_t ‖ε_θ − ε‖² with w_t = −½ λ'_t b_t², for a fixed random network and batch;
    negative control: the weight with b_t instead of b_t² (and the unweighted ε-loss) does not match."""
    from course_utils.models import TimeMLP

    torch.manual_seed(0)
    model, g = TimeMLP(2, 32, 2), gen(4)
    x0, x1 = torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g) + 1
    t = 0.02 + 0.96 * torch.rand(400, generator=g)
    cfm, weighted = fm.cfm_as_weighted_eps_loss(model, path, x0, x1, t)
    assert cfm == pytest.approx(weighted, rel=1e-4)
    assert cfm == pytest.approx(fm.cfm_loss(model, path, x0, x1, t=t).item(), rel=1e-5)
    for wrong in (_wrong_weight_b, lambda a, b, da, db: -2 / fm.log_snr_derivative(a, b, da, db)):
        assert abs(fm.cfm_as_weighted_eps_loss(model, path, x0, x1, t, weight=wrong)[1] - cfm) > 0.1 * cfm


def test_cfm_weight_closed_forms_rectified_flow_and_vp():
    t = torch.linspace(0.02, 0.98, 25, dtype=torch.float64)
    c = fm.sd3_coefficients(fm.OTPath(), t)
    torch.testing.assert_close(fm.cfm_eps_weight(c.alpha_t, c.sigma_t, c.d_alpha_t, c.d_sigma_t), t / (1 - t))
    vp = schedules.VPSchedule()
    c = fm.sd3_coefficients(fm.VPPath(), t)
    torch.testing.assert_close(fm.cfm_eps_weight(c.alpha_t, c.sigma_t, c.d_alpha_t, c.d_sigma_t), vp.beta(t) / 2)


def _mixture_and_field(path):
    from course_utils import mixtures

    gm = mixtures.GaussianMixture(means=[[-2.0, -1.0], [-1.0, 2.0], [2.0, 1.0], [1.5, -2.0]], stds=0.4)

    def field(x, t):  # u_t(x) = α'_t x̂ + σ'_t (x − α_t x̂)/σ_t, x̂ = E[x1 | x_t = x] exact
        o = path.coefficients(t)
        a, s, da, ds = (c[:, None].to(x) for c in (o.alpha_t, o.sigma_t, o.d_alpha_t, o.d_sigma_t))
        x_hat = gm.posterior_mean(x, o.alpha_t.to(x), o.sigma_t.to(x))
        return da * x_hat + ds * (x - a * x_hat) / s

    return gm, field


@pytest.mark.parametrize("path", [fm.OTPath(0.01), fm.VPPath()], ids=repr)
def test_score_from_velocity_is_the_mixture_score(path):
    gm, field = _mixture_and_field(path)
    g = gen(5)
    x, t = 2 * torch.randn(300, 2, generator=g, dtype=torch.float64), 0.05 + 0.9 * torch.rand(300, generator=g, dtype=torch.float64)
    score = gm.marginal_score(path.schedule)(x, t)
    v = field(x, t)
    close = dict(rtol=1e-4, atol=1e-5)  # the mixture computes in float32
    torch.testing.assert_close(fm.score_from_velocity(path, v, x, t), score, **close)
    torch.testing.assert_close(path.schedule.velocity_to_score(v, x, t), score, **close)
    torch.testing.assert_close(path.schedule.score_to_velocity(score, x, t), v, **close)
    assert (fm.score_from_velocity(path, -v, x, t) - score).abs().max() > 0.1  # a reversed velocity is not


def test_sde_sampler_has_the_ode_marginals_and_fails_without_the_score_term():
    """dx = [v + ½ g² s] dt + g dW ends on the data like the ODE; negative control: without ½ g² s it does not."""
    from course_utils import metrics

    path = fm.OTPath(0.01)
    gm, field = _mixture_and_field(path)
    g = gen(0)
    x0, data, other = torch.randn(1000, 2, generator=g), gm.sample(1000, generator=g), gm.sample(1000, generator=g)
    floor = metrics.wasserstein2(other, data)
    ode = metrics.wasserstein2(fm.sample_ode(field, x0, 100, t_end=path.t_max).x, data)
    noise = lambda t: 2.0 * (1 - t)  # noqa: E731
    sde = metrics.wasserstein2(fm.sample_sde(field, path, x0, 100, noise, generator=gen(1)), data)
    bad = metrics.wasserstein2(fm.sample_sde(field, path, x0, 100, noise, generator=gen(1), score_correction=False), data)
    assert abs(sde - ode) < 0.3 * floor and sde < 1.2 * floor
    assert bad > 1.4 * max(sde, floor)


def test_sde_sampler_sign_of_the_score_term():
    """In flow time (noise → data) the score term enters with +½ g²; negative control: −½ g² s, the sign of
    a reverse-time SDE written in diffusion time, pushes mass away from the data."""
    from course_utils import metrics, solvers

    path = fm.OTPath(0.01)
    gm, field = _mixture_and_field(path)
    g = gen(0)
    x0, data = torch.randn(1000, 2, generator=g), gm.sample(1000, generator=g)
    noise = lambda t: 2.0 * (1 - t)  # noqa: E731

    def run(sign):
        def drift(x, t):
            v = field(x, t)
            return v + sign * 0.5 * noise(t)[:, None] ** 2 * fm.score_from_velocity(path, v, x, t)
        sol = solvers.euler_maruyama(drift, noise, path.source(x0), (0.0, path.t_max), steps=100, generator=gen(1))
        return metrics.wasserstein2(sol.x, data)

    right = run(+1.0)
    torch.testing.assert_close(right, metrics.wasserstein2(fm.sample_sde(field, path, x0, 100, noise, generator=gen(1)), data))
    assert run(-1.0) > 1.4 * right


def test_change_schedule_turns_the_ot_field_into_the_vp_field():
    """The OT path's exact field, converted by the change of time and scale, is the VP path's exact field;
    negative control: the change of time alone is not."""
    ot, vp = fm.OTPath(0.01), fm.VPPath()
    _, ot_field = _mixture_and_field(ot)
    _, vp_field = _mixture_and_field(vp)
    g = gen(6)
    z, tau = 1.5 * torch.randn(300, 2, generator=g), 0.05 + 0.9 * torch.rand(300, generator=g)
    torch.testing.assert_close(fm.change_schedule(ot_field, ot, vp)(z, tau), vp_field(z, tau), rtol=1e-4, atol=1e-4)
    wrong = fm.change_schedule(ot_field, ot, vp, scale=False)(z, tau)
    assert (wrong - vp_field(z, tau)).abs().max() > 0.5


def test_cfm_weight_check_accepts_the_reference_and_names_the_mistakes():
    from course_utils.exercises import flow_matching as ex

    check_cfm_weight(ex.reference_cfm_weight)
    for mistake in ex.CFM_WEIGHT.mistakes:
        with pytest.raises(ExerciseError, match=re.escape(mistake.message[:30])):
            check_cfm_weight(mistake.wrong)
