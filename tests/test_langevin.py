"""Tests of course_utils.langevin: ULA's stationary law, annealing, NCSN pieces, the VE link."""

import math

import pytest
import torch

from course_utils import exercises, solvers
from course_utils import sde as sdes
from course_utils.langevin import (
    NoiseConditionalScore,
    annealed_langevin,
    geometric_sigmas,
    langevin_dynamics,
    langevin_step,
    moons_mixture,
    ncsn_loss,
    score_error_by_density,
    tempered_weights,
    upper_mass,
    ve_reverse_diffusion,
    ve_sigmas,
)
from course_utils.models import TimeMLP
from course_utils.models.conv_score import ConvScoreNet
from course_utils.schedules import VESchedule
from course_utils.score_matching import ncsn_toy


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_langevin_step_formula():
    x, s, z = torch.ones(2, 3), torch.full((2, 3), 2.0), torch.full((2, 3), -1.0)
    torch.testing.assert_close(langevin_step(x, s, 0.25, z), torch.full((2, 3), 1 + 0.25 - 0.5))


def test_ula_stationary_variance_on_a_gaussian():
    """ULA on N(μ, s²) with step α has stationary variance s² / (1 − α/(4s²)), not s²."""
    mu, s, alpha = 2.0, 1.0, 0.4
    x0 = torch.zeros(20_000, 1, dtype=torch.float64)
    sol = langevin_dynamics(lambda x: -(x - mu) / s**2, x0, step_size=alpha, n_steps=300, generator=gen())
    want = s**2 / (1 - alpha / (4 * s**2))
    assert abs(sol.x.mean().item() - mu) < 0.03
    assert abs(sol.x.var().item() - want) < 0.04
    assert abs(sol.x.var().item() - s**2) > 0.06  # the discretisation bias is real


def test_langevin_trajectory_and_reproducibility():
    score = lambda x: -x
    a = langevin_dynamics(score, torch.zeros(5, 2), step_size=0.1, n_steps=4, generator=gen(3),
                          return_trajectory=True)
    b = langevin_dynamics(score, torch.zeros(5, 2), step_size=0.1, n_steps=4, generator=gen(3))
    assert a.trajectory.shape == (5, 5, 2)
    torch.testing.assert_close(a.trajectory[-1], b.x)


def test_geometric_sigmas_are_the_ve_schedule():
    sig = geometric_sigmas(20.0, 1.0, 10)
    assert sig.shape == (10,)
    assert sig[0].item() == pytest.approx(20.0) and sig[-1].item() == pytest.approx(1.0)
    ratios = sig[1:] / sig[:-1]
    torch.testing.assert_close(ratios, torch.full((9,), 20.0 ** (-1 / 9)))
    torch.testing.assert_close(ve_sigmas(VESchedule(1.0, 20.0), 10), sig)


def test_plain_langevin_keeps_weights_annealed_recovers_them():
    """The NCSN toy 0.8·N((5,5), I) + 0.2·N((−5,−5), I) from uniform starts (Song & Ermon 2019)."""
    mix = ncsn_toy()
    x0 = 16 * torch.rand(4000, 2, generator=gen()) - 8
    plain = langevin_dynamics(mix.score, x0, step_size=0.1, n_steps=500, generator=gen(1)).x
    assert abs((plain.sum(1) > 0).float().mean().item() - 0.5) < 0.04
    sigmas = geometric_sigmas(20.0, 1.0, 10)
    # the score of the mixture noised to level σ: toy.noised(1, σ).score(x)
    annealed = annealed_langevin(mix.marginal_score(), x0, sigmas, n_steps_each=100, step_size=0.1, generator=gen(2)).x
    assert abs((annealed.sum(1) > 0).float().mean().item() - 0.8) < 0.04


def test_annealed_trajectory_and_denoise_shapes():
    x0 = torch.zeros(3, 2)
    sol = annealed_langevin(lambda x, s: -x / (1 + s[:, None] ** 2), x0, geometric_sigmas(2.0, 0.5, 3),
                            n_steps_each=4, step_size=0.02, generator=gen(), denoise=True,
                            return_trajectory=True)
    assert sol.trajectory.shape == (3 + 1, 3, 2)  # the start, then after each level (denoise in the last)
    torch.testing.assert_close(sol.trajectory[-1], sol.x)


