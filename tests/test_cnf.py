"""Continuous normalizing flows: divergences, Hutchinson, and log-densities against closed forms."""

import itertools
import math

import pytest
import torch
from torch import nn

from course_utils import cnf
from course_utils import solvers
from course_utils.models import TimeMLP
from course_utils.normalizing_flows import standard_normal_log_prob

D64 = torch.float64


class Linear(nn.Module):
    """f(x, t) = A x on flattened x: the flow is x_t = e^{tA} x_0 and div f = tr A."""

    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, x, t):
        return (x.flatten(1) @ self.A.T).reshape(x.shape)


def random_matrix(d, seed, scale=0.7):
    return scale * torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=D64)


def small_mlp(dim=2, seed=0):
    torch.manual_seed(seed)
    return TimeMLP(dim, hidden=32, depth=2, time_dim=8, time_scale=5.0).double()


def jacobian_trace(model, x, t):
    """tr ∂f/∂x per sample from the full autograd Jacobian (the slow, obvious way)."""
    # samples do not interact, so the Jacobian of Σ_b f(x_b) w.r.t. x holds every sample's Jacobian
    J = torch.autograd.functional.jacobian(lambda y: model(y, t).sum(0), x)  # (D, B, D)
    return torch.diagonal(J.permute(1, 0, 2), dim1=1, dim2=2).sum(1)


def closed_form_log_prob(A, x1):
    """x1 = e^A x0 with x0 ~ N(0, I): x1 ~ N(0, e^A e^{Aᵀ})."""
    M = torch.linalg.matrix_exp(A)
    return torch.distributions.MultivariateNormal(torch.zeros(len(A), dtype=D64), M @ M.T).log_prob(x1)


# ---------------------------------------------------------------------------- divergence


def test_exact_divergence_equals_trace_of_autograd_jacobian():
    model = small_mlp(3)
    x = torch.randn(7, 3, dtype=D64).requires_grad_(True)
    t = torch.rand(7, dtype=D64)
    div = cnf.divergence_exact(model(x, t), x)
    torch.testing.assert_close(div, jacobian_trace(model, x.detach(), t))


def test_exact_divergence_on_image_shaped_states():
    W = random_matrix(4, 1)
    x = torch.randn(5, 1, 2, 2, dtype=D64).requires_grad_(True)
    f_x = torch.tanh(x.flatten(1) @ W.T).reshape(x.shape)
    want = ((1 - f_x.flatten(1).pow(2)) * torch.diagonal(W)).sum(1)  # Σ_i tanh'(·)_i W_ii
    torch.testing.assert_close(cnf.divergence_exact(f_x, x), want)


@pytest.mark.parametrize("kind", cnf.PROBES)
def test_hutchinson_is_unbiased(kind):
    model = small_mlp(4)
    x = torch.randn(1, 4, dtype=D64).expand(4000, 4).clone().requires_grad_(True)
    t = torch.full((4000,), 0.3, dtype=D64)
    f_x = model(x, t)
    eps = cnf.probe(x, kind, torch.Generator().manual_seed(0))
    est = cnf.divergence_hutchinson(f_x, x, eps)
    exact = cnf.divergence_exact(f_x, x)[0]
    se = est.std() / math.sqrt(len(est))
    assert abs(est.mean() - exact) < 4 * se
    assert se > 0  # the probes really vary (not the exact trace in disguise)


def test_probes_have_identity_second_moment():
    x = torch.zeros(50000, 3, dtype=D64)
    for kind in cnf.PROBES:
        eps = cnf.probe(x, kind, torch.Generator().manual_seed(1))
        torch.testing.assert_close(eps.T @ eps / len(eps), torch.eye(3, dtype=D64), atol=0.03, rtol=0)
    assert set(cnf.probe(x, "rademacher").unique().tolist()) == {-1.0, 1.0}


