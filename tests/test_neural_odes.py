"""course_utils.neural_odes: hand-written steps against torchdiffeq and closed forms."""

import math

import pytest
import torch

from course_utils import neural_odes as node
from course_utils import solvers

F64 = dict(dtype=torch.float64)
A = torch.tensor([[-0.3, -2.0], [2.0, -0.3]], **F64)


def linear(t, x):
    return (x.flatten(1) @ A.T).reshape(x.shape) if x.flatten(1).shape[1] == 2 else -x


def growing(t, x):
    """dx/dt = (1 + t) A x  =>  x(t) = exp((t + t²/2) A) x0 (A commutes with itself)."""
    return (1 + t) * x @ A.T


def growing_exact(x0, t):
    return x0 @ torch.linalg.matrix_exp((t + t * t / 2) * A).T


@pytest.mark.parametrize("shape", [(5, 2), (3, 1, 4, 4)])
def test_euler_is_torchdiffeq_euler(shape):
    x0 = torch.randn(*shape, **F64)
    mine = node.integrate(node.euler_step, linear, x0, (0.0, 1.0), steps=16)
    ref = solvers.odeint(linear, x0, method="euler", steps=16, return_trajectory=True)
    torch.testing.assert_close(mine.trajectory, ref.trajectory)
    assert mine.nfe == ref.nfe == 16


def test_rk4_agrees_with_torchdiffeq_38_rule_to_fourth_order():
    x0 = torch.randn(5, 2, **F64)
    gaps = []
    for steps in (16, 32):
        mine = node.integrate(node.rk4_step, growing, x0, (0.0, 1.0), steps=steps)
        ref = solvers.odeint(growing, x0, method="rk4", steps=steps)
        assert mine.nfe == ref.nfe == 4 * steps
        gaps.append((mine.x - ref.x).abs().max().item())
    # two different order-4 methods: their gap also shrinks like h^4, and is not zero
    assert 0 < gaps[1] < 1e-5 and abs(math.log2(gaps[0] / gaps[1]) - 4) < 0.5, gaps


def test_rk4_is_exact_for_cubic_in_time():
    # dx/dt = t^3 - 2t: RK4 reduces to Simpson's rule, exact for cubics, even in one step.
    f = lambda t, x: (t ** 3 - 2 * t) * torch.ones_like(x)
    x0 = torch.zeros(2, 3, **F64)
    x1 = node.rk4_step(f, torch.tensor(0.5, **F64), x0, 1.5)
    torch.testing.assert_close(x1, torch.full_like(x0, (2 ** 4 - 0.5 ** 4) / 4 - (4 - 0.25)))


@pytest.mark.parametrize("step,order", [(node.euler_step, 1), (node.rk4_step, 4)])
def test_measured_order(step, order):
    x0 = torch.tensor([[1.0, 0.5]], **F64)
    h, err = [], []
    for steps in (8, 16, 32, 64):
        sol = node.integrate(step, growing, x0, (0.0, 1.0), steps)
        h.append(1 / steps)
        err.append((sol.x - growing_exact(x0, 1.0)).norm().item())
    assert abs(node.empirical_order(h, err) - order) < 0.3


def test_backward_steps_invert_forward():
    x0 = torch.randn(4, 2, **F64)
    x1 = node.integrate(node.rk4_step, growing, x0, (0.0, 1.0), 200).x
    torch.testing.assert_close(node.integrate(node.rk4_step, growing, x1, (1.0, 0.0), 200).x, x0)


def test_adjoint_rhs_linear_and_mlp():
    a = torch.randn(6, 2, **F64)
    x = torch.randn(6, 2, **F64)
    # f = A x  =>  da/dt = -Aᵀ a, i.e. the row vector -aᵀA
    torch.testing.assert_close(node.adjoint_rhs(linear, 0.0, x, a), -(a @ A))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    f = lambda t, x: net(x) * (1 + t)
    J = torch.func.vmap(torch.func.jacrev(lambda xi: f(0.7, xi[None])[0]))(x)  # (B, 2, 2)
    torch.testing.assert_close(node.adjoint_rhs(f, 0.7, x, a), -torch.einsum("bi,bij->bj", a, J))


