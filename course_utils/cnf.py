"""Continuous normalizing flows (FFJORD): exact likelihood of an ODE-defined map.

A network `model(x, t)` (t of shape (B,)) is a vector field f; the flow dx/dt = f(x, t)
carries the base N(0, I) at t = 0 to the data at t = 1 (docs/conventions.md). Along a path the
log-density changes by the instantaneous change of variables (Chen et al. 2018, Thm. 1)

    d log p_t(x_t) / dt = −tr(∂f/∂x)(x_t, t) = −div f(x_t, t),

so one ODE for the augmented state [x, ℓ] with dℓ/dt = −div f gives both the end point
and ℓ(t1) = log p_{t1}(x_{t1}) − log p_{t0}(x_{t0}).

- `divergence_exact(f_x, x)`: tr(∂f/∂x) by D backward passes.
- `divergence_hutchinson(f_x, x, eps)`: the unbiased estimate epsᵀ (∂f/∂x) eps, one
  backward pass (Grathwohl et al. 2019, eq. 7); `probe(x, kind)` draws eps;
  `mean_within_standard_errors(estimates, value)` tests a sample mean against a known value.
- `integrate(model, x, t_span)`: the augmented ODE, returns `CNFSolution(x, delta_log_p, nfe)`.
- `log_prob(model, x)`: data flowed back to the base, log p_1(x) = log p_0(x_0) − ℓ(0), with
  the base `normalizing_flows.standard_normal_log_prob` (notebook 01).
- `sample(model, x0)`: base points flowed forward to t = 1 (`solvers.sample`, fixed steps).
- `likelihood_gap(log_prob_fn, x_test, entropy)`: test NLL minus the data's entropy, the floor of
  any NLL; on the checkerboard `UNIFORM_BOARD_GAP` = log 2 is the gap of a density spread evenly
  over the whole board, and `learned_the_squares(gap)` asks for a gap below
  `CHECKERBOARD_GAP_BOUND`, well under it; `on_black_squares(x)` marks the points where the
  board's density lives (a model with gap g puts at least exp(−g) of its mass there).
- `log_density_path(model, x, times)`: log p_t(x) at several times t (the density's morph).

Notation: x = x_t (B, *D), f_x = f(x_t, t), eps = probe vector, ℓ = delta_log_p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from . import solvers
from .normalizing_flows import standard_normal_log_prob
from .tensors import batch_time

TRACES = ("exact", "hutchinson")
UNIFORM_BOARD_GAP = math.log(2)  # a density uniform on the whole 4×4 board: twice the black squares' area
CHECKERBOARD_GAP_BOUND = 0.45  # below log 2 by a margin: the model must put less mass on the white squares
PROBES = ("rademacher", "gaussian")


def _check_graph(f_x: torch.Tensor, x: torch.Tensor) -> None:
    if f_x.shape != x.shape:
        raise ValueError(f"f(x) must have the shape of x, got {tuple(f_x.shape)} and {tuple(x.shape)}.")
    if not (x.requires_grad and f_x.requires_grad):
        raise ValueError(
            "The divergence needs autograd: call x.requires_grad_(True) before computing f_x = f(x)."
        )


def divergence_exact(f_x: torch.Tensor, x: torch.Tensor, *, create_graph: bool = True) -> torch.Tensor:
    """div f = Σ_i ∂f_i/∂x_i, one backward pass per dimension: (B, *D) -> (B,).

    Each pass takes the gradient of Σ_b f_i(x_b) w.r.t. x, whose row b is ∂f_i/∂x (x_b)
    because samples do not interact; we keep its i-th entry.
    """
    _check_graph(f_x, x)
    f_flat = f_x.flatten(1)
    div = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    for i in range(f_flat.shape[1]):
        (grad_i,) = torch.autograd.grad(f_flat[:, i].sum(), x, create_graph=create_graph, retain_graph=True)
        div = div + grad_i.flatten(1)[:, i]
    return div


def divergence_hutchinson(f_x: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, *,
                          create_graph: bool = True) -> torch.Tensor:
    """Hutchinson's estimate epsᵀ (∂f/∂x) eps of div f, unbiased when E[eps epsᵀ] = I: (B,).

    epsᵀ ∂f/∂x is one vector–Jacobian product (one backward pass), whatever D is.
    """
    _check_graph(f_x, x)
    if eps.shape != x.shape:
        raise ValueError(f"The probe eps must have the shape of x {tuple(x.shape)}, got {tuple(eps.shape)}.")
    (eps_J,) = torch.autograd.grad(f_x, x, eps, create_graph=create_graph, retain_graph=True)
    return (eps_J * eps).flatten(1).sum(1)


def probe(x: torch.Tensor, kind: str = "rademacher", generator: torch.Generator | None = None) -> torch.Tensor:
    """A probe shaped like x with E[eps epsᵀ] = I: Rademacher (±1) or standard Gaussian."""
    if kind not in PROBES:
        raise ValueError(f"Unknown probe {kind!r}: use one of {', '.join(PROBES)}.")
    eps = solvers.randn_like(x, generator)
    return eps.sign() if kind == "rademacher" else eps


def mean_within_standard_errors(estimates: torch.Tensor, value: float, n_se: float = 4.0) -> bool:
    """Whether the mean of i.i.d. `estimates` (n,) lies within `n_se` standard errors std/√n of `value`.

    The test of unbiasedness used for Hutchinson's estimator: a biased probe (E[eps epsᵀ] ≠ I) moves
    the mean by a fixed amount while the standard error shrinks like 1/√n, so it fails for large n.
    Estimates without spread (std = 0) fail too: there is nothing random to test.
    """
    est = torch.as_tensor(estimates, dtype=torch.float64).flatten()
    if est.numel() < 2:
        raise ValueError(f"need at least two estimates, got {est.numel()}.")
    se = est.std().item() / math.sqrt(est.numel())
    return bool(abs(est.mean().item() - float(value)) < n_se * se)


def hutchinson_variance(A: torch.Tensor, kind: str = "rademacher") -> torch.Tensor:
    """Closed-form variance of epsᵀ A eps for one probe; A: (D, D) or batched (B, D, D).

    With S = (A + Aᵀ)/2 (only the symmetric part enters epsᵀ A eps):
    Gaussian 2‖S‖_F², Rademacher 2(‖S‖_F² − Σ_i A_ii²) (Hutchinson 1990; Avron & Toledo 2011).
    """
    if kind not in PROBES:
        raise ValueError(f"Unknown probe {kind!r}: use one of {', '.join(PROBES)}.")
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"A must be a square matrix (…, D, D), got {tuple(A.shape)}.")
    S = 0.5 * (A + A.transpose(-1, -2))
    frob2 = S.pow(2).sum((-1, -2))
    diag2 = torch.diagonal(A, dim1=-2, dim2=-1).pow(2).sum(-1)
    return 2 * frob2 if kind == "gaussian" else 2 * (frob2 - diag2)


class AugmentedDynamics(nn.Module):
    """d/dt [x, ℓ] = [f(x, t), −div f(x, t)] as an `f(t, state)` for `solvers.odeint`.

    The state is packed as one (B, D + 1) tensor (x flattened, then ℓ) so that any solver
    takes it. With `trace="hutchinson"` the probe `eps` is fixed for the whole solve
    (FFJORD), which keeps the ODE deterministic for adaptive step control. Under
    `torch.no_grad()` the divergence is computed without a second-order graph.
    """

    def __init__(self, model, shape, *, trace: str = "exact", eps: torch.Tensor | None = None, cond=None):
        super().__init__()
        if trace not in TRACES:
            raise ValueError(f"Unknown trace {trace!r}: use one of {', '.join(TRACES)}.")
        if trace == "hutchinson" and eps is None:
            raise ValueError("trace='hutchinson' needs a probe eps (see cnf.probe).")
        self.model, self.shape, self.trace, self.eps = model, tuple(shape), trace, eps
        self.cond = cond or {}

    def forward(self, t, state):
        keep_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            x = state[:, :-1].reshape(state.shape[0], *self.shape)
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            f_x = self.model(x, batch_time(t, x), **self.cond)
            if f_x.shape != x.shape:
                raise ValueError(
                    f"The model must return a velocity of the shape of x {tuple(x.shape)}, got {tuple(f_x.shape)}."
                )
            if self.trace == "exact":
                div = divergence_exact(f_x, x, create_graph=keep_graph)
            else:
                div = divergence_hutchinson(f_x, x, self.eps, create_graph=keep_graph)
        d_state = torch.cat([f_x.flatten(1), -div[:, None]], dim=1)
        return d_state if keep_graph else d_state.detach()


@dataclass
class CNFSolution:
    x: torch.Tensor  # end point x_{t1}: (B, *D)
    delta_log_p: torch.Tensor  # log p_{t1}(x_{t1}) − log p_{t0}(x_{t0}) = −∫ div f dt: (B,)
    nfe: int  # evaluations of the field (each with its divergence)
    trajectory: torch.Tensor | None  # (T, B, *D) on the solver's grid, or None


def integrate(
    model,
    x: torch.Tensor,
    t_span: tuple[float, float] = (1.0, 0.0),
    *,
    trace: str = "exact",
    probe_kind: str = "rademacher",
    eps: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    method: str = "rk4",
    steps: int = 32,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    adjoint: bool = False,
    return_trajectory: bool = False,
    cond: dict | None = None,
) -> CNFSolution:
    """Solve the augmented ODE from t_span[0] to t_span[1] (either direction) starting at x.

    ℓ(t0) = 0 and dℓ/dt = −div f, so `delta_log_p` = log p_{t1}(x_{t1}) − log p_{t0}(x_{t0}).
    For `trace="hutchinson"` one probe is drawn (from `generator`) unless `eps` is given.
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError(f"x must be a (B, *D) tensor, got {getattr(x, 'shape', type(x))}.")
    if trace not in TRACES:
        raise ValueError(f"Unknown trace {trace!r}: use one of {', '.join(TRACES)}.")
    if trace == "hutchinson" and eps is None:
        eps = probe(x, probe_kind, generator)
    dynamics = AugmentedDynamics(model, x.shape[1:], trace=trace, eps=eps, cond=cond)
    state0 = torch.cat([x.flatten(1), x.new_zeros(x.shape[0], 1)], dim=1)
    params = tuple(model.parameters()) if isinstance(model, nn.Module) else ()
    sol = solvers.odeint(dynamics, state0, t_span, method=method, steps=steps, rtol=rtol, atol=atol,
                         adjoint=adjoint, adjoint_params=params, return_trajectory=return_trajectory)
    unpack = lambda s: s[..., :-1].reshape(*s.shape[:-1], *x.shape[1:])  # noqa: E731
    traj = unpack(sol.trajectory) if return_trajectory else None
    return CNFSolution(unpack(sol.x), sol.x[:, -1], sol.nfe, traj)