def test_rademacher_variance_formula_by_enumerating_all_sign_vectors():
    A = random_matrix(3, 2)
    signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=3)), dtype=D64)  # all 8, equally likely
    values = torch.einsum("ni,ij,nj->n", signs, A, signs)
    torch.testing.assert_close(values.mean(), torch.trace(A))
    torch.testing.assert_close(values.var(unbiased=False), cnf.hutchinson_variance(A, "rademacher"))


def test_gaussian_variance_formula_matches_isserlis_and_monte_carlo():
    A = random_matrix(4, 3)
    isserlis = torch.trace(A @ A.T) + torch.trace(A @ A)  # ‖A‖_F² + tr(A²)
    torch.testing.assert_close(cnf.hutchinson_variance(A, "gaussian"), isserlis)
    eps = torch.randn(200000, 4, generator=torch.Generator().manual_seed(4), dtype=D64)
    mc = torch.einsum("ni,ij,nj->n", eps, A, eps).var()
    assert abs(mc / isserlis - 1) < 0.03


def test_rademacher_is_exact_for_diagonal_and_never_worse():
    assert cnf.hutchinson_variance(torch.diag(torch.tensor([1.0, -2.0, 3.0])), "rademacher") == 0
    A = random_matrix(5, 5, scale=1.0)
    A_batch = torch.stack([A, A + 3 * torch.eye(5, dtype=D64)])
    gauss, rad = cnf.hutchinson_variance(A_batch, "gaussian"), cnf.hutchinson_variance(A_batch, "rademacher")
    assert torch.all(rad < gauss)
    torch.testing.assert_close(gauss - rad, 2 * torch.diagonal(A_batch, dim1=1, dim2=2).pow(2).sum(1))


# ---------------------------------------------------------------------------- log-density


@pytest.mark.parametrize("d", [2, 3])
def test_log_prob_of_a_linear_field_is_the_closed_form_gaussian(d):
    A = random_matrix(d, 10 + d)
    x1 = torch.randn(64, d, dtype=D64)
    got = cnf.log_prob(Linear(A), x1, method="rk4", steps=32)
    torch.testing.assert_close(got, closed_form_log_prob(A, x1), atol=1e-6, rtol=1e-6)


def test_log_prob_on_image_shaped_states():
    A = random_matrix(4, 20)
    x1 = torch.randn(16, 1, 2, 2, dtype=D64)
    got = cnf.log_prob(Linear(A), x1, steps=32)
    torch.testing.assert_close(got, closed_form_log_prob(A, x1.flatten(1)), atol=1e-6, rtol=1e-6)


def test_delta_log_p_of_a_linear_field_is_minus_t_trace():
    A = random_matrix(2, 21)
    x0 = torch.randn(8, 2, dtype=D64)
    sol = cnf.integrate(Linear(A), x0, (0.0, 0.5), steps=16)
    torch.testing.assert_close(sol.delta_log_p, torch.full((8,), -0.5 * torch.trace(A).item(), dtype=D64))
    torch.testing.assert_close(sol.x, x0 @ torch.linalg.matrix_exp(0.5 * A).T)
    assert sol.nfe == 16 * 4


def test_rademacher_trace_is_exact_for_a_diagonal_linear_field():
    A = torch.diag(torch.tensor([0.5, -0.8], dtype=D64))
    x1 = torch.randn(32, 2, dtype=D64)
    got = cnf.log_prob(Linear(A), x1, trace="hutchinson", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, closed_form_log_prob(A, x1), atol=1e-6, rtol=1e-6)