def test_ve_reverse_diffusion_recovers_a_gaussian():
    """Exact noised score of N(0, s²I) and many levels: the reverse VE SDE returns variance ≈ s²."""
    s = 0.7
    sigmas = geometric_sigmas(30.0, 0.01, 400)
    x0 = 30.0 * torch.randn(40_000, 2, generator=gen(), dtype=torch.float64)
    out = ve_reverse_diffusion(lambda x, sig: -x / (s**2 + sig[:, None] ** 2), x0, sigmas, generator=gen(1),
                               denoise=False).x
    assert abs(out.var(0).mean().item() - s**2) < 0.03


@pytest.mark.parametrize("n_levels", [20, 200])
def test_ve_reverse_diffusion_step_is_euler_maruyama_of_the_ve_sde(n_levels):
    """One step σ_i → σ_{i+1}: x + a s + √a z with a = σ_i² − σ_{i+1}² = ∫ g² dt; one Euler–Maruyama step of
    `sde.VESDE.reverse` over the same Δt = −1/(L−1) with the same z: x + b s + √b z, b = g(t_i)² |Δt|;
    a / b = (1 − e^{−2cΔ}) / (2cΔ), c = log(σ_max/σ_min), so the two agree to first order in Δ."""
    s2, lo, hi = 0.3, 0.05, 20.0
    score = lambda x, sig: -x / (s2 + sig[:, None] ** 2)  # exact noised score of N(0, s² I)
    vesde = sdes.VESDE(lo, hi)
    reverse = vesde.reverse(lambda x, t: score(x, vesde.marginal_prob(x, t).std))
    sigmas = geometric_sigmas(hi, lo, n_levels).double()
    i = n_levels // 3
    t_i, t_next = 1 - i / (n_levels - 1), 1 - (i + 1) / (n_levels - 1)
    x = sigmas[i] * torch.randn(64, 2, generator=gen(), dtype=torch.float64)
    z = solvers.randn_like(x, gen(1))
    ncsn = ve_reverse_diffusion(score, x, sigmas[i:i + 2], generator=gen(1), return_trajectory=True).trajectory[1]
    em = solvers.euler_maruyama(reverse.drift, reverse.diffusion, x, (t_i, t_next), steps=1, generator=gen(1)).x
    s = score(x, sigmas[i].expand(64))
    a = sigmas[i] ** 2 - sigmas[i + 1] ** 2
    b = vesde.diffusion(torch.tensor(t_i, dtype=torch.float64)) ** 2 * (t_i - t_next)
    torch.testing.assert_close(ncsn, x + a * s + a.sqrt() * z)
    # reverse drift −g² s, run backwards in time (the levels are float32, the SDE's σ(t) float64: rtol 1e-5)
    torch.testing.assert_close(em, x + b * s + b.sqrt() * z, rtol=1e-5, atol=1e-6)
    t_fine = torch.linspace(t_next, t_i, 4001, dtype=torch.float64)
    torch.testing.assert_close(a, torch.trapezoid(vesde.diffusion(t_fine) ** 2, t_fine), rtol=1e-6, atol=0)
    c_delta = math.log(hi / lo) / (n_levels - 1)
    torch.testing.assert_close(a / b, torch.tensor(-math.expm1(-2 * c_delta) / (2 * c_delta), dtype=torch.float64))
    assert abs(a / b - 1) < 1.1 * c_delta  # first order: the gap shrinks like 1/L


def test_noise_conditional_score_wraps_net():
    ve = VESchedule(0.05, 5.0)
    net = TimeMLP(2, hidden=16, depth=2)
    model = NoiseConditionalScore(net, ve)
    torch.testing.assert_close(model.time(torch.tensor([0.05, 5.0])), torch.tensor([0.0, 1.0]))
    x, sigma = torch.randn(4, 2, generator=gen()), torch.tensor([0.05, 0.5, 1.0, 5.0])
    torch.testing.assert_close(model(x, sigma), net(x / (1 + sigma[:, None] ** 2).sqrt(), model.time(sigma)) / sigma[:, None])


