"""Neural ODEs: the fixed-step solvers written out, the adjoint's right-hand side, and tools.

    dx/dt = f(t, x),   x(t0) = x0,   f(t, x): (scalar t, (B, *D)) -> (B, *D)

- `euler_step`, `rk4_step`: one step of size h (h < 0 integrates backward in time).
- `integrate(step, f, x0, t_span, steps)`: repeat a step on an equal grid.
- `adjoint_rhs(f, t, x, a)`: da/dt = −aᵀ ∂f/∂x (Chen et al. 2018, eq. 4), per sample.
- `empirical_order(h, err)`: the slope p of log err ≈ p log h + c.
- `convergence_order(solve, n_steps, exact)`: errors of a solver on ever finer grids, and their order.
- `adjoint_gradients(net, x1, a1, t0, t1, steps)`: the adjoint method written out, [x, a, a_θ] integrated
  backward from t1 to t0; `adjoint_gradient_gaps` compares it with backpropagation through the steps.
- `SavedTensorMeter`: bytes of the tensors autograd keeps for the backward pass.

`course_utils.solvers.odeint` (torchdiffeq) is what later notebooks use; these are the
lesson's own versions, tested against it.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch

from .solvers import Solution


def euler_step(f, t, x: torch.Tensor, h) -> torch.Tensor:
    """x + h f(t, x): one explicit Euler step (= one residual block with step h)."""
    return x + h * f(t, x)


def rk4_step(f, t, x: torch.Tensor, h) -> torch.Tensor:
    """One step of the classical fourth-order Runge–Kutta method.

    k1 = f(t, x), k2 = f(t + h/2, x + h k1/2), k3 = f(t + h/2, x + h k2/2), k4 = f(t + h, x + h k3),
    x_next = x + h (k1 + 2 k2 + 2 k3 + k4) / 6.
    (torchdiffeq's "rk4" is Kutta's 3/8 rule, another four-stage method of order 4.)
    """
    k1 = f(t, x)
    k2 = f(t + h / 2, x + h / 2 * k1)
    k3 = f(t + h / 2, x + h / 2 * k2)
    k4 = f(t + h, x + h * k3)
    return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def integrate(step, f, x0: torch.Tensor, t_span=(0.0, 1.0), steps: int = 32) -> Solution:
    """`steps` equal steps of `step(f, t, x, h)` from t_span[0] to t_span[1]; keeps the trajectory.

    Returns an `Solution` whose `nfe` counts the calls of `f`.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    t0, t1 = float(t_span[0]), float(t_span[1])
    h = (t1 - t0) / steps
    t = torch.linspace(t0, t1, steps + 1, dtype=x0.dtype, device=x0.device)
    nfe = 0

    def counted(t, x):
        nonlocal nfe
        nfe += 1
        return f(t, x)

    xs = [x0]
    for n in range(steps):
        xs.append(step(counted, t[n], xs[-1], h))
    return Solution(xs[-1], t, torch.stack(xs), nfe)