def test_log_prob_of_a_nonlinear_flow_integrates_to_one():
    model = small_mlp(2, seed=3)
    with torch.no_grad():
        model.net[-1].weight.mul_(3.0)  # a clearly non-Gaussian density
        xs = torch.linspace(-6, 6, 81, dtype=D64)
        grid = torch.cartesian_prod(xs, xs)
        p = cnf.log_prob(model, grid, steps=8).exp()
    mass = p.sum().item() * (xs[1] - xs[0]).item() ** 2
    assert abs(mass - 1) < 0.01
    gaussian = torch.exp(standard_normal_log_prob(grid))
    assert (p - gaussian).abs().max() > 0.01  # the field really changed the density
    with torch.no_grad():  # negative control: the divergence integral with the wrong sign is not a density
        back = cnf.integrate(model, grid, (1.0, 0.0), steps=8)
        p_wrong = (standard_normal_log_prob(back.x) + back.delta_log_p).exp()
    assert abs(p_wrong.sum().item() * (xs[1] - xs[0]).item() ** 2 - 1) > 0.05


def test_forward_and_backward_log_densities_agree():
    model = small_mlp(2, seed=4)
    x0 = torch.randn(64, 2, dtype=D64)
    with torch.no_grad():
        fwd = cnf.integrate(model, x0, (0.0, 1.0), method="dopri5", rtol=1e-8, atol=1e-8)
        log_p1 = standard_normal_log_prob(x0) + fwd.delta_log_p
        back = cnf.log_prob(model, fwd.x, method="dopri5", rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(back, log_p1, atol=1e-6, rtol=1e-6)
    sample = cnf.sample(model, x0, method="rk4", steps=64)  # fixed steps of the course's one sampler
    torch.testing.assert_close(sample.x, fwd.x, atol=1e-6, rtol=1e-6)
    assert sample.nfe == 64 * 4 and sample.trajectory is None


def test_sample_is_the_one_sampler_and_matches_torchdiffeq():
    """`cnf.sample` walks `solvers.uniform_grid` with `solvers.sample`; torchdiffeq's fixed-grid rk4
    (the 3/8 rule) and the classical step differ only by their O(h⁵) local errors; Euler agrees exactly."""
    model = small_mlp(2, seed=5)
    x0 = torch.randn(32, 2, dtype=D64)
    with torch.no_grad():
        for method, tol in (("euler", 1e-12), ("midpoint", 1e-12), ("rk4", 1e-6)):
            ours = cnf.sample(model, x0, method=method, steps=16, return_trajectory=True)
            theirs = solvers.odeint(solvers.model_field(model), x0, (0.0, 1.0), method=method, steps=16,
                                    return_trajectory=True)
            torch.testing.assert_close(ours.trajectory, theirs.trajectory, atol=tol, rtol=tol)
            torch.testing.assert_close(ours.t, theirs.t)
            assert ours.nfe == theirs.nfe == 16 * {"euler": 1, "midpoint": 2, "rk4": 4}[method]


def test_gradient_of_the_likelihood_matches_the_closed_form():
    # f = a x in D dims: log p_1(x) = log N(e^{-a} x) − D a, so d/da = e^{-2a} ‖x‖² − D.
    a = torch.tensor(0.3, dtype=D64)
    model = Linear(a * torch.eye(3, dtype=D64))
    x = torch.randn(10, 3, dtype=D64)
    log_p = cnf.log_prob(model, x, steps=32)
    (grad_A,) = torch.autograd.grad(log_p.sum(), model.A)
    want = (torch.exp(-2 * a) * x.pow(2).sum(1) - 3).sum()
    torch.testing.assert_close(torch.trace(grad_A), want, atol=1e-6, rtol=1e-6)


def test_adjoint_gives_the_same_gradients():
    grads = []
    for adjoint in (False, True):
        model = small_mlp(2, seed=5)
        loss = cnf.nll_loss(model, torch.randn(16, 2, dtype=D64, generator=torch.Generator().manual_seed(0)),
                            method="dopri5", rtol=1e-8, atol=1e-8, adjoint=adjoint)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_no_grad_gives_the_same_values_without_a_graph():
    model = small_mlp(2, seed=6)
    x = torch.randn(8, 2, dtype=D64)
    with torch.no_grad():
        cheap = cnf.log_prob(model, x)
    full = cnf.log_prob(model, x)
    assert not cheap.requires_grad and full.requires_grad
    torch.testing.assert_close(cheap, full.detach())


# ---------------------------------------------------------------------------- errors


def test_clear_errors():
    model = small_mlp(2)
    x = torch.randn(4, 2, dtype=D64)
    with pytest.raises(ValueError, match="Unknown trace"):
        cnf.log_prob(model, x, trace="jacobian")
    with pytest.raises(ValueError, match="Unknown probe"):
        cnf.log_prob(model, x, trace="hutchinson", probe_kind="uniform")
    with pytest.raises(ValueError, match=r"\(B, \*D\)"):
        cnf.log_prob(model, torch.randn(2, dtype=D64))
    with pytest.raises(ValueError, match="shape of x"):
        cnf.log_prob(lambda x, t: x[:, :1], x)
    with pytest.raises(ValueError, match="requires_grad_"):
        cnf.divergence_exact(x * 2, x)
    xg = x.clone().requires_grad_(True)
    with pytest.raises(ValueError, match="probe eps"):
        cnf.divergence_hutchinson(xg * 2, xg, torch.ones(4, 3))
    with pytest.raises(ValueError, match="square"):
        cnf.hutchinson_variance(torch.ones(2, 3))
    with pytest.raises(ValueError, match="Unknown probe"):
        cnf.hutchinson_variance(torch.eye(2), "normal")


# ---------------------------------------------------------------------------- exercise checks


def test_exercise_checks_pass_the_reference_and_name_common_mistakes():
    from course_utils import exercises
    from course_utils.exercises import cnf as ex

    exercises.check_hutchinson_divergence(ex.reference_hutchinson_divergence)
    exercises.check_augmented_dynamics(ex.reference_augmented_dynamics)
    with pytest.raises(exercises.ExerciseError, match="exact divergence"):
        exercises.check_hutchinson_divergence(lambda f, x, eps: ex._exact_div(f, x))
    with pytest.raises(exercises.ExerciseError, match="wrong sign"):
        exercises.check_augmented_dynamics(lambda field, x, t: (field(x, t), ex._exact_div(field, x, t)))
    with pytest.raises(exercises.ExerciseError, match="not implemented"):
        exercises.check_augmented_dynamics(lambda *a: (_ for _ in ()).throw(NotImplementedError()))


def test_ffjord_log_prob_exercise_agrees_with_cnf_log_prob_and_the_closed_form_and_names_mistakes():
    from course_utils import exercises
    from course_utils.exercises import cnf as ex

    A = random_matrix(3, 11, scale=0.5)
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(12), dtype=D64)
    ref = ex.reference_ffjord_log_prob(lambda z, t: z @ A.T, lambda z, t: torch.trace(A).expand(len(z)), x, 32)
    M = torch.linalg.matrix_exp(A)
    closed = torch.distributions.MultivariateNormal(torch.zeros(3, dtype=D64), M @ M.T).log_prob(x)
    torch.testing.assert_close(ref, closed, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ref, cnf.log_prob(Linear(A), x, method="rk4", steps=32).detach())
    net = TimeMLP(dim=2, hidden=16, depth=2, time_scale=1.0).double()  # a time-dependent neural field, exact divergence

    def div(z, t):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            return cnf.divergence_exact(net(z, t), z, create_graph=False)

    x2 = torch.randn(10, 2, generator=torch.Generator().manual_seed(13), dtype=D64)
    with torch.no_grad():  # classic RK4 against dopri5 (torchdiffeq's "rk4" is the 3/8 rule: same order)
        torch.testing.assert_close(ex.reference_ffjord_log_prob(net, div, x2, 64),
                                   cnf.log_prob(net, x2, method="dopri5", rtol=1e-10, atol=1e-10), atol=1e-6, rtol=1e-6)
    exercises.check_ffjord_log_prob(ex.reference_ffjord_log_prob)
    for wrong, words in [(dict(sign=1.0), "wrong sign"), (dict(start=0.0), "wrong direction"),
                         (dict(with_base=False), "forgets the base"), (dict(base_at_end=False), "at the data point"),
                         (dict(field_time_forward=True), "times of a forward"), (dict(euler=True), "Euler")]:
        with pytest.raises(exercises.ExerciseError, match=words):
            exercises.check_ffjord_log_prob(ex._mistake(**wrong))