def test_adjoint_rhs_constant_field_and_errors():
    x, a = torch.randn(3, 2), torch.randn(3, 2)
    assert torch.equal(node.adjoint_rhs(lambda t, x: torch.ones(3, 2), 0.0, x, a), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="shape of x"):
        node.adjoint_rhs(linear, 0.0, x, a[:, :1])


def test_adjoint_rhs_keeps_no_graph():
    x = torch.randn(3, 2, requires_grad=True)
    out = node.adjoint_rhs(lambda t, x: x ** 2, 0.0, x, torch.ones(3, 2))
    assert not out.requires_grad
    torch.testing.assert_close(out, -2 * x.detach())


def test_empirical_order_recovers_a_power_law():
    h = [0.1, 0.05, 0.025]
    assert node.empirical_order(h, [3 * v ** 2.5 for v in h]) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="two"):
        node.empirical_order([0.1], [0.2])
    with pytest.raises(ValueError, match="positive"):
        node.empirical_order([0.1, 0.2], [0.0, 1.0])


def test_integrate_rejects_zero_steps():
    with pytest.raises(ValueError, match="at least 1"):
        node.integrate(node.euler_step, linear, torch.zeros(2, 2), steps=0)


def test_saved_tensor_meter_counts_storages_once():
    x = torch.randn(100, 10, requires_grad=True)
    w = torch.randn(100, 10, requires_grad=True)
    with node.SavedTensorMeter() as meter:
        y = x * w  # saves x and w
        z = y * w  # saves y and w again (counted once)
    assert (meter.count, meter.bytes) == (3, 3 * 1000 * 4)
    with torch.no_grad(), node.SavedTensorMeter() as meter:
        x * w
    assert meter.bytes == 0
    z.sum().backward()  # the hooks left the graph usable
    torch.testing.assert_close(x.grad, (w * w).detach())


# ---------------------------------------------------------------- the notebook's headline checks


def _four_stage(weights=(1 / 6, 1 / 3, 1 / 3, 1 / 6), times=(0.5, 0.5, 1.0)):
    def step(f, t, x, h):
        k1 = f(t, x)
        k2 = f(t + times[0] * h, x + h / 2 * k1)
        k3 = f(t + times[1] * h, x + h / 2 * k2)
        k4 = f(t + times[2] * h, x + h * k3)
        return x + h * (weights[0] * k1 + weights[1] * k2 + weights[2] * k3 + weights[3] * k4)

    return step


def _order(step):
    """The notebook's measurement: the spiral dx/dt = (1 + t) A x from t = 0 to 1, 8 to 256 steps."""
    x0 = torch.tensor([[1.5, 0.0], [0.0, -1.0]], **F64)
    solve = lambda n: node.integrate(step, growing, x0, (0.0, 1.0), n).x  # noqa: E731
    return node.convergence_order(solve, [8, 16, 32, 64, 128, 256], growing_exact(x0, 1.0))


def test_convergence_order_measures_euler_and_rk4():
    for step, order in [(node.euler_step, 1), (node.rk4_step, 4), (_four_stage(), 4)]:
        conv = _order(step)
        assert abs(conv.order - order) < 0.3, conv.order  # the notebook's assert
        assert conv.h == [1 / n for n in (8, 16, 32, 64, 128, 256)] and len(conv.err) == 6
    # two ways to the same slope: the measured errors against C h^p fitted at the two ends
    conv = _order(node.rk4_step)
    assert abs(math.log(conv.err[0] / conv.err[-1]) / math.log(conv.h[0] / conv.h[-1]) - 4) < 0.3


@pytest.mark.parametrize("wrong, order", [
    (_four_stage(weights=(1 / 4, 1 / 4, 1 / 4, 1 / 4)), 2),  # equal weights: order 2 (Σ b c² ≠ 1/3)
    (_four_stage(weights=(1 / 6, 1 / 6, 1 / 2, 1 / 6)), 2),  # k2, k3 weighted 1/6, 1/2: Σ b a c ≠ 1/6
    (_four_stage(times=(0.0, 0.0, 0.0)), 1),  # every slope at time t: order 1 on a time-dependent field
])
def test_convergence_order_catches_a_wrong_rk4_step(wrong, order):
    """Negative control: a step with one wrong coefficient still converges, at the wrong order, and the
    notebook's check |order − 4| < 0.3 fails on it."""
    measured = _order(wrong).order
    assert abs(measured - 4) > 0.3 and abs(measured - order) < 0.5, measured


