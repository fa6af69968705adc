"""Rectified flow: closed forms from the Gaussian case, and two estimates of straightness agreeing.

Between x0 ~ N(0, I) and x1 ~ N(μ, σ² I), independently coupled, everything is explicit:
x_t ~ N(tμ, r_t² I) with r_t² = t²σ² + (1 − t)², the 1-rectified field is
v*(x, t) = μ + (tσ² − (1 − t)) / r_t² · (x − tμ), its flow is Z_t = tμ + r_t Z0 (so the
new coupling is x1 = μ + σ x0), and the loss minimum at time t is d(σ² + 1 − c_t²/r_t²)
with c_t = tσ² − (1 − t).
"""

import math

import pytest
import torch
from scipy import integrate

from course_utils import exercises, train
from course_utils import flow_matching as fm
from course_utils import rectified_flow as rf
from course_utils.exercises import ExerciseError
from course_utils.models import TimeMLP

MU, SIGMA, D = torch.tensor([1.5, -0.5], dtype=torch.float64), 0.5, 2


def r_t(t):
    return (t**2 * SIGMA**2 + (1 - t) ** 2) ** 0.5


def v_star(x, t):
    """The exact 1-rectified field of N(0, I) -> N(μ, σ²I)."""
    t = t[:, None]
    return MU + (t * SIGMA**2 - (1 - t)) / r_t(t) ** 2 * (x - t * MU)


def v_straight(x, t):
    """The field of the straight coupling x1 = μ + σ x0 (the 2-rectified flow): zero straightness."""
    t = t[:, None]
    return MU + (SIGMA - 1) * (x - t * MU) / (1 + t * (SIGMA - 1))


def rf_loss(model, x0, x1, t=None):
    """The rectified-flow loss: conditional flow matching on the OT path with σ_min = 0."""
    return fm.cfm_loss(model, fm.OTPath(), x0, x1, t)