def test_ncsn_loss_minimum_for_gaussian_data():
    """Data N(0, s²I), exact noised score: ½E||σ s + ε||² = ½ D s²/(s² + σ²); more for a wrong score."""
    s, d = 1.5, 2
    x = s * torch.randn(200_000, d, generator=gen(), dtype=torch.float64)
    sigma = torch.full((x.shape[0],), 0.8, dtype=torch.float64)
    exact = lambda y, sig: -y / (s**2 + sig[:, None] ** 2)
    loss = ncsn_loss(exact, x, sigma, generator=gen(1)).item()
    assert abs(loss - 0.5 * d * s**2 / (s**2 + 0.64)) < 0.01
    # the clean score −y/s² pays an excess ½ σ² E||x̃ (1/(s²+σ²) − 1/s²)||² = ½ D σ⁶ / (s⁴ (s² + σ²))
    clean = lambda y, sig: -y / s**2
    excess = ncsn_loss(clean, x, sigma, generator=gen(1)).item() - loss
    assert abs(excess - 0.5 * d * 0.8**6 / (s**4 * (s**2 + 0.64))) < 0.002


def test_conv_score_net_and_loss_on_images():
    torch.manual_seed(0)
    model = NoiseConditionalScore(ConvScoreNet(channels=8, time_dim=16), VESchedule(0.01, 50.0))
    x = torch.rand(2, 1, 28, 28, generator=gen()) * 2 - 1
    out = model(x, torch.tensor([0.01, 50.0]))
    assert out.shape == x.shape
    loss = ncsn_loss(model, x, torch.tensor([0.1, 10.0]), generator=gen(1))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        model.net(torch.zeros(2, 1, 14, 14), torch.zeros(2))


def test_clear_errors():
    with pytest.raises(ValueError, match="at least 2"):
        geometric_sigmas(1.0, 0.1, 1)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        geometric_sigmas(0.1, 1.0, 5)
    with pytest.raises(ValueError, match="positive"):
        langevin_dynamics(lambda x: x, torch.zeros(2, 2), step_size=0.0, n_steps=3)
    with pytest.raises(ValueError, match="decrease"):
        annealed_langevin(lambda x, s: x, torch.zeros(2, 2), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="diverge"):
        annealed_langevin(lambda x, s: x, torch.zeros(2, 2), geometric_sigmas(5.0, 0.05, 3), step_size=0.1)
    with pytest.raises(ValueError, match="positive"):
        ncsn_loss(lambda x, s: x, torch.zeros(2, 2), torch.tensor([0.1, 0.0]))


def test_exercise_checks_accept_reference_and_reject_mistakes():
    exercises.check_langevin_step(langevin_step)
    exercises.check_geometric_sigmas(geometric_sigmas)
    with pytest.raises(exercises.ExerciseError, match="drift is α·score; the step moves by half"):
        exercises.check_langevin_step(lambda x, s, a, z: x + a * s + math.sqrt(a) * z)
    with pytest.raises(exercises.ExerciseError, match="not implemented"):
        exercises.check_geometric_sigmas(lambda *a: (_ for _ in ()).throw(NotImplementedError()))
    with pytest.raises(exercises.ExerciseError):  # increasing instead of decreasing
        exercises.check_geometric_sigmas(lambda hi, lo, n: geometric_sigmas(hi, lo, n).flip(0))


# ---------------------------------------------------------------------------- annealed Langevin exercise
def _annealed_by_hand(score, x, sigmas, n_steps_each, step_size, generator):
    for sigma in sigmas:
        alpha = step_size * (sigma / sigmas[-1]) ** 2
        for _ in range(n_steps_each):
            x = x + 0.5 * alpha * score(x, sigma) + alpha.sqrt() * torch.randn(x.shape, generator=generator)
    return x