def _small_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()


def test_adjoint_gradients_agree_with_backprop_to_solver_accuracy():
    net, x0 = _small_net(), torch.randn(8, 2, generator=torch.Generator().manual_seed(0), **F64)
    gaps = {n: node.adjoint_gradient_gaps(node.adjoint_gradients, net, x0, 0.0, 2.0, n) for n in (5, 10)}
    assert max(gaps[5]) < 1e-2  # the notebook's bound
    assert gaps[5].dx0 / gaps[10].dx0 > 8 and gaps[5].dtheta / gaps[10].dtheta > 8  # a solver error, O(h⁴)
    # the library's adjoint against torchdiffeq's odeint_adjoint on the same problem (another implementation)
    params = list(net.parameters())
    x = x0.clone().requires_grad_(True)
    x_end = solvers.odeint(lambda t, z: net(z), x, (0.0, 2.0), method="dopri5", rtol=1e-10, atol=1e-10,
                           adjoint=True, adjoint_params=params).x
    want = torch.autograd.grad(x_end.pow(2).sum(), [x, *params])
    x1 = node.integrate(node.rk4_step, lambda t, z: net(z), x0, (0.0, 2.0), 200).x
    rebuilt, dx0, dtheta = node.adjoint_gradients(net, x1, 2 * x1, 0.0, 2.0, 200)
    torch.testing.assert_close(rebuilt, x0, atol=1e-8, rtol=0)
    torch.testing.assert_close(dx0, want[0], atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(dtheta, torch.cat([g.flatten() for g in want[1:]]), atol=1e-7, rtol=1e-6)
    assert len(dtheta) == sum(p.numel() for p in params)  # the augmented state: 2D + |θ|


@pytest.mark.parametrize("wrong", ["sign", "no sign on θ"])
def test_adjoint_gap_check_fails_for_a_wrong_adjoint(wrong):
    """Negative control: the notebook's comparison (gaps < 1e-2) fails for an adjoint with the wrong sign."""
    net, x0 = _small_net(1), torch.randn(8, 2, generator=torch.Generator().manual_seed(1), **F64)
    if wrong == "sign":
        adjoint = lambda *a: node.adjoint_gradients(  # noqa: E731
            *a, rhs=lambda f, t, x, adj: -node.adjoint_rhs(f, t, x, adj))
        gaps = node.adjoint_gradient_gaps(adjoint, net, x0, 0.0, 2.0, 20)
        assert gaps.dx0 > 0.1 and gaps.dtheta > 0.05, gaps
    else:  # a_θ accumulated with the wrong sign: ∂L/∂θ comes out negated
        def adjoint(*a):
            x, dx, dtheta = node.adjoint_gradients(*a)
            return x, dx, -dtheta

        gaps = node.adjoint_gradient_gaps(adjoint, net, x0, 0.0, 2.0, 20)
        assert gaps.dx0 < 1e-2 and abs(gaps.dtheta - 2) < 1e-2, gaps
    assert max(gaps) > 1e-2


def test_one_dimensional_ode_maps_are_increasing_and_augmentation_reverses():
    """A 1D ODE's time-1 map keeps the order of points (paths cannot cross); the check of the notebook
    (`diff > 0` on a grid) holds for any 1D field and fails for the augmented half turn, which maps x to −x."""
    x = torch.linspace(-3, 3, 61, **F64)[:, None]
    for seed in range(3):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(3)  # a strong field
            psi = node.integrate(node.rk4_step, lambda t, z: net(z) * (1 + t), x, (0.0, 1.0), 50).x[:, 0]
        assert (psi.diff() > 0).all()
        assert ((psi + x[:, 0]) ** 2).mean() >= (x ** 2).mean()  # no increasing map beats mapping to 0
    half_turn = torch.tensor([[0.0, -math.pi], [math.pi, 0.0]], **F64)
    lifted = torch.cat([x, torch.zeros_like(x)], 1)
    turned = node.integrate(node.rk4_step, lambda t, z: z @ half_turn.T, lifted, (0.0, 1.0), 20).x[:, 0]
    torch.testing.assert_close(turned, -x[:, 0], atol=1e-4, rtol=0)
    assert not (turned.diff() > 0).all()  # the negative control: the monotonicity check fails
