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