def test_annealed_langevin_by_hand_is_the_library_on_the_toy():
    """Algorithm 1 written as two loops equals `annealed_langevin` on the exact mixture score, same generator."""
    toy, sigmas = ncsn_toy(), geometric_sigmas(20.0, 1.0, 10)
    x0 = 16 * torch.rand(300, 2, generator=gen()) - 8
    ours = _annealed_by_hand(toy.marginal_score(), x0, sigmas, 20, 0.1, gen(5))
    ref = annealed_langevin(toy.marginal_score(), x0, sigmas, n_steps_each=20, step_size=0.1, generator=gen(5)).x
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_annealed_langevin_check_names_each_mistake():
    from course_utils.exercises.langevin import ANNEALED_LANGEVIN

    exercises.check_annealed_langevin(_annealed_by_hand)
    for mistake in ANNEALED_LANGEVIN.mistakes:  # negative controls: each wrong loop fails, with its own message
        with pytest.raises(exercises.ExerciseError) as err:
            exercises.check_annealed_langevin(mistake.wrong)
        assert mistake.message in str(err.value)
    with pytest.raises(exercises.ExerciseError, match="not implemented"):
        exercises.check_annealed_langevin(lambda *a: (_ for _ in ()).throw(NotImplementedError()))


# ---------------------------------------------------------------------------- tempering vs noising
def test_tempering_changes_the_weights_noising_keeps_them():
    """p^{1/τ} of the toy puts w₁^{1/τ}/Σ w^{1/τ} on the (5, 5) side (grid vs closed form); p_σ keeps w and its
    share is the overlap 0.8Φ(d) + 0.2(1 − Φ(d)), d = 5√2/√(1+σ²). Negative control: the tempered density fails
    the overlap formula (its weights moved), and the untempered p passes the tempered formula only at τ = 1."""
    toy = ncsn_toy()
    phi = lambda u: 0.5 * (1 + math.erf(u / math.sqrt(2)))
    overlap = lambda s2: 0.8 * phi(5 * math.sqrt(2) / math.sqrt(s2)) + 0.2 * (1 - phi(5 * math.sqrt(2) / math.sqrt(s2)))
    for tau in (0.5, 2.0, 4.0):
        share = upper_mass(lambda x: toy.log_prob(x.float()).double() / tau)
        assert share == pytest.approx(tempered_weights(toy.weights, tau)[0].item(), abs=1e-3)
        assert abs(share - overlap(tau)) > 0.05  # the same widths by noise would keep 0.8: tempering moved weight
    assert tempered_weights([0.8, 0.2], 1.0)[0].item() == pytest.approx(0.8)
    for sig in (0.5, 2.0, 4.0):
        noised = toy.noised(1.0, sig)
        share = upper_mass(lambda x: noised.log_prob(x.float()).double(), half_width=15 + 3 * sig)
        assert share == pytest.approx(overlap(1 + sig**2), abs=1e-3)
        torch.testing.assert_close(noised.weights, toy.weights)


# ---------------------------------------------------------------------------- the moons' exact noised score
def test_moons_mixture_is_the_moons_density_and_its_noised_score_is_exact():
    from course_utils import data
    from course_utils.score_matching import autograd_score

    mix = moons_mixture()
    x = data.moons(500, generator=gen())
    torch.testing.assert_close(mix.log_prob(x), data.moons_log_prob(x), rtol=1e-5, atol=1e-4)
    sigma = torch.full((500,), 0.3)
    y = x + 0.3 * torch.randn(500, 2, generator=gen(1))
    by_autograd = autograd_score(lambda z: mix.marginal_log_prob()(z, sigma), y)
    torch.testing.assert_close(mix.marginal_score()(y, sigma), by_autograd, rtol=1e-3, atol=1e-3)


def _error_points():
    from course_utils import data

    g = gen(16)
    x = data.moons(600, generator=g)
    return torch.cat([x + 0.05 * torch.randn(600, 2, generator=g), 5 * torch.rand(600, 2, generator=g) - 2.5])