# ---------------------------------------------------------------------------- the checkerboard's likelihood gap


def _board_log_prob(kind):
    """log p of the standardised checkerboard's data density ('data') or of the uniform density on its whole
    4×4 board ('board'): both −inf off the board."""
    from course_utils import data

    mean, std = data.standardisation("checkerboard")

    def log_prob(x):
        raw = x.double() * std.double() + mean.double()
        on_board = (raw.abs() <= 2).all(1)
        black = (torch.floor(raw).sum(1) % 2 == 0) if kind == "data" else torch.ones_like(on_board)
        log_area = math.log((8.0 if kind == "data" else 16.0) / float(std[0] * std[1]))
        return torch.where(on_board & black, -log_area, -math.inf)
    return log_prob


@pytest.fixture(scope="module")
def board_test():
    from course_utils import data

    return data.sample_toy("checkerboard", 2000, generator=torch.Generator().manual_seed(20)), \
        data.checkerboard_entropy()


def test_the_gap_is_zero_for_the_data_density_and_log_2_for_the_whole_board(board_test):
    x, entropy = board_test
    assert cnf.likelihood_gap(_board_log_prob("data"), x, entropy) == pytest.approx(0.0, abs=1e-6)
    assert cnf.learned_the_squares(cnf.likelihood_gap(_board_log_prob("data"), x, entropy))
    gap_board = cnf.likelihood_gap(_board_log_prob("board"), x, entropy)  # negative control: no squares learned
    assert gap_board == pytest.approx(math.log(2), abs=1e-6) and gap_board == pytest.approx(cnf.UNIFORM_BOARD_GAP)
    assert not cnf.learned_the_squares(gap_board)
    assert cnf.likelihood_gap(lambda p: torch.full((len(p),), -math.inf), x, entropy) == math.inf
    with pytest.raises(ValueError, match="below log 2"):
        cnf.learned_the_squares(0.1, bound=0.8)  # the old bound would pass a model that learned no squares