def adjoint_rhs(f, t, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """da/dt = −a(t)ᵀ ∂f(t, x)/∂x, one vector–Jacobian product for the whole batch.

    `f` acts on each sample separately, so the gradient of Σ_b a_b · f(t, x)_b with
    respect to x gives every sample's aᵀJ at once. Shapes: x, a: (B, *D) -> (B, *D).
    """
    if a.shape != x.shape:
        raise ValueError(f"The adjoint a must have the shape of x {tuple(x.shape)}, got {tuple(a.shape)}.")
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        f_x = f(t, x)
        if not f_x.requires_grad:  # f does not depend on x: ∂f/∂x = 0
            return torch.zeros_like(a)
        (a_J,) = torch.autograd.grad(f_x, x, grad_outputs=a, allow_unused=True, materialize_grads=True)
    return -a_J


def empirical_order(h, err) -> float:
    """Least-squares slope p of log(err) against log(h): err ≈ C h^p."""
    log_h = torch.log(torch.as_tensor(h, dtype=torch.float64))
    log_e = torch.log(torch.as_tensor(err, dtype=torch.float64))
    if log_h.numel() < 2 or log_h.shape != log_e.shape:
        raise ValueError("empirical_order needs at least two (h, err) pairs of equal length.")
    if not torch.isfinite(log_e).all():
        raise ValueError("Errors must be positive and finite to take their logarithm.")
    dh, de = log_h - log_h.mean(), log_e - log_e.mean()
    return float((dh * de).sum() / (dh * dh).sum())


class Convergence(NamedTuple):
    order: float  # least-squares slope of log err against log h
    h: list[float]  # step sizes
    err: list[float]  # |x_N − x(t1)| for each step size


def convergence_order(solve: Callable[[int], torch.Tensor], n_steps: Sequence[int], exact: torch.Tensor,
                      duration: float = 1.0) -> Convergence:
    """Measure a solver's order: `solve(n)` is its end state after `n` equal steps over `duration`,
    `exact` the true end state; err(h) = |solve(n) − exact| with h = duration / n, and the order is
    the slope of log err against log h (`empirical_order`). A method of order p gives p."""
    h = [duration / n for n in n_steps]
    err = [(solve(n) - exact).norm().item() for n in n_steps]
    return Convergence(empirical_order(h, err), h, err)


def adjoint_gradients(net: torch.nn.Module, x1: torch.Tensor, a1: torch.Tensor, t0: float, t1: float,
                      steps: int, *, rhs=adjoint_rhs, step=rk4_step):
    """[x(t0), ∂L/∂x(t0), ∂L/∂θ] for dx/dt = net(x), by the adjoint method (Chen et al. 2018, alg. 1).

    The augmented state s = [x, a, a_θ], of size 2·x1.numel() + |θ|, obeys
    ds/dt = [f, −aᵀ∂f/∂x, −aᵀ∂f/∂θ] (the middle one is `rhs`); it is integrated with `steps` steps of
    `step` from s(t1) = [x1, a1, 0] back to t0. a1 = ∂L/∂x(t1).
    """
    params = list(net.parameters())
    f = lambda t, x: net(x)  # noqa: E731
    x1, a1, d = x1.detach(), a1.detach(), x1.numel()

    def augmented(t, s):
        x, a = s[:d].view_as(x1), s[d:2 * d].view_as(x1)
        with torch.enable_grad():
            f_x = f(t, x)
            a_J_theta = torch.autograd.grad(f_x, params, grad_outputs=a, allow_unused=True,
                                            materialize_grads=True)  # aᵀ ∂f/∂θ
        return torch.cat([f_x.detach().flatten(), rhs(f, t, x, a).flatten(),
                          -torch.cat([g.flatten() for g in a_J_theta])])

    s1 = torch.cat([x1.flatten(), a1.flatten(), x1.new_zeros(sum(p.numel() for p in params))])
    s0 = integrate(step, augmented, s1, (t1, t0), steps).x
    return s0[:d].view_as(x1), s0[d:2 * d].view_as(x1), s0[2 * d:]


class GradientGaps(NamedTuple):
    dx0: float  # relative gap |adjoint − backprop| / |backprop| in ∂L/∂x(t0)
    dtheta: float  # the same for ∂L/∂θ
    rebuilt: float  # max |x(t0) rebuilt by the backward solve − x(t0)|


def adjoint_gradient_gaps(adjoint_fn, net: torch.nn.Module, x0: torch.Tensor, t0: float, t1: float, steps: int,
                          *, step=rk4_step) -> GradientGaps:
    """Compare an adjoint implementation with backpropagation through `steps` steps of `step`.

    The loss is L = Σ |x(t1)|², so a(t1) = 2 x(t1). `adjoint_fn(net, x1, a1, t0, t1, steps)` must return
    [x(t0), ∂L/∂x(t0), ∂L/∂θ] as `adjoint_gradients` does; a correct one differs from backpropagation
    only by the solver's error, which shrinks like h⁴ for RK4.
    """
    params = list(net.parameters())
    x0 = x0.detach().requires_grad_(True)
    x_end = integrate(step, lambda t, x: net(x), x0, (t0, t1), steps).x
    grads = torch.autograd.grad(x_end.pow(2).sum(), [x0, *params])
    x_rebuilt, dx0, dtheta = adjoint_fn(net, x_end.detach(), 2 * x_end.detach(), t0, t1, steps)
    dtheta_bp = torch.cat([g.flatten() for g in grads[1:]])
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    return GradientGaps(rel(dx0, grads[0]), rel(dtheta, dtheta_bp), (x_rebuilt - x0).abs().max().item())


class SavedTensorMeter:
    """Counts the bytes autograd saves for the backward pass inside a `with` block.

    Each saved tensor's storage is counted once (a weight reused by every step counts
    once, which is exact while the graph it belongs to is alive); `.bytes` is the total, `.count` the number of distinct storages. This is the
    memory that backpropagation through a solver holds until `.backward()` runs.
    """

    def __init__(self):
        self.bytes, self.count, self._seen = 0, 0, set()

    def _pack(self, tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), tensor.device)
        if key not in self._seen:
            self._seen.add(key)
            self.bytes += storage.nbytes()
            self.count += 1
        return tensor

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        return False

    @property
    def megabytes(self) -> float:
        return self.bytes / 2**20


__all__ = [
    "euler_step", "rk4_step", "integrate", "adjoint_rhs", "empirical_order", "Convergence", "convergence_order",
    "adjoint_gradients", "GradientGaps", "adjoint_gradient_gaps", "SavedTensorMeter",
]