def test_score_error_by_density_sees_far_field_errors_only_where_they_are():
    """The notebook's claim, σ‖s_θ − s‖ larger in the lowest-density bin than in the highest (×3): true for a score
    that is wrong far from the data (the exact one, clipped), false for the exact score and for one that is wrong
    only on the data (negative controls)."""
    mix, sigma = moons_mixture(), 0.05
    exact, log_p = mix.marginal_score(), mix.marginal_log_prob()
    x = _error_points()
    claim = lambda r: bool(r.bin_error[0] > 3 * r.bin_error[-1])

    def clipped(y, s):  # exact, with its size capped: wrong only where the score is large, far from the data
        out = exact(y, s)
        return out * (5.0 / out.norm(dim=1, keepdim=True)).clamp(max=1.0)

    dense = log_p(x, torch.full((len(x),), sigma)).median()

    def wrong_on_data(y, s):  # exact plus a fixed push of size 1/σ where the density is high
        bump = (log_p(y, s) > dense).float()[:, None] * torch.tensor([1.0 / sigma, 0.0])
        return exact(y, s) + bump

    far = score_error_by_density(clipped, exact, log_p, x, sigma)
    assert claim(far) and far.bin_relative[0] > far.bin_relative[-1]
    none = score_error_by_density(exact, exact, log_p, x, sigma)
    assert not claim(none) and none.bin_error.max() == 0 and none.bin_relative.max() == 0
    assert not claim(score_error_by_density(wrong_on_data, exact, log_p, x, sigma))
    assert far.centres.shape == (5,) and (far.centres[1:] >= far.centres[:-1]).all()  # lowest density first


def test_score_error_claims_that_a_zero_score_passes_and_the_one_it_fails():
    """s = 0 passes the notebook's two shape claims (far-field absolute error ×3, relative error within ×10), so the
    notebook also asserts a relative error below 0.75 in every bin but the densest, and largest in the densest: s = 0
    (relative error 1 everywhere) fails it; the exact score plus an error of fixed size passes it."""
    mix, sigma = moons_mixture(), 0.05
    exact, log_p = mix.marginal_score(), mix.marginal_log_prob()
    x = _error_points()
    beats_zero = lambda r: bool(r.bin_relative[:-1].max() < 0.75 and r.bin_relative.argmax() == len(r.bin_relative) - 1)
    zero = score_error_by_density(lambda y, s: torch.zeros_like(y), exact, log_p, x, sigma)
    assert zero.bin_error[0] > 3 * zero.bin_error[-1] and zero.bin_relative.max() < 10 * zero.bin_relative.min()
    torch.testing.assert_close(zero.bin_relative, torch.ones(5))
    assert not beats_zero(zero)
    assert beats_zero(score_error_by_density(lambda y, s: exact(y, s) + 1.0, exact, log_p, x, sigma))


def test_sigma_squared_weighting_puts_every_level_on_one_scale():
    """Data N(0, I), exact noised score: with λ = σ² the per-level loss is ½ D/(1 + σ²), below the ½ D of s = 0 (a
    negative control), at every level; with λ = 1 (the other negative control) it is that over σ², and the smallest level outweighs the largest ×10⁴ and more."""
    d = 2
    x = torch.randn(100_000, d, generator=gen(), dtype=torch.float64)
    exact = lambda y, sig: -y / (1 + sig[:, None] ** 2)
    weighted = {}
    for s in (0.05, 5.0):
        sigma = torch.full((x.shape[0],), s, dtype=torch.float64)
        weighted[s] = ncsn_loss(exact, x, sigma, generator=gen(1)).item()
        assert weighted[s] == pytest.approx(0.5 * d / (1 + s**2), rel=0.03)
        zero = ncsn_loss(lambda y, sig: torch.zeros_like(y), x, sigma, generator=gen(1)).item()
        assert zero == pytest.approx(0.5 * d, rel=0.02) and weighted[s] < zero  # s = 0 scores D/2; the exact score less
    assert max(weighted.values()) / min(weighted.values()) < 30
    unweighted = {s: v / s**2 for s, v in weighted.items()}
    assert unweighted[0.05] / unweighted[5.0] > 1e4