def log_prob(model, x: torch.Tensor, *, base_log_prob=standard_normal_log_prob, **kw) -> torch.Tensor:
    """log p_1(x) = log p_0(x_0) − ℓ(0): integrate data x back from t = 1 to the base at t = 0.

    `**kw` go to `integrate` (trace, method, steps, rtol, atol, generator, cond, ...).
    Differentiable w.r.t. the model's parameters (training by maximum likelihood) unless
    called under `torch.no_grad()`.
    """
    sol = integrate(model, x, (1.0, 0.0), **kw)
    return base_log_prob(sol.x) - sol.delta_log_p


def nll_loss(model, x: torch.Tensor, **kw) -> torch.Tensor:
    """Maximum-likelihood loss: mean −log p_1(x) over the batch (nats)."""
    return -log_prob(model, x, **kw).mean()


def sample(model, x0: torch.Tensor, *, method: str = "rk4", steps: int = 32, return_trajectory: bool = False,
           cond: dict | None = None) -> solvers.Solution:
    """Flow base points x0 forward from t = 0 to t = 1 (no divergence needed): the course's one
    sampler, `solvers.sample`, with `steps` fixed steps of `method` (no gradients)."""
    return solvers.sample(model, x0, solvers.uniform_grid(steps, 0.0, 1.0), method=method,
                          return_trajectory=return_trajectory, **(cond or {}))