def test_an_untrained_field_fails_the_checkerboard_gap_check(board_test):
    from course_utils.cli import train_ffjord

    x, entropy = board_test
    torch.manual_seed(0)
    untrained = train_ffjord.make_model().eval()
    gap = cnf.likelihood_gap(lambda p: cnf.log_prob(untrained, p, method="rk4", steps=8), x, entropy)
    assert gap > math.log(2) - 0.05 and not cnf.learned_the_squares(gap)


def test_the_shipped_checkerboard_ffjord_learned_the_squares(board_test):
    from course_utils.cli import train_ffjord

    x, entropy = board_test
    model, cfg = train_ffjord.load_ffjord(device="cpu")
    assert cfg["data"] == "checkerboard" and cfg["trace"] == "exact"
    fine = cnf.likelihood_gap(lambda p: cnf.log_prob(model, p, method="rk4", steps=32), x, entropy)
    coarse = cnf.likelihood_gap(lambda p: cnf.log_prob(model, p, method=cfg["method"], steps=cfg["ode_steps"]),
                                x, entropy)
    assert abs(fine - coarse) < 0.02  # the training grid was not exploited
    assert -0.02 < fine and cnf.learned_the_squares(fine)


def test_log_density_path_of_a_linear_field_is_the_closed_form_at_every_time():
    A = random_matrix(2, 14, scale=0.6)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(15), dtype=D64)
    times = [0.0, 0.3, 0.5, 1.0]
    path = cnf.log_density_path(Linear(A), x, times, steps=64)
    assert path.shape == (4, 50)
    for t, log_p in zip(times, path):
        M = torch.linalg.matrix_exp(t * A)  # x_t = e^{tA} x_0, so p_t = N(0, M Mᵀ)
        closed = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=D64), M @ M.T).log_prob(x)
        torch.testing.assert_close(log_p, closed, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(path[0], standard_normal_log_prob(x))


# ---------------------------------------------------------------------------- the notebook's headline checks


@pytest.mark.parametrize("kind", cnf.PROBES)
def test_the_unbiasedness_check_passes_true_probes_and_fails_a_biased_one(kind):
    """Notebook 03 asserts `mean_within_standard_errors` on its Hutchinson estimates. Negative controls: a probe
    shifted by ½ (E[eps epsᵀ] = I + ¼·11ᵀ, bias ¼·1ᵀJ1), one scaled by 1.2 (bias 0.44·tr J), and the exact
    trace repeated (no spread)."""
    model = small_mlp(4, seed=3)
    with torch.no_grad():
        model.net[-1].weight.mul_(20)  # a Jacobian of order one, as in the notebook
    n = 8000
    x = torch.randn(1, 4, dtype=D64, generator=torch.Generator().manual_seed(7)).expand(n, 4).clone()
    x.requires_grad_(True)
    f_x = model(x, torch.full((n,), 0.5, dtype=D64))
    exact = cnf.divergence_exact(f_x, x, create_graph=False)[0].item()
    eps = cnf.probe(x, kind, torch.Generator().manual_seed(8))
    est = lambda e: cnf.divergence_hutchinson(f_x, x, e, create_graph=False).detach()  # noqa: E731
    assert cnf.mean_within_standard_errors(est(eps), exact)
    J = torch.autograd.functional.jacobian(lambda y: model(y[None], torch.tensor([0.5], dtype=D64))[0], x[0].detach())
    se = est(eps).std().item() / math.sqrt(n)
    for biased, bias in ((eps + 0.5, 0.25 * J.sum().item()), (1.2 * eps, 0.44 * torch.trace(J).item())):
        assert abs(bias) > 8 * se  # the control is meaningful: its bias is far outside the test's reach
        assert not cnf.mean_within_standard_errors(est(biased), exact)
    assert not cnf.mean_within_standard_errors(torch.full((n,), exact, dtype=D64), exact)
    with pytest.raises(ValueError, match="two estimates"):
        cnf.mean_within_standard_errors(torch.ones(1), 1.0)


def test_on_black_squares_holds_the_data_and_half_of_the_board():
    from course_utils import data

    x = data.sample_toy("checkerboard", 20000, generator=torch.Generator().manual_seed(30))
    assert cnf.on_black_squares(x).all()
    mean, std = data.standardisation("checkerboard")
    board = (4 * torch.rand(20000, 2, generator=torch.Generator().manual_seed(31), dtype=D64) - 2 - mean) / std
    assert abs(cnf.on_black_squares(board).double().mean().item() - 0.5) < 0.02  # the uniform board: half
    assert not cnf.on_black_squares(torch.tensor([[5.0, 5.0]])).any()  # off the board


def test_the_gap_bounds_the_mass_on_the_black_squares(board_test):
    """KL ≥ −log q(black): for the board's uniform density (gap log 2) and a density leaking a fraction to the white
    squares, the mass on the black squares is at least exp(−gap), with equality when q is uniform on each cell."""
    x, entropy = board_test
    data_lp, board_lp = _board_log_prob("data"), _board_log_prob("board")
    for w in (0.5, 0.8, 0.95):  # mixture: w on the black squares (the data's density), 1 − w on the whole board
        mix = lambda p, w=w: torch.logaddexp(math.log(w) + data_lp(p), math.log(1 - w) + board_lp(p))  # noqa: E731
        gap = cnf.likelihood_gap(mix, x, entropy)
        q_black = w + (1 - w) / 2
        assert q_black == pytest.approx(math.exp(-gap), abs=1e-6)  # equality: q is uniform on both cells
        assert cnf.learned_the_squares(gap) == (gap < cnf.CHECKERBOARD_GAP_BOUND)
