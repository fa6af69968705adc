"""Fokker–Planck solver against closed-form densities, conservation of mass, stationary states."""

import math

import pytest
import torch

from course_utils import fokker_planck as fp
from course_utils import mixtures
from course_utils import sde as sdes


def gauss_1d(mean, std):
    return lambda x: torch.exp(-0.5 * ((x[:, 0] - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def test_grid_geometry():
    grid = fp.Grid((-1.0, 1.0), 4, 2)
    assert grid.dx == 0.5 and grid.cell_volume == 0.25 and grid.shape == (4, 4)
    torch.testing.assert_close(grid.centres(), torch.tensor([-0.75, -0.25, 0.25, 0.75], dtype=torch.float64))
    pts = grid.points()
    assert pts.shape == (16, 2)
    # row-major layout: p[i, j] sits at (x_i, y_j)
    vals = grid.evaluate(lambda x: x[:, 0] + 10 * x[:, 1])
    assert vals[1, 3] == grid.centres()[1] + 10 * grid.centres()[3]
    assert grid.coarsen(2).n == 2
    with pytest.raises(ValueError, match="divide"):
        grid.coarsen(3)
    with pytest.raises(ValueError, match="lo < hi"):
        fp.Grid((1.0, 0.0))


def test_histogram_mass_tv_and_coarsen():
    grid = fp.Grid((0.0, 1.0), 10, 2)
    x = torch.rand(50_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    h = fp.histogram(x, grid)
    assert abs(fp.mass(h, grid).item() - 1) < 1e-12
    assert (h - 1).abs().max() < 0.25  # uniform density 1, 500 ± 22 points a cell
    outside = torch.cat([x, x + 5])  # half the points fall outside the grid
    assert abs(fp.mass(fp.histogram(outside, grid), grid).item() - 0.5) < 1e-12
    c = fp.coarsen(h, grid, 5)
    assert c.shape == (2, 2) and abs(fp.mass(c, grid.coarsen(5)).item() - 1) < 1e-12
    ones = torch.ones(grid.shape, dtype=torch.float64)
    left = torch.zeros_like(ones)
    left[:5] = 2.0
    assert fp.total_variation(ones, ones, grid) == 0
    assert abs(fp.total_variation(left, 2 - left, grid).item() - 1) < 1e-12  # disjoint supports


def test_gibbs_density_of_a_quadratic_is_gaussian():
    beta, grid = 4.0, fp.Grid((-3.0, 3.0), 600, 1)
    p = fp.gibbs_density(lambda x: 0.5 * x[:, 0] ** 2, beta, grid)
    assert abs(fp.mass(p, grid).item() - 1) < 1e-12
    torch.testing.assert_close(p, grid.evaluate(gauss_1d(0.0, 1 / math.sqrt(beta))), atol=1e-6, rtol=1e-4)


def test_face_flux_limits():
    f, pl, pr = torch.tensor([1.0, -1.0, 0.0]), torch.tensor([2.0, 2.0, 2.0]), torch.tensor([3.0, 3.0, 3.0])
    # no diffusion: upwind, the density comes from where the drift comes from
    torch.testing.assert_close(fp.face_flux(f, 0.0, pl, pr, 0.1), torch.tensor([2.0, -3.0, 0.0]))
    # strong diffusion: central differences, J = f (p_l + p_r)/2 − D (p_r − p_l)/Δx
    D, dx = 100.0, 0.01
    want = f * (pl + pr) / 2 - D * (pr - pl) / dx
    torch.testing.assert_close(fp.face_flux(f, D, pl, pr, dx), want, rtol=1e-6, atol=1e-6)


def test_ou_from_a_mixture_matches_the_closed_form_and_conserves_mass():
    gm = mixtures.GaussianMixture([[-2.0], [1.5]], [0.3, 0.4], [0.25, 0.75]).noised(1.0, 0.0)
    ou, grid = sdes.OrnsteinUhlenbeck(1.0, 1.0), fp.Grid((-5.0, 5.0), 200, 1)
    p0 = grid.evaluate(lambda x: gm.log_prob(x).exp())
    times = [0.0, 0.3, 1.0]
    sol = fp.solve(ou.drift, ou.diffusion, p0, grid, times)
    assert sol.p.shape == (3, 200) and (sol.p >= 0).all()
    # f and g do not depend on t: coefficients computed once give the same answer
    torch.testing.assert_close(fp.solve(ou.drift, ou.diffusion, p0, grid, times, time_homogeneous=True).p, sol.p)
    assert (sol.mass - sol.mass[0]).abs().max() < 1e-12
    for p, t in zip(sol.p[1:], times[1:]):
        exact = grid.evaluate(lambda x: gm.marginal(ou.schedule, t).log_prob(x.float()).exp().double())
        assert fp.total_variation(p, exact, grid) < 2e-3


def test_time_dependent_vp_sde_matches_the_closed_form():
    """β(t) grows from 0.1 to 20: the coefficients change every step."""
    gm = mixtures.GaussianMixture([[-1.0], [1.0]], [0.3, 0.3], [0.5, 0.5])
    vp, grid = sdes.VPSDE(), fp.Grid((-4.0, 4.0), 160, 1)
    sol = fp.solve(vp.drift, vp.diffusion, grid.evaluate(lambda x: gm.log_prob(x.float()).exp().double()),
                   grid, [0.0, 0.2, 0.5])
    for p, t in zip(sol.p[1:], (0.2, 0.5)):
        exact = grid.evaluate(lambda x: gm.marginal(vp.schedule, t).log_prob(x.float()).exp().double())
        assert fp.total_variation(p, exact, grid) < 3e-3


def test_2d_linear_drift_matches_the_closed_form():
    """dx = A x dt + g dW, A = −a I + ω J: a mixture stays a mixture, rotated and shrunk."""
    a, w, g, t = 0.5, 1.5, 0.8, 0.6
    A = torch.tensor([[-a, -w], [w, -a]], dtype=torch.float64)
    means, s0 = torch.tensor([[1.2, 0.0], [-1.0, 0.8]], dtype=torch.float64), 0.4
    grid = fp.Grid((-3.0, 3.0), 60, 2)
    p0 = grid.evaluate(lambda x: mixtures.GaussianMixture(means, s0).log_prob(x).exp())
    sol = fp.solve(lambda x, t: x @ A.T, g, p0, grid, [0.0, t], time_homogeneous=True)
    M = math.exp(-a * t) * torch.tensor([[math.cos(w * t), -math.sin(w * t)], [math.sin(w * t), math.cos(w * t)]],
                                        dtype=torch.float64)
    std_t = math.sqrt(math.exp(-2 * a * t) * s0**2 + g**2 / (2 * a) * (1 - math.exp(-2 * a * t)))
    exact = grid.evaluate(lambda x: mixtures.GaussianMixture(means @ M.T, std_t).log_prob(x).exp())
    assert fp.total_variation(sol.p[-1], exact, grid) < 0.01
    assert abs(sol.mass[-1] - sol.mass[0]) < 1e-12
    # a wrong sign of the rotation would be far off
    wrong = grid.evaluate(lambda x: mixtures.GaussianMixture(means @ M, std_t).log_prob(x).exp())
    assert fp.total_variation(sol.p[-1], wrong, grid) > 0.2


def test_double_well_relaxes_to_its_gibbs_density():
    beta, grid = 2.0, fp.Grid((-2.0, 2.0), 40, 1)
    U = lambda x: (x[:, 0] ** 2 - 1) ** 2
    p0 = grid.evaluate(gauss_1d(0.0, 0.5))
    sol = fp.solve(lambda x, t: -4 * x * (x**2 - 1), math.sqrt(2 / beta), p0, grid, [0.0, 2.5], time_homogeneous=True)
    gibbs = fp.gibbs_density(U, beta, grid)
    assert fp.total_variation(p0, gibbs, grid) > 0.3
    assert fp.total_variation(sol.p[-1], gibbs, grid) < 0.01
    # the Gibbs density is (nearly) a fixed point of the discrete operator
    dp, _ = fp.rhs(gibbs, 0.0, lambda x, t: -4 * x * (x**2 - 1), math.sqrt(2 / beta), grid)
    dp0, _ = fp.rhs(p0, 0.0, lambda x, t: -4 * x * (x**2 - 1), math.sqrt(2 / beta), grid)
    assert dp.abs().max() < 0.05 * dp0.abs().max()


def test_continuity_equation_is_the_change_of_variables():
    """g = 0, f = sin x: the flow map solves tan(x_t/2) = e^t tan(x_0/2); density by change of variables."""
    grid, t = fp.Grid((-math.pi, math.pi), 200, 1), 1.0
    p0_fn = gauss_1d(0.3, 0.6)
    sol = fp.solve(lambda x, t: torch.sin(x), 0.0, p0_fn(grid.points()).reshape(grid.shape), grid, [0.0, t])

    def exact(x):
        x0 = 2 * torch.atan(torch.tan(x[:, 0] / 2) * math.exp(-t))
        dx0_dx = math.exp(-t) / torch.cos(x[:, 0] / 2) ** 2 / (1 + math.exp(-2 * t) * torch.tan(x[:, 0] / 2) ** 2)
        return p0_fn(x0[:, None]) * dx0_dx

    assert fp.total_variation(sol.p[-1], grid.evaluate(exact), grid) < 0.01
    assert fp.total_variation(sol.p[0], grid.evaluate(exact), grid) > 0.2
    assert abs(sol.mass[-1] - sol.mass[0]) < 1e-12


def test_clear_errors():
    grid = fp.Grid((-1.0, 1.0), 10, 1)
    p0 = torch.ones(10, dtype=torch.float64) / 2
    with pytest.raises(ValueError, match="grid's shape"):
        fp.solve(lambda x, t: x, 1.0, torch.ones(11), grid, [0.0, 1.0])
    with pytest.raises(ValueError, match="increasing"):
        fp.solve(lambda x, t: x, 1.0, p0, grid, [0.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="beta"):
        fp.gibbs_density(lambda x: x[:, 0], -1.0, grid)
    with pytest.raises(ValueError, match=r"\(N, 1\)"):
        fp.histogram(torch.zeros(5, 2), grid)


# ---------------------------------------------------------------------------- exercise check (notebook 04)
def test_stationary_density_check_names_the_mistake(capsys):
    from course_utils import exercises
    from course_utils.exercises.sdes import reference_stationary_density

    # the reference is the library's Gibbs density on the same grid
    grid = fp.Grid((-2.0, 2.0), 50, 1)
    U = lambda x: (x**2 - 1) ** 2
    torch.testing.assert_close(reference_stationary_density(U, 2.0, grid.centres()),
                               fp.gibbs_density(lambda x: U(x[:, 0]), 2.0, grid))
    exercises.check_stationary_density(reference_stationary_density)
    assert "agrees" in capsys.readouterr().out
    flipped = lambda U, beta, x: reference_stationary_density(lambda y: -U(y), beta, x)
    with pytest.raises(exercises.ExerciseError, match="sign"):
        exercises.check_stationary_density(flipped)
    unnormalised = lambda U, beta, x: reference_stationary_density(U, beta, x) * (x[1] - x[0])
    with pytest.raises(exercises.ExerciseError, match="grid spacing"):
        exercises.check_stationary_density(unnormalised)
    no_beta = lambda U, beta, x: reference_stationary_density(U, 1.0, x)
    with pytest.raises(exercises.ExerciseError, match="β is missing"):
        exercises.check_stationary_density(no_beta)


# ---------------------------------------------------------------------------- notebook 04's comparisons, with negative controls
def test_histogram_tv_is_tv_of_the_histogram_on_coarse_cells():
    grid = fp.Grid((-4.0, 4.0), 80, 1)
    x = torch.randn(20_000, 1, generator=torch.Generator().manual_seed(0))
    p = grid.evaluate(gauss_1d(0.0, 1.0))
    coarse = grid.coarsen(4)
    want = fp.total_variation(fp.histogram(x.double(), coarse), fp.coarsen(p, grid, 4), coarse)
    torch.testing.assert_close(fp.histogram_tv(x, p, grid), want)
    assert fp.histogram_tv(x, p, grid) < 0.03  # exact draws: only the sampling floor
    assert fp.histogram_tv(x + 1, p, grid) > 0.3


def test_fokker_planck_matches_simulated_paths_and_a_wrong_equation_does_not():
    """The notebook's check (TV between a histogram of Euler–Maruyama paths and the grid solution < 0.05)
    passes for the right equation and fails for the wrong diffusion coefficient or a zero drift."""
    from course_utils import solvers

    gm = mixtures.GaussianMixture([[-2.0], [1.5]], [0.3, 0.4], [0.25, 0.75])
    ou, grid = sdes.OrnsteinUhlenbeck(1.0, 1.0), fp.Grid((-5.0, 5.0), 200, 1)
    gen = torch.Generator().manual_seed(0)
    x = solvers.euler_maruyama(ou.drift, ou.diffusion, gm.sample(20_000, generator=gen), (0.0, 1.0), steps=200,
                               generator=gen).x
    p0 = grid.evaluate(lambda y: gm.log_prob(y.float()).exp().double())
    solve = lambda drift, g: fp.solve(drift, g, p0, grid, [0.0, 1.0], time_homogeneous=True).p[-1]
    assert fp.histogram_tv(x, solve(ou.drift, ou.diffusion), grid) < 0.05
    assert fp.histogram_tv(x, solve(ou.drift, 2.0), grid) > 0.08  # twice the noise
    assert fp.histogram_tv(x, solve(ou.drift, math.sqrt(0.5)), grid) > 0.08  # D = ¼ g² instead of ½ g²
    assert fp.histogram_tv(x, solve(lambda y, t: torch.zeros_like(y), ou.diffusion), grid) > 0.08  # no drift


def test_paths_relax_to_the_gibbs_density_at_their_own_temperature_only():
    """Stationarity: paths of dx = −U' dt + √(2/β) dW end on e^{−βU}/Z, not on the Gibbs density of another β."""
    from course_utils import solvers

    beta, grid = 2.0, fp.Grid((-2.0, 2.0), 40, 1)
    U = lambda x: (x[:, 0] ** 2 - 1) ** 2
    gen = torch.Generator().manual_seed(0)
    x = solvers.euler_maruyama(lambda x, t: -4 * x * (x**2 - 1), lambda t: math.sqrt(2 / beta),
                               0.5 * torch.randn(20_000, 1, generator=gen, dtype=torch.float64), (0.0, 2.0),
                               steps=400, generator=gen).x
    assert fp.histogram_tv(x, fp.gibbs_density(U, beta, grid), grid) < 0.05
    for wrong in (1.0, 4.0):
        assert fp.histogram_tv(x, fp.gibbs_density(U, wrong, grid), grid) > 0.1