def likelihood_gap(log_prob_fn, x_test: torch.Tensor, entropy: float, *, batch: int = 4096) -> float:
    """Mean −log p(x) over `x_test` minus `entropy`, the data's entropy E[−log p_data(x)] (nats).

    No model beats the entropy on average, so the gap is ≥ 0 up to the test set's sampling noise,
    and 0 only for the data's own density (it is the KL divergence KL(p_data ‖ p) in expectation).
    `log_prob_fn` maps a (B, D) batch to (B,); it runs under `torch.no_grad()`, `batch` points at a time.
    """
    with torch.no_grad():
        log_p = torch.cat([log_prob_fn(chunk).detach().double().cpu() for chunk in x_test.split(batch)])
    if not torch.isfinite(log_p).all():
        return math.inf
    return float(-log_p.mean()) - float(entropy)


def learned_the_squares(gap: float, bound: float = CHECKERBOARD_GAP_BOUND) -> bool:
    """Whether a checkerboard model's `likelihood_gap` is below `bound` (< log 2, the gap of a density
    uniform on the whole board, black and white squares alike).

    Lumping the plane into "black squares" and "elsewhere" can only lower a KL divergence, and the
    data put all their mass on the black squares, so gap ≥ −log q(black): a model with gap g puts
    at least exp(−g) of its mass q on the black squares (½ at g = log 2, which the uniform board
    already does; more than 0.64 below the default bound)."""
    if not bound < UNIFORM_BOARD_GAP:
        raise ValueError(f"bound must lie below log 2 = {UNIFORM_BOARD_GAP:.3f}, got {bound}.")
    return bool(gap < bound)


