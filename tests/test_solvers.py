"""course_utils.solvers against closed forms: linear ODEs, Ornstein–Uhlenbeck, NFE, adjoint."""

import math

import pytest
import torch

from course_utils import solvers
from course_utils.models import TimeMLP

torch.set_default_dtype(torch.float32)
F64 = dict(dtype=torch.float64)

# A damped rotation: dx/dt = A x spirals into 0.
A2 = torch.tensor([[-0.3, -2.0], [2.0, -0.3]], **F64)


def linear_field(A):
    """f(t, x) = A x applied to the flattened sample: works for any (B, *D) with prod(D) = len(A)."""
    return lambda t, x: (x.flatten(1) @ A.T).reshape(x.shape)


def exact(A, x0, t):
    """x(t) = exp(tA) x0 for every sample of x0: (B, *D)."""
    return (x0.flatten(1) @ torch.linalg.matrix_exp(t * A).T).reshape(x0.shape)


@pytest.fixture(params=["flat", "image"])
def problem(request):
    """The same kind of linear ODE on (B, 2) and on (B, 1, 3, 3) states."""
    g = torch.Generator().manual_seed(0)
    if request.param == "flat":
        A, x0 = A2, torch.randn(5, 2, generator=g, **F64)
    else:
        M = torch.randn(9, 9, generator=g, **F64)
        A, x0 = 0.5 * (M - M.T) - 0.5 * torch.eye(9, **F64), torch.randn(4, 1, 3, 3, generator=g, **F64)
    return A, x0


@pytest.mark.parametrize("method,order,bound", [("euler", 1, 0.2), ("midpoint", 2, 1e-2), ("rk4", 4, 1e-6)])
def test_fixed_grid_methods_converge_at_their_order(problem, method, order, bound):
    A, x0 = problem
    want = exact(A, x0, 1.0)
    err = [(solvers.odeint(linear_field(A), x0, method=method, steps=n).x - want).abs().max().item()
           for n in (32, 64)]
    assert err[1] < bound, err
    # halving the step divides the error by 2^order (within a quarter of an order)
    assert abs(math.log2(err[0] / err[1]) - order) < 0.25, err