@pytest.fixture
def x0():
    return torch.randn(4000, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


# time sampling ---------------------------------------------------------------------------
@pytest.mark.parametrize("m, s", [(0.0, 1.0), (0.5, 0.6), (-1.0, 1.5)])
def test_logit_normal_density_is_a_density_with_median_sigmoid_m(m, s):
    total, _ = integrate.quad(lambda u: float(fm.logit_normal_density(torch.tensor(u, dtype=torch.float64), m, s)),
                              0, 1, limit=200)
    below, _ = integrate.quad(lambda u: float(fm.logit_normal_density(torch.tensor(u, dtype=torch.float64), m, s)),
                              0, 1 / (1 + math.exp(-m)), limit=200)
    assert total == pytest.approx(1.0, abs=1e-6)
    assert below == pytest.approx(0.5, abs=1e-6)


def test_logit_normal_samples_follow_the_density():
    m, s = 0.5, 0.8
    t = fm.sample_time(100_000, "logit_normal", m=m, s=s, generator=torch.Generator().manual_seed(1),
                       dtype=torch.float64)
    hist = torch.histc(t, bins=10, min=0, max=1) / t.numel()
    # P(t < b) = Φ((logit b − m) / s): the mass of each bin in closed form
    edges = torch.linspace(0, 1, 11, dtype=torch.float64)
    cdf = torch.special.ndtr((torch.logit(edges) - m) / s)
    torch.testing.assert_close(hist, cdf.diff(), atol=5e-3, rtol=0)


def test_uniform_times_and_bad_options():
    t = fm.sample_time(1000, generator=torch.Generator().manual_seed(0))
    assert t.shape == (1000,) and t.dtype == torch.float32 and 0 <= t.min() and t.max() < 1
    assert abs(t.mean().item() - 0.5) < 0.03
    with pytest.raises(ValueError, match="time sampling"):
        fm.sample_time(4, "lognormal")
    with pytest.raises(ValueError, match="positive"):
        fm.sample_time(4, "logit_normal", s=0.0)
    with pytest.raises(ValueError, match="positive"):
        fm.logit_normal_density(torch.tensor([0.5]), 0.0, -1.0)


# the loss --------------------------------------------------------------------------------
@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_loss_of_the_exact_field_is_the_closed_form_minimum(t):
    g = torch.Generator().manual_seed(2)
    n = 400_000
    x0 = torch.randn(n, D, generator=g, dtype=torch.float64)
    x1 = MU + SIGMA * torch.randn(n, D, generator=g, dtype=torch.float64)
    times = torch.full((n,), t, dtype=torch.float64)
    c_t = t * SIGMA**2 - (1 - t)
    minimum = D * (SIGMA**2 + 1 - c_t**2 / r_t(t) ** 2)
    loss = rf_loss(v_star, x0, x1, times).item()
    assert loss == pytest.approx(minimum, rel=1e-2)
    worse = rf_loss(lambda x, s: v_star(x, s) + 0.2, x0, x1, times).item()
    assert worse == pytest.approx(minimum + D * 0.04, rel=1e-2)  # the excess is ||0.2·1||²


def test_loss_on_image_shapes_matches_the_formula():
    g = torch.Generator().manual_seed(3)
    x0, x1 = torch.randn(5, 1, 4, 4, generator=g), torch.randn(5, 1, 4, 4, generator=g)
    t = torch.rand(5, generator=g)
    model = lambda x, s: 0.5 * x + s.view(-1, 1, 1, 1)  # noqa: E731
    x_t = t.view(-1, 1, 1, 1) * x1 + (1 - t.view(-1, 1, 1, 1)) * x0
    want = (model(x_t, t) - (x1 - x0)).pow(2).sum((1, 2, 3)).mean()
    torch.testing.assert_close(rf_loss(model, x0, x1, t), want)
    with pytest.raises(ValueError, match="same shape"):
        rf_loss(model, x0, x1[:3])


def test_training_lowers_the_loss_toward_its_minimum():
    torch.manual_seed(0)
    model = TimeMLP(2, hidden=32, depth=2)
    g = torch.Generator().manual_seed(4)

    def next_pair(step):
        return torch.randn(128, 2, generator=g), MU.float() + SIGMA * torch.randn(128, 2, generator=g)

    res = rf.fit_rectified_flow(model, next_pair, train.TrainConfig(steps=120, lr=5e-3, progress=False))
    first, last = sum(res.losses[:25]) / 25, sum(res.losses[-25:]) / 25
    assert last < 0.7 * first
    with pytest.raises(ValueError, match="time sampling"):
        rf.fit_rectified_flow(model, next_pair, train.TrainConfig(steps=1), sampling="beta")


# reflow and straightness -----------------------------------------------------------------
def test_reflow_of_the_gaussian_field_gives_the_linear_map(x0):
    pairs = rf.reflow_pairs(v_star, x0, steps=32, method="rk4")
    torch.testing.assert_close(pairs.x1, MU + SIGMA * x0, atol=1e-6, rtol=0)
    a, b = pairs.batch(64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(b, MU + SIGMA * a, atol=1e-6, rtol=0)  # pairs stay together
    with pytest.raises(ValueError, match="same shape"):
        rf.Coupling(x0, x0[:10])


def test_straightness_of_the_one_rectified_gaussian_flow_is_the_closed_form(x0):
    # Z_t = tμ + r_t Z0  ⇒  (Z1 − Z0) − Ż_t = (σ − 1 − r'_t) Z0,  S = E||Z0||² ∫ (σ − 1 − r'_t)² dt
    def dr(t):
        return (t * SIGMA**2 - (1 - t)) / r_t(t)

    integral, _ = integrate.quad(lambda t: (SIGMA - 1 - dr(t)) ** 2, 0, 1)
    want = x0.pow(2).sum(1).mean().item() * integral
    got = rf.straightness(v_star, x0, steps=64)
    assert got.value == pytest.approx(want, rel=1e-3)  # trapezoid rule: O(Δt²)
    assert got.profile.shape == (65,) and got.trajectory.shape == (65, *x0.shape)
    fd = fm.straightness_from_trajectory(got.trajectory, got.t)
    assert fd.value == pytest.approx(want, rel=1e-2)  # finite differences agree


def test_the_straight_coupling_has_zero_straightness_and_zero_loss(x0):
    assert rf.straightness(v_straight, x0, steps=16).value < 1e-10
    assert rf.straightness(v_star, x0, steps=16).value > 0.05
    pairs = rf.Coupling(x0, MU + SIGMA * x0)
    t = torch.rand(len(x0), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert rf_loss(v_straight, pairs.x0, pairs.x1, t).item() < 1e-20


def test_the_cost_drops_by_the_straightness_plus_the_loss_minimum(x0):
    # Reflow of the independent coupling: E||x1 − x0||² = ||μ||² + d(1 + σ²) drops to ||μ||² + d(σ − 1)² (the
    # coupling x1 = μ + σ x0), a drop of 2dσ, which is S(Z¹) + L(v*) exactly (notebook 09, section 3).
    drop = D * (1 + SIGMA**2) - D * (SIGMA - 1) ** 2
    s_1 = rf.straightness(v_star, x0, steps=64).value / x0.pow(2).sum(1).mean().item() * D  # E||Z0||² = d
    loss_min, _ = integrate.quad(lambda t: D * (SIGMA**2 + 1 - (t * SIGMA**2 - (1 - t)) ** 2 / r_t(t) ** 2), 0, 1)
    assert drop == pytest.approx(s_1 + loss_min, rel=1e-3)
    assert drop > s_1 + 0.5  # "drop >= S" is not tight: the crossing lines leave the loss minimum
    # the same sum from samples: the loss of v* on independent pairs at uniform times
    g = torch.Generator().manual_seed(11)
    n = 400_000
    xa, xb = torch.randn(n, D, generator=g, dtype=torch.float64), torch.randn(n, D, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64)
    assert rf_loss(v_star, xa, MU + SIGMA * xb, t).item() == pytest.approx(loss_min, rel=1e-2)
    # negative control: the identity needs the exact rectified field. Shifted by a constant, v* + 0.2 is no longer
    # the conditional mean (its loss is larger by d·0.04) and its flow misses the data: its cost drop is not S + loss
    def v_shifted(x, s):
        return v_star(x, s) + 0.2

    pairs = rf.reflow_pairs(v_shifted, x0, steps=32)
    drop_shifted = MU.pow(2).sum().item() + D * (1 + SIGMA**2) - (pairs.x1 - pairs.x0).pow(2).sum(1).mean().item()
    s_shifted = rf.straightness(v_shifted, x0, steps=64).value
    loss_shifted = rf_loss(v_shifted, xa, MU + SIGMA * xb, t).item()
    assert abs(drop_shifted - (s_shifted + loss_shifted)) > 0.3


@pytest.mark.parametrize("a", [-1.0, 0.7])
def test_straightness_of_a_linear_ode_both_ways(a):
    # v = a x: Z_t = e^{at} Z0, S = E||Z0||² (a(e^{2a} − 1)/2 − (e^a − 1)²)
    x0 = torch.randn(50, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    want = x0.pow(2).sum(1).mean().item() * (a * math.expm1(2 * a) / 2 - math.expm1(a) ** 2)
    model = lambda x, t: a * x  # noqa: E731
    coarse, fine = (rf.straightness(model, x0, steps=n).value for n in (32, 64))
    assert fine == pytest.approx(want, rel=2e-3)
    assert abs(coarse - want) == pytest.approx(4 * abs(fine - want), rel=0.05)  # second order in Δt
    t = torch.linspace(0, 1, 401, dtype=torch.float64)
    traj = torch.exp(a * t)[:, None, None] * x0
    assert fm.straightness_from_trajectory(traj, t).value == pytest.approx(want, rel=1e-3)


def test_straightness_on_image_shapes_and_bad_inputs():
    x0 = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(7))
    assert rf.straightness(lambda x, t: torch.ones_like(x), x0, steps=4).value == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(ValueError, match="trajectory's shape"):
        fm.straightness_integral(torch.zeros(5, 3, 2), torch.zeros(5, 3, 1), torch.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="T >= 2"):
        fm.straightness_from_trajectory(torch.zeros(1, 3, 2), torch.zeros(1))


# one step and distillation ---------------------------------------------------------------
def test_one_step_and_distillation_of_the_straight_field(x0):
    torch.testing.assert_close(rf.one_step(v_straight, x0), MU + SIGMA * x0)
    torch.testing.assert_close(rf.sample(v_straight, x0, steps=1), rf.one_step(v_straight, x0))
    assert rf.distillation_loss(v_straight, x0, MU + SIGMA * x0).item() < 1e-20
    # the 1-rectified field is right at t=0 only on average: one step lands on E[x1] − ... ≠ x1
    assert rf.distillation_loss(v_star, x0, MU + SIGMA * x0).item() > 0.1


def test_one_step_error_of_the_curved_gaussian_flow_is_the_closed_form(x0):
    # one step of v* from t = 0 lands on E[x1] = μ for every x0, while Z1 = μ + σ x0: the error is σ² E||x0||²
    torch.testing.assert_close(rf.one_step(v_star, x0), MU.expand_as(x0))
    want = SIGMA**2 * x0.pow(2).sum(1).mean().item()
    assert rf.one_step_error(v_star, v_star, x0) == pytest.approx(want, rel=1e-6)
    # the straight field's one step lands on Z1 exactly: a perfect one-step student of v*
    assert rf.one_step_error(v_straight, v_star, x0) < 1e-12
    assert rf.distillation_gain(v_straight, v_star, x0) < 1e-10
    # negative control: a "student" that is the teacher itself gains nothing
    assert rf.distillation_gain(v_star, v_star, x0) == pytest.approx(1.0)


def _trained_gaussian_teacher():
    torch.manual_seed(0)
    teacher = TimeMLP(2, hidden=32, depth=2)
    g = torch.Generator().manual_seed(8)

    def next_pair(step):
        return torch.randn(128, 2, generator=g), MU.float() + SIGMA * torch.randn(128, 2, generator=g)

    rf.fit_rectified_flow(teacher, next_pair, train.TrainConfig(steps=150, lr=5e-3, progress=False))
    return teacher


def test_distillation_beats_the_teachers_own_one_step_and_a_no_op_does_not():
    teacher = _trained_gaussian_teacher()
    g = torch.Generator().manual_seed(9)
    pairs = rf.reflow_pairs(teacher, torch.randn(2000, 2, generator=g), steps=16)
    x_test = torch.randn(500, 2, generator=g)  # held-out noise
    before = [p.detach().clone() for p in teacher.parameters()]
    bar = 0.25  # the notebook's bar on distillation_gain

    def gain(steps):
        config = train.TrainConfig(steps=steps, lr=3e-3, progress=False)
        student = rf.distil(teacher, pairs, config, batch_size=128, generator=torch.Generator().manual_seed(10)).model
        return rf.distillation_gain(student, teacher, x_test, steps=16)

    assert rf.one_step_error(teacher, teacher, x_test, steps=16) > 0.1  # the teacher's one step is poor
    assert gain(200) <= bar
    # negative controls: no distillation steps, or the teacher itself as the student, fail the bar
    assert gain(0) == pytest.approx(1.0) and not gain(0) <= bar
    assert not rf.distillation_gain(teacher, teacher, x_test, steps=16) <= bar
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))  # the teacher is untouched


def test_off_manifold_distance_on_a_circle_and_on_the_moons():
    from course_utils import data

    g = torch.Generator().manual_seed(11)
    angle = torch.linspace(0, 2 * math.pi, 20_001, dtype=torch.float64)[:-1]
    circle = torch.stack([angle.cos(), angle.sin()], 1)
    radius = 0.5 + torch.rand(300, generator=g, dtype=torch.float64)
    phi = 2 * math.pi * torch.rand(300, generator=g, dtype=torch.float64)
    samples = radius[:, None] * torch.stack([phi.cos(), phi.sin()], 1)
    # the nearest point of a dense circle is at distance |r − 1| (up to the spacing of the reference)
    assert rf.off_manifold_distance(samples, circle) == pytest.approx((radius - 1).abs().mean().item(), abs=1e-4)
    assert rf.off_manifold_distance(circle[::7], circle) == pytest.approx(0.0, abs=1e-6)
    # negative controls: moons blurred by noise, or collapsed to their mean, sit off the moons
    reference = data.moons(20_000, generator=g)
    fresh = rf.off_manifold_distance(data.moons(1000, generator=g), reference)
    blurred = rf.off_manifold_distance(data.moons(1000, generator=g) + 0.3 * torch.randn(1000, 2, generator=g),
                                       reference)
    blob = rf.off_manifold_distance(reference.mean(0) + 0.05 * torch.randn(1000, 2, generator=g), reference)
    assert fresh < 0.02 and blurred > 3 * fresh and blob > 3 * fresh
    with pytest.raises(ValueError, match="point sets"):
        rf.off_manifold_distance(torch.zeros(3, 1, 2), circle)


# exercises -------------------------------------------------------------------------------
def _not_implemented(*args):
    raise NotImplementedError


def test_exercise_checks_accept_the_references():
    exercises.check_logit_normal_density(fm.logit_normal_density)
    exercises.check_reflow_targets(lambda v, x0, n: rf.reflow_pairs(v, x0, steps=n, method="euler").x1)
    exercises.check_straightness_estimate(lambda tr, v, t: torch.tensor(fm.straightness_integral(tr, v, t).value))


def test_exercise_checks_name_the_mistake():
    with pytest.raises(ExerciseError, match="not implemented"):
        exercises.check_straightness_estimate(_not_implemented)
    with pytest.raises(ExerciseError, match="1/\\(t\\(1−t\\)\\)"):
        exercises.check_logit_normal_density(lambda t, m, s: fm.logit_normal_density(t, m, s) * t * (1 - t))

    def riemann(tr, v, t):
        return ((tr[-1] - tr[0] - v).pow(2).sum(-1).mean(1)[:-1] * t.diff()).sum()

    with pytest.raises(ExerciseError, match="trapezoid"):
        exercises.check_straightness_estimate(riemann)

    def frozen_time(velocity, x0, steps):
        x = x0
        for _ in range(steps):
            x = x + velocity(x, torch.zeros(len(x0), dtype=x0.dtype)) / steps
        return x

    with pytest.raises(ExerciseError, match="advance"):
        exercises.check_reflow_targets(frozen_time)

    def fresh_noise(velocity, x0, steps):  # the independent-pairs mistake: Z1 of other noise than x0
        return rf.reflow_pairs(velocity, torch.randn_like(x0), steps=steps, method="euler").x1

    def shuffled(velocity, x0, steps):
        return rf.reflow_pairs(velocity, x0.flip(0), steps=steps, method="euler").x1

    for wrong in (fresh_noise, shuffled):
        for seed in (0, 1, 2):
            with pytest.raises(ExerciseError, match="its own path"):
                exercises.rectified_flow.REFLOW_TARGETS.check(wrong, seed=seed)


# two modes to two modes (notebook 09, section 7) ---------------------------------------------
def test_two_modes_and_fraction_crossing():
    g = torch.Generator().manual_seed(0)
    src = rf.two_modes(4000, -2.0, spread=0.5, generator=g)
    dst = rf.two_modes(4000, 2.0, spread=0.5, generator=g)
    upper = rf.mode_index(src).bool()
    assert abs(upper.float().mean().item() - 0.5) < 0.03
    torch.testing.assert_close(src[upper].mean(0), torch.tensor([-2.0, 2.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(src[~upper].std(0), torch.tensor([0.5, 0.5]), atol=0.03, rtol=0)
    # independent pairs send about half of each mode across: the "none across" check must fail
    frac = rf.fraction_crossing(src, dst)
    assert ((frac - 0.5).abs() < 0.03).all(), frac
    with pytest.raises(AssertionError, match="across"):
        rf.check_no_crossing(src, dst, bar=0.05)
    # the mode-keeping coupling x1 = x0 + (4, 0) sends none across, and one mode swapped sends all
    kept = src + torch.tensor([4.0, 0.0])
    torch.testing.assert_close(rf.check_no_crossing(src, kept, bar=0.05), torch.zeros(2))
    swapped = kept * torch.tensor([1.0, -1.0])
    torch.testing.assert_close(rf.fraction_crossing(src, swapped), torch.ones(2))


def test_check_straightened_fails_for_a_field_that_does_not_straighten():
    x0 = torch.randn(500, 2, generator=torch.Generator().manual_seed(1))
    turn = lambda x, t: 2.0 * torch.stack([-x[:, 1], x[:, 0]], 1)  # noqa: E731  curved paths
    shift = lambda x, t: torch.tensor([2.0, 0.0]).expand_as(x)  # noqa: E731  straight paths
    s_turn, s_shift = rf.straightness(turn, x0).value, rf.straightness(shift, x0).value
    # closed form: in complex notation Z_t = e^{2it} z, v = 2i e^{2it} z and the chord a z with a = e^{2i} − 1 =
    # ∫ 2i e^{2it} dt, so S = E|z|² ∫ |a − 2i e^{2it}|² dt = E|z|² (4 − |a|²) = E|z|² (2 + 2 cos 2)
    r2 = x0.pow(2).sum(1).mean().item()
    exact = r2 * (4 - abs(complex(math.cos(2), math.sin(2)) - 1) ** 2)
    assert exact == pytest.approx(r2 * (2 + 2 * math.cos(2)))
    assert s_turn == pytest.approx(exact, rel=2e-3)
    assert rf.check_straightened(s_turn, s_shift, bar=0.1) < 1e-8
    with pytest.raises(AssertionError, match="did not straighten"):
        rf.check_straightened(s_turn, s_turn, bar=0.1)  # the same field again: ratio 1


def test_exact_two_modes_field_two_ways_and_its_symmetry():
    f = lambda x, t: rf.two_modes_field(x, t, spread=0.5)  # noqa: E731
    g = torch.Generator().manual_seed(3)
    # Monte Carlo: v* = E[X1 − X0 | X_t] makes the residual orthogonal to every function of X_t
    n = 200_000
    x0, x1 = rf.two_modes(n, -2.0, spread=0.5, generator=g), rf.two_modes(n, 2.0, spread=0.5, generator=g)
    for t in (0.2, 0.5, 0.8):
        xt = t * x1 + (1 - t) * x0
        resid = (x1 - x0) - f(xt, torch.full((n,), t))
        tests = torch.cat([torch.ones(n, 1), xt, xt[:, :1] * xt[:, 1:], torch.tanh(xt)], 1)
        assert (resid[:, :, None] * tests[:, None, :]).mean(0).abs().max() < 0.03
        # a field off by a small constant velocity is not orthogonal: the same test sees it
        wrong = resid - torch.tensor([0.0, 0.2])
        assert (wrong[:, :, None] * tests[:, None, :]).mean(0).abs().max() > 0.1
    # closed form at t = 0: v*(x, 0) = E[X1] − x; at t = 1: v*(x, 1) = x − E[X0]
    x = torch.randn(50, 2, generator=g)
    torch.testing.assert_close(f(x, torch.zeros(50)), torch.tensor([2.0, 0.0]) - x)
    torch.testing.assert_close(f(x, torch.ones(50)), x - torch.tensor([-2.0, 0.0]))
    # the reflection symmetry: v*(Rx, t) = R v*(x, t), so the field is horizontal on the axis
    R = torch.tensor([1.0, -1.0])
    t = torch.rand(50, generator=g)
    torch.testing.assert_close(f(x * R, t), f(x, t) * R)
    on_axis = torch.stack([torch.linspace(-4, 4, 50), torch.zeros(50)], 1)
    assert f(on_axis, t)[:, 1].abs().max() < 1e-6


def test_check_rewired_passes_the_exact_flow_and_fails_the_negative_controls():
    from course_utils.models import TimeMLP

    g = torch.Generator().manual_seed(4)
    x0, x1 = rf.two_modes(2000, -2.0, spread=0.5, generator=g), rf.two_modes(2000, 2.0, spread=0.5, generator=g)
    exact = lambda x, t: rf.two_modes_field(x, t, spread=0.5)  # noqa: E731
    z1 = rf.sample(exact, x0, 32, "rk4")
    frac, dist = rf.check_rewired(x0, z1, x1, across=0.05, distance=0.5)
    assert frac.max() == 0 and dist < 0.1
    # the marginal is the target's: half of the mass on each side, centred on (2, 0)
    assert abs((z1[:, 1] > 0).float().mean().item() - 0.5) < 0.03
    torch.testing.assert_close(z1.mean(0), torch.tensor([2.0, 0.0]), atol=0.1, rtol=0)
    # independent pairs reach the target but cross
    with pytest.raises(AssertionError, match="across"):
        rf.check_rewired(x0, x1, x1, across=0.05, distance=0.5)
    # an untrained network keeps every particle on its side, but does not reach the target
    torch.manual_seed(0)
    untrained = TimeMLP(2, 64, 3)
    z_untrained = rf.sample(untrained, x0, 32, "rk4")
    assert rf.fraction_crossing(x0, z_untrained).max() <= 0.05  # the crossing check alone would pass
    with pytest.raises(AssertionError, match="does not reach"):
        rf.check_rewired(x0, z_untrained, x1, across=0.05, distance=0.5)
    # no field at all (the identity flow) fails the same way
    with pytest.raises(AssertionError, match="does not reach"):
        rf.check_rewired(x0, x0, x1, across=0.05, distance=0.5)
    # a flow that swaps the modes never crosses its own paths, reaches the target, and fails
    swapped = z1 * torch.tensor([1.0, -1.0])
    with pytest.raises(AssertionError, match="across"):
        rf.check_rewired(x0, swapped, x1, across=0.05, distance=0.5)
    # the exact field is curved: reflow has something to straighten
    assert rf.straightness(exact, x0[:500]).value > 1.0


# reflow against minibatch OT-CFM ---------------------------------------------------------
def test_minibatch_ot_cost_two_ways_and_its_batch_size_dependence():
    g = torch.Generator().manual_seed(11)
    n = 1000
    x0 = torch.randn(n, D, generator=g, dtype=torch.float64)
    x1 = MU + SIGMA * torch.randn(n, D, generator=g, dtype=torch.float64)
    # batch size 1 keeps the pairs as drawn: the independent cost |μ|² + D (1 + σ²)
    torch.testing.assert_close(rf.minibatch_ot_cost(x0, x1, 1), (x1 - x0).pow(2).sum(1).mean().item())
    assert abs(rf.minibatch_ot_cost(x0, x1, 1) - (MU.pow(2).sum().item() + D * (1 + SIGMA**2))) < 0.3
    # the full batch is the exact OT between the point sets. If the data are the image of the noise under the
    # map x ↦ μ + σ x (σ > 0, the gradient of a convex function, hence optimal), shuffled, OT must undo the
    # shuffle: its cost is E ||μ + (σ − 1) x0||², close to |μ|² + D (σ − 1)²
    image = (MU + SIGMA * x0)[torch.randperm(n, generator=g)]
    full = rf.minibatch_ot_cost(x0, image, n)
    torch.testing.assert_close(full, (MU + (SIGMA - 1) * x0).pow(2).sum(1).mean().item())
    assert abs(full - (MU.pow(2).sum().item() + D * (SIGMA - 1) ** 2)) < 0.1
    assert rf.minibatch_ot_cost(x0, image, 1) > 1.5 * full  # the shuffled pairs are far from optimal
    costs = [rf.minibatch_ot_cost(x0, x1, b) for b in (1, 4, 16, 64, 250, n)]
    assert all(a > b for a, b in zip(costs, costs[1:])), costs  # larger batches find cheaper pairs
    # in 1D the exact OT pairing is monotone: sorted against sorted
    y0, y1 = x0[:, :1], x1[:, :1]
    sorted_cost = (y1.sort(0).values - y0.sort(0).values).pow(2).mean().item()
    torch.testing.assert_close(rf.minibatch_ot_cost(y0, y1, n), sorted_cost)
    with pytest.raises(ValueError, match="batch_size"):
        rf.minibatch_ot_cost(x0, x1, 0)


def test_coupled_pairs_is_the_batch_ot_pairing():
    g = torch.Generator().manual_seed(12)
    draw = lambda step: (torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g) + 3.0)  # noqa: E731
    x0, x1 = rf.coupled_pairs(draw)(0)
    assert x0.shape == x1.shape == (64, 2)
    # re-pairing the OT pairs by OT changes nothing, and any swap of two partners costs more
    y0, y1 = fm.ot_coupling(x0, x1)
    torch.testing.assert_close(y1, x1)
    swapped = x1.clone()
    swapped[[0, 1]] = x1[[1, 0]]
    assert (swapped - x0).pow(2).sum() >= (x1 - x0).pow(2).sum()
    # with the identity pairing the pairs stay as drawn
    g.manual_seed(12)
    a0, a1 = draw(0)
    g.manual_seed(12)
    b0, b1 = rf.coupled_pairs(draw, fm.independent_coupling)(0)
    torch.testing.assert_close((a0, a1), (b0, b1))


def test_minibatch_ot_field_is_straighter_and_the_identity_pairing_is_not():
    from course_utils import data

    def pairs(step):
        return torch.randn(128, 2), data.moons(128)

    def trained(next_pair):
        torch.manual_seed(0)
        net = TimeMLP(2, 32, 2)
        rf.fit_rectified_flow(net, next_pair, train.TrainConfig(steps=300, lr=3e-3, desc=None))
        return rf.straightness(net, x_test, steps=16).value

    x_test = torch.randn(500, 2, generator=torch.Generator().manual_seed(13))
    s_independent = trained(pairs)
    s_ot = trained(rf.coupled_pairs(pairs))
    assert rf.check_straighter(s_independent, s_ot, bar=0.3, name="OT-CFM") < 0.3
    # negative control: the same training with fm.ot_coupling replaced by the identity pairing
    s_identity = trained(rf.coupled_pairs(pairs, fm.independent_coupling))
    with pytest.raises(AssertionError, match="not straighter"):
        rf.check_straighter(s_independent, s_identity, bar=0.3, name="identity pairing")


# where the time weights matter -----------------------------------------------------------
def test_loss_per_time_is_the_closed_form_and_check_lower_loss_sees_a_worse_middle(x0):
    g = torch.Generator().manual_seed(14)
    x1 = MU + SIGMA * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    times = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    exact = rf.loss_per_time(v_star, x0, x1, times)
    c = times * SIGMA**2 - (1 - times)
    closed = D * (SIGMA**2 + 1 - c**2 / r_t(times) ** 2)
    torch.testing.assert_close(exact, closed.float(), rtol=0.05, atol=0.0)

    def bumped(x, t):  # the exact field, off by a constant velocity in the middle of the path
        return v_star(x, t) + 0.5 * ((t > 0.35) & (t < 0.75)).to(x)[:, None]

    worse = rf.loss_per_time(bumped, x0, x1, times)
    gain = rf.check_lower_loss(worse, exact, times, band=(0.4, 0.7), margin=0.1)
    assert abs(gain - D * 0.25) < 0.05  # a constant offset δ adds exactly |δ|² = D · 0.5²
    # negative controls: the same field against itself, and a band where the two fields agree
    with pytest.raises(AssertionError, match="not learned better"):
        rf.check_lower_loss(exact, exact, times, band=(0.4, 0.7), margin=0.01)
    with pytest.raises(AssertionError, match="not learned better"):
        rf.check_lower_loss(worse, exact, times, band=(0.8, 0.95), margin=0.01)
    with pytest.raises(ValueError, match="band"):
        rf.check_lower_loss(worse, exact, times, band=(0.96, 0.99), margin=0.01)


def test_logit_normal_times_learn_the_middle_better_at_a_small_budget_but_not_the_end():
    from course_utils import config, data

    gen = torch.Generator().manual_seed(99)
    x0_val, x1_val = torch.randn(4000, 2, generator=gen), data.moons(4000, generator=gen)
    t_val = torch.linspace(0.01, 0.99, 25)

    def pairs(step):
        return torch.randn(256, 2), data.moons(256)

    loss = {}
    for sampling in ("uniform", "logit_normal"):
        config.seed_everything(1)
        net = TimeMLP(2, 64, 3)
        rf.fit_rectified_flow(net, pairs, train.TrainConfig(steps=200, lr=3e-3, desc=None), sampling=sampling)
        loss[sampling] = rf.loss_per_time(net, x0_val, x1_val, t_val)
    rf.check_lower_loss(loss["uniform"], loss["logit_normal"], t_val, band=(0.4, 0.7), margin=0.02)
    # negative controls: near t = 1, where logit-normal draws few times, the same check fails; so does the
    # uniform field against itself
    with pytest.raises(AssertionError, match="not learned better"):
        rf.check_lower_loss(loss["uniform"], loss["logit_normal"], t_val, band=(0.9, 1.0), margin=0.02)
    with pytest.raises(AssertionError, match="not learned better"):
        rf.check_lower_loss(loss["uniform"], loss["uniform"], t_val, band=(0.4, 0.7), margin=0.02)


# straight is not optimal, straight is not enough, and a batch pays for its sample ----------------
def test_a_straight_coupling_need_not_be_optimal():
    # x1 = R x0 with R the rotation by 90°: x_t = M_t x0 with M_t = (1 − t) I + t R, det M_t = (1 − t)² + t² > 0,
    # so no two particles are ever at one place at one time, and v(x, t) = (R − I) M_t⁻¹ x reproduces every line
    x0 = torch.randn(4000, 2, generator=torch.Generator().manual_seed(21), dtype=torch.float64)
    rot = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    x1 = x0 @ rot.T

    def field(x, t):
        m_t = (1 - t)[:, None, None] * torch.eye(2, dtype=x.dtype) + t[:, None, None] * rot
        return torch.linalg.solve(m_t, x[..., None])[..., 0] @ (rot - torch.eye(2, dtype=x.dtype)).T

    # the loss of that field is 0 at every time (nothing to average), and its flow is straight and ends on R x0
    assert rf.loss_per_time(field, x0, x1, torch.linspace(0.0, 1.0, 11)).abs().max() < 1e-10
    st = rf.straightness(field, x0, steps=32)
    assert st.value < 1e-8
    torch.testing.assert_close(st.trajectory[-1], x1, atol=1e-6, rtol=0)
    # a fixed point of rectification, yet far from optimal: cost E||R x0 − x0||² = tr((R − I)ᵀ(R − I)) = 4, while
    # both marginals are N(0, I), whose OT plan is the identity (cost 0); exact OT between the two point sets is
    # cheap (only the finite sample keeps it above 0)
    cost = (x1 - x0).pow(2).sum(1).mean().item()
    assert abs(cost - 4.0) < 0.3
    assert rf.minibatch_ot_cost(x0[:1000], x1[:1000], 1000) < 0.1 * cost


def test_a_finite_batch_pays_for_its_own_sample_and_a_matched_copy_does_not():
    g = torch.Generator().manual_seed(22)
    n = 512
    # two draws of one distribution (OT cost 0): every batch pays, less on average as the batch grows
    paid = {b: sum(rf.minibatch_ot_cost(torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g), b)
                   for _ in range(4)) / 4 for b in (8, 64, n)}
    assert paid[8] > paid[64] > paid[n] > 0.02, paid
    # negative control: the same points, shuffled, match exactly, at every batch size that holds them all
    x = torch.randn(n, 2, generator=g)
    assert rf.minibatch_ot_cost(x, x[torch.randperm(n, generator=g)], n) < 1e-10


def test_check_straighter_needs_the_data_reached_an_untrained_field_is_straight_but_misses():
    from course_utils import data, metrics

    gen = torch.Generator().manual_seed(23)
    x_test, x_data = torch.randn(1000, 2, generator=gen), data.moons(1000, generator=gen)
    torch.manual_seed(0)
    trained = TimeMLP(2, 32, 2)
    rf.fit_rectified_flow(trained, lambda step: (torch.randn(128, 2), data.moons(128)),
                          train.TrainConfig(steps=300, lr=3e-3, desc=None))
    s_ref = rf.straightness(trained, x_test[:500], steps=16).value
    torch.manual_seed(1)
    untrained = TimeMLP(2, 32, 2)
    s_untrained = rf.straightness(untrained, x_test[:500], steps=16).value
    w2_untrained = metrics.wasserstein2(rf.one_step(untrained, x_test), x_data)
    # straightness alone passes the untrained field ...
    assert rf.check_straighter(s_ref, s_untrained, bar=0.3, name="untrained") < 0.05
    # ... its one step does not reach the moons, and the full check says so
    with pytest.raises(AssertionError, match="does not reach the data"):
        rf.check_straighter(s_ref, s_untrained, bar=0.3, name="untrained", w2_one_step=w2_untrained, w2_bar=0.35)
    # the 1-rectified flow against itself is not straighter
    with pytest.raises(AssertionError, match="not straighter"):
        rf.check_straighter(s_ref, s_ref, bar=0.3, name="the 1-RF itself")
    with pytest.raises(ValueError, match="both"):
        rf.check_straighter(s_ref, s_untrained, bar=0.3, w2_one_step=0.1)


def test_logit_normal_is_worse_near_the_end_at_a_small_budget_for_two_seeds():
    # the notebook's small-budget cell, as it runs there: its own validation pairs, both seeds, both bands
    from course_utils import config, data

    gen = torch.Generator().manual_seed(99)
    x0_val, x1_val = torch.randn(4000, 2, generator=gen), data.moons(4000, generator=gen)
    t_val = torch.linspace(0.01, 0.99, 25)
    for seed in (1, 2):
        loss = {}
        for sampling in ("uniform", "logit_normal"):
            config.seed_everything(seed)
            net = TimeMLP(2, 64, 3)
            rf.fit_rectified_flow(net, lambda step: (torch.randn(256, 2), data.moons(256)),
                                  train.TrainConfig(steps=200, lr=3e-3, desc=None), sampling=sampling)
            loss[sampling] = rf.loss_per_time(net, x0_val, x1_val, t_val)
        assert rf.check_lower_loss(loss["uniform"], loss["logit_normal"], t_val, band=(0.4, 0.7), margin=0.02) > 0.02
        assert rf.check_lower_loss(loss["logit_normal"], loss["uniform"], t_val, band=(0.9, 1.0), margin=0.1) > 0.1
        # negative control: the middle's gain is not there near the end, nor the end's loss in the middle
        with pytest.raises(AssertionError, match="not learned better"):
            rf.check_lower_loss(loss["logit_normal"], loss["uniform"], t_val, band=(0.4, 0.7), margin=0.0)