def on_black_squares(x: torch.Tensor) -> torch.Tensor:
    """(B, 2) standardised points -> (B,) bool: inside one of the checkerboard's 8 black squares of the
    raw board [−2, 2]², where `data.checkerboard` puts all its mass."""
    from .data import standardisation

    mean, std = standardisation("checkerboard")
    raw = x.detach().double().cpu() * std.double() + mean.double()
    return (raw.abs() <= 2).all(1) & (torch.floor(raw).sum(1) % 2 == 0)


def log_density_path(model, x: torch.Tensor, times, *, method: str = "rk4", steps: int = 32,
                     base_log_prob=standard_normal_log_prob, cond: dict | None = None) -> torch.Tensor:
    """log p_t(x) at each time t of `times` (T,): (T, B), by the instantaneous change of variables.

    p_t is the base carried by the flow from 0 to t, so a point x at time t is integrated back to
    the base, log p_t(x) = log p_0(x_0) − ℓ(0), over [t, 0] with about `steps`·t fixed steps (none
    at t = 0, where p_0 is the base itself). Without gradients.
    """
    out = []
    with torch.no_grad():
        for t in torch.as_tensor(times, dtype=torch.float64).tolist():
            if t <= 0:
                out.append(base_log_prob(x))
                continue
            sol = integrate(model, x, (float(t), 0.0), method=method, steps=max(1, round(steps * t)), cond=cond)
            out.append(base_log_prob(sol.x) - sol.delta_log_p)
    return torch.stack(out)