def test_dopri5_meets_its_tolerance(problem):
    A, x0 = problem
    sol = solvers.odeint(linear_field(A), x0, method="dopri5", rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(sol.x, exact(A, x0, 1.0), rtol=1e-7, atol=1e-7)


def test_trajectory_on_the_grid_and_on_t_eval(problem):
    A, x0 = problem
    sol = solvers.odeint(linear_field(A), x0, (0.0, 2.0), method="rk4", steps=200, return_trajectory=True)
    assert sol.trajectory.shape == (201, *x0.shape) and sol.t.shape == (201,)
    for k in (0, 50, 200):
        torch.testing.assert_close(sol.trajectory[k], exact(A, x0, sol.t[k].item()), rtol=1e-6, atol=1e-7)
    t_eval = torch.tensor([0.0, 0.3, 1.1, 2.0], **F64)
    sol = solvers.odeint(linear_field(A), x0, method="dopri5", t_eval=t_eval, rtol=1e-9, atol=1e-9,
                         return_trajectory=True)
    for k, t in enumerate(t_eval.tolist()):
        torch.testing.assert_close(sol.trajectory[k], exact(A, x0, t), rtol=1e-7, atol=1e-7)
    assert solvers.odeint(linear_field(A), x0, method="rk4", steps=3).trajectory is None


def test_backward_in_time_inverts_forward(problem):
    A, x0 = problem
    f = linear_field(A)
    x1 = solvers.odeint(f, x0, (0.0, 1.0), method="rk4", steps=100).x
    back = solvers.odeint(f, x1, (1.0, 0.0), method="rk4", steps=100)
    torch.testing.assert_close(back.x, x0, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(solvers.odeint(f, x0, (0.0, -1.0), method="dopri5", rtol=1e-9, atol=1e-9).x,
                               exact(A, x0, -1.0), rtol=1e-7, atol=1e-7)


def test_time_dependent_field_gets_the_right_times():
    # dx/dt = cos(t) x  =>  x(t) = x0 exp(sin t - sin t0): wrong stage times break it.
    x0 = torch.tensor([[1.0], [-2.0]], **F64)
    f = lambda t, x: torch.cos(t) * x
    for method, steps in (("midpoint", 200), ("rk4", 20), ("dopri5", None)):
        sol = solvers.odeint(f, x0, (0.5, 2.5), method=method, steps=steps or 1, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(sol.x, x0 * math.exp(math.sin(2.5) - math.sin(0.5)), rtol=1e-5, atol=0)


@pytest.mark.parametrize("method,stages", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_nfe_of_fixed_grid_methods_is_steps_times_stages(method, stages):
    calls = []
    f = lambda t, x: calls.append(1) or -x
    sol = solvers.odeint(f, torch.ones(3, 2), method=method, steps=7)
    assert sol.nfe == 7 * stages == len(calls)


def test_adaptive_nfe_grows_as_tolerance_shrinks():
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(1), **F64)
    nfe = [solvers.odeint(linear_field(A2), x0, (0, 2), method="dopri5", rtol=tol, atol=tol).nfe
           for tol in (1e-3, 1e-6, 1e-9)]
    assert nfe[0] < nfe[1] < nfe[2], nfe
    assert nfe[0] % 6 == 2  # dopri5 (FSAL): 6 new stages per step + 2 to pick the first step


def test_model_field_feeds_batch_time():
    torch.manual_seed(0)
    model = TimeMLP(dim=2, hidden=16, depth=2)
    x = torch.randn(4, 2)
    f = solvers.model_field(model)
    torch.testing.assert_close(f(torch.tensor(0.3), x), model(x, torch.full((4,), 0.3)))
    sol = solvers.odeint(f, x, method="euler", steps=1)
    torch.testing.assert_close(sol.x, x + model(x, torch.zeros(4)))


class _Field(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))

    def forward(self, t, x):
        return self.net(torch.cat([x, t.expand(x.shape[0], 1)], 1))


def _gradients(f, params, x0, **kw):
    x0 = x0.clone().requires_grad_(True)
    sol = solvers.odeint(f, x0, (0.0, 1.5), **kw)
    loss = (sol.x ** 2).sum() + sol.x[:, 0].sin().sum()
    grads = torch.autograd.grad(loss, [x0, *params])
    return grads


@pytest.mark.parametrize("as_module", [True, False])
def test_adjoint_gradients_equal_backprop(as_module):
    torch.manual_seed(0)
    field = _Field().double()
    params = list(field.parameters())
    x0 = torch.randn(6, 2, **F64)
    f = field if as_module else (lambda t, x: field(t, x))
    kw = dict(method="dopri5", rtol=1e-10, atol=1e-10)
    backprop = _gradients(f, params, x0, **kw)
    adjoint = _gradients(f, params, x0, adjoint=True, adjoint_params=None if as_module else params, **kw)
    for g_bp, g_adj in zip(backprop, adjoint):
        torch.testing.assert_close(g_adj, g_bp, rtol=1e-6, atol=1e-8)
    assert backprop[1].abs().sum() > 0


def test_adjoint_on_a_fixed_grid_is_close_to_backprop():
    # Optimise-then-discretise (adjoint) and discretise-then-optimise (backprop) differ by O(h^4) with rk4.
    torch.manual_seed(0)
    field = _Field().double()
    x0 = torch.randn(6, 2, **F64)
    params = list(field.parameters())
    backprop = _gradients(field, params, x0, method="rk4", steps=40)
    adjoint = _gradients(field, params, x0, method="rk4", steps=40, adjoint=True)
    for g_bp, g_adj in zip(backprop, adjoint):
        torch.testing.assert_close(g_adj, g_bp, rtol=1e-5, atol=1e-7)


def test_adjoint_of_linear_ode_matches_closed_form():
    # L = <c, x(1)>, x(1) = e^A x0  =>  dL/dx0 = e^{A^T} c.
    x0 = torch.randn(3, 2, **F64).requires_grad_(True)
    c = torch.randn(3, 2, **F64)
    sol = solvers.odeint(linear_field(A2), x0, method="dopri5", rtol=1e-10, atol=1e-10,
                         adjoint=True, adjoint_params=())
    (grad,) = torch.autograd.grad((c * sol.x).sum(), x0)
    torch.testing.assert_close(grad, c @ torch.linalg.matrix_exp(A2), rtol=1e-7, atol=1e-8)


# ---------------------------------------------------------------- Euler–Maruyama

THETA, SIGMA, X0 = 1.5, 0.8, 2.0


def _ou_discrete_moments(steps, t=1.0):
    """Mean and variance of x_{n+1} = (1 − θh) x_n + σ√h z_n after `steps` steps (exact for EM)."""
    h = t / steps
    r = 1 - THETA * h
    return X0 * r ** steps, SIGMA ** 2 * h * sum(r ** (2 * k) for k in range(steps))


def _ou_moments(t=1.0):
    return X0 * math.exp(-THETA * t), SIGMA ** 2 / (2 * THETA) * (1 - math.exp(-2 * THETA * t))


@pytest.mark.parametrize("shape", [(20000, 1), (2500, 2, 2, 2)])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_euler_maruyama_ou_moments(shape, direction):
    # Forward: dx = −θx dt + σ dW on [0, 1]. Backward: drift +θx run from t=1 to t=0 is the same
    # recursion (Δt < 0, noise scale √|Δt|), so both must give the OU moments.
    sign, t_span = (1.0, (0.0, 1.0)) if direction == "forward" else (-1.0, (1.0, 0.0))
    x0 = torch.full(shape, X0, **F64)
    sol = solvers.euler_maruyama(lambda x, t: -sign * THETA * x, lambda t: SIGMA, x0, t_span,
                                 steps=100, generator=torch.Generator().manual_seed(0))
    mean, var = sol.x.mean().item(), sol.x.var().item()
    n = sol.x.numel()
    d_mean, d_var = _ou_discrete_moments(100)
    assert abs(mean - d_mean) < 5 * math.sqrt(d_var / n)
    assert abs(var - d_var) < 5 * d_var * math.sqrt(2 / n)
    c_mean, c_var = _ou_moments()
    assert abs(mean - c_mean) < 0.02 and abs(var - c_var) / c_var < 0.05  # the SDE's own moments


def test_euler_maruyama_sees_time_and_skips_last_noise():
    seen = []
    drift = lambda x, t: seen.append(t[0].item()) or torch.zeros_like(x)
    x0 = torch.zeros(40000, 1, **F64)
    g = torch.Generator().manual_seed(1)
    # diffusion g(t) = t, running backward from 1 to 0: var = Σ t_n² |h| over the noisy steps
    sol = solvers.euler_maruyama(drift, lambda t: t, x0, (1.0, 0.0), steps=10, generator=g,
                                 noise_last_step=False, return_trajectory=True)
    times = [1.0 - n / 10 for n in range(10)]
    assert seen == pytest.approx(times)
    want = sum(t * t * 0.1 for t in times[:-1])
    assert abs(sol.x.var().item() - want) < 5 * want * math.sqrt(2 / 40000)
    assert sol.trajectory.shape == (11, 40000, 1)
    torch.testing.assert_close(sol.trajectory[-1], sol.trajectory[-2])  # no noise in the last step


def test_euler_maruyama_generator_makes_it_reproducible():
    run = lambda: solvers.euler_maruyama(lambda x, t: -x, lambda t: 1.0, torch.zeros(5, 2), steps=5,
                                         generator=torch.Generator().manual_seed(3)).x
    torch.testing.assert_close(run(), run())


# ---------------------------------------------------------------- clear errors


def test_clear_errors():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="Unknown ODE method"):
        solvers.odeint(lambda t, x: x, x, method="rk45")
    with pytest.raises(ValueError, match=r"\(B, \*D\)"):
        solvers.odeint(lambda t, x: x, torch.zeros(4))
    with pytest.raises(ValueError, match="steps must be"):
        solvers.odeint(lambda t, x: x, x, steps=0)
    with pytest.raises(ValueError, match="shaped like x"):
        solvers.odeint(lambda t, x: x.sum(1), x, method="euler")
    with pytest.raises(ValueError, match="shaped like x"):
        solvers.euler_maruyama(lambda x, t: x[:, :1], lambda t: 1.0, x)
    with pytest.raises(ValueError, match=r"\(B, \*D\)"):
        solvers.euler_maruyama(lambda x, t: x, lambda t: 1.0, torch.zeros(4))
    with pytest.raises(ValueError, match="steps must be"):
        solvers.euler_maruyama(lambda x, t: x, lambda t: 1.0, x, steps=0)
    with pytest.raises(ValueError, match="t_eval runs from 0.0 to 2.0 but t_span is"):
        solvers.odeint(lambda t, x: x, x, (0.0, 1.0), t_eval=torch.tensor([0.0, 2.0]))
    with pytest.raises(ValueError, match="strictly increasing or strictly decreasing"):
        solvers.odeint(lambda t, x: x, x, t_eval=torch.tensor([0.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match="1-D tensor of at least two times"):
        solvers.odeint(lambda t, x: x, x, t_eval=torch.tensor([1.0]))


def test_t_eval_sets_the_span_for_fixed_grid_methods(problem):
    """Without t_span, a fixed-grid solve runs over t_eval's range with `steps` equal steps."""
    A, x0 = problem
    t_eval = torch.tensor([2.0, 1.5, 0.0], **F64)  # backward in time
    x2 = exact(A, x0, 2.0)
    sol = solvers.odeint(linear_field(A), x2, method="rk4", steps=100, t_eval=t_eval, return_trajectory=True)
    assert sol.nfe == 4 * 100
    torch.testing.assert_close(sol.trajectory[1], exact(A, x0, 1.5), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sol.x, x0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_end_points_only_same_result_and_nfe(method):
    x0 = torch.randn(4, 2, **F64)
    full = solvers.odeint(linear_field(A2), x0, (1.0, -0.5), method=method, steps=7, return_trajectory=True)
    ends = solvers.odeint(linear_field(A2), x0, (1.0, -0.5), method=method, steps=7)
    torch.testing.assert_close(ends.x, full.x, rtol=0, atol=1e-15)
    assert ends.nfe == full.nfe == 7 * {"euler": 1, "midpoint": 2, "rk4": 4}[method]


def test_adjoint_memory_does_not_grow_with_steps():
    from course_utils.neural_odes import SavedTensorMeter

    torch.manual_seed(0)
    field = _Field()
    x0 = torch.randn(64, 2)

    def saved(steps, adjoint):
        with SavedTensorMeter() as meter:
            solvers.odeint(field, x0, method="rk4", steps=steps, adjoint=adjoint)
        return meter.bytes

    assert saved(4, True) == saved(32, True) < saved(4, False) < saved(32, False) / 6


# --- the one sampler and its time grids ------------------------------------------------------------


@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2), ("midpoint", 2), ("rk4", 4)])
def test_sample_converges_at_the_order_of_its_step_on_any_grid(problem, method, order):
    """model(x, t) = A x for t in [0, 1]: the error shrinks like h^order on uniform and on shifted grids."""
    A, x0 = problem
    model = lambda x, t: linear_field(A)(t, x)  # noqa: E731
    for grid_fn in (solvers.uniform_grid, lambda n: solvers.shifted_grid(n, 3.0)):
        errs = [(solvers.sample(model, x0, grid_fn(n), method=method).x - exact(A, x0, 1.0)).abs().max().item()
                for n in (16, 32)]
        assert 2 ** (order - 0.5) < errs[0] / errs[1] < 2 ** (order + 0.7), (method, errs)


def test_sample_runs_backwards_returns_its_grid_trajectory_and_counts_nfe(problem):
    A, x0 = problem
    model = lambda x, t: linear_field(A)(t, x)  # noqa: E731
    grid = solvers.uniform_grid(20, 1.0, 0.0)  # from t = 1 down to 0
    sol = solvers.sample(model, exact(A, x0, 1.0), grid, method="rk4", return_trajectory=True)
    torch.testing.assert_close(sol.x, x0, atol=1e-4, rtol=0)
    assert sol.nfe == 80 and sol.trajectory.shape == (21, *x0.shape) and sol.t.dtype == x0.dtype
    torch.testing.assert_close(sol.trajectory[10], exact(A, x0, 0.5), atol=1e-4, rtol=0)
    assert solvers.sample(model, x0, grid, method="heun").nfe == 40


def test_sample_feeds_batch_time_and_conditioning():
    seen = []

    def model(x, t, y=None):
        seen.append((t.clone(), y))
        return torch.zeros_like(x)

    solvers.sample(model, torch.zeros(3, 2), torch.tensor([0.0, 0.25, 1.0]), y="label")
    assert [s[0].tolist() for s in seen] == [[0.0] * 3, [0.25] * 3] and seen[0][1] == "label"


def test_grids_run_from_noise_to_data_and_warp_where_they_should():
    u = solvers.uniform_grid(4)
    torch.testing.assert_close(u, torch.tensor([0, 0.25, 0.5, 0.75, 1], dtype=torch.float64))
    torch.testing.assert_close(solvers.uniform_grid(4, 1.0, 0.0), 1 - u)
    torch.testing.assert_close(solvers.shifted_grid(4, 1.0), u)  # shift 1 is no shift
    sh = solvers.shifted_grid(8, 3.0)
    assert sh[0] == 0 and sh[-1] == 1 and (sh.diff() > 0).all()
    assert sh[1] < u[1] / 2 + 1e-9  # more steps near the noise end: the first step is shorter
    # SD3's formula in its own time (noise at 1): n' = s n / (1 + (s − 1) n)
    n = 1 - torch.linspace(0, 1, 9, dtype=torch.float64)
    torch.testing.assert_close(1 - sh, 3 * n / (1 + 2 * n))
    # logit grid: each interval holds 1/steps of the logit-normal's mass
    lg = solvers.logit_grid(5, m=0.3, s=1.2)
    z = 0.3 + 1.2 * torch.randn(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mass = torch.histogram(torch.sigmoid(z), lg).hist / z.numel()
    torch.testing.assert_close(mass, torch.full((5,), 0.2, dtype=torch.float64), atol=0.005, rtol=0)


def test_edm_grid_hits_karras_noise_levels_on_any_schedule():
    from course_utils.schedules import LinearSchedule, VESchedule, VPSchedule

    sig = (80 ** (1 / 7) + torch.arange(6, dtype=torch.float64) / 5 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    for sched, end in ((LinearSchedule(), 1.0), (VPSchedule(), 0.0), (VESchedule(0.001, 100.0), 0.0)):
        g = solvers.edm_grid(6, sched, 0.002, 80.0)
        out = sched(g[:-1])
        torch.testing.assert_close(out.sigma_t / out.alpha_t, sig, rtol=1e-6, atol=0)
        assert g[-1] == end
    torch.testing.assert_close(solvers.edm_grid(6, LinearSchedule(), 0.002, 80.0)[:-1], 1 / (1 + sig))


def test_sample_errors_are_clear():
    with pytest.raises(ValueError, match="strictly increasing or strictly decreasing"):
        solvers.sample(lambda x, t: x, torch.zeros(2, 2), torch.tensor([0.0, 0.5, 0.5, 1.0]))
    with pytest.raises(ValueError, match="Unknown method"):
        solvers.sample(lambda x, t: x, torch.zeros(2, 2), solvers.uniform_grid(2), method="rk45")
    with pytest.raises(ValueError, match="shaped like x"):
        solvers.sample(lambda x, t: x[:, :1], torch.zeros(2, 2), solvers.uniform_grid(2))
    with pytest.raises(ValueError, match="positive integer"):
        solvers.uniform_grid(0)
