"""Rectified flow and reflow (Liu, Gong & Liu 2022), with SD3's logit-normal time sampling.

Flow time (docs/conventions.md): x0 ~ N(0, I) is noise, x1 is data, and the straight path is

    x_t = t x1 + (1 − t) x0,        u = dx_t/dt = x1 − x0,

flow matching's `OTPath()` (σ_min = 0). So the rectified-flow loss E_t E ||v(x_t, t) − (x1 − x0)||²
is `flow_matching.cfm_loss(model, OTPath(), x0, x1, time_sampler=...)`, with t uniform or
logit-normal (`flow_matching.sample_time`, `make_time_sampler`, `logit_normal_density`).

- `fit_rectified_flow`: `train.fit` with that loss, on pairs (x0, x1) from any coupling.
- `reflow_pairs`: a new coupling (x0, Z1(x0)) by integrating a learned flow from noise.
- `straightness(model, x0)`: S = ∫₀¹ E ||(Z1 − Z0) − v(Z_t, t)||² dt along the flow's own paths
  (Liu et al. 2022, Def. 3.5); 0 exactly when every path is a straight line at constant speed.
  The formula is `flow_matching.straightness_integral`; `flow_matching.straightness_from_trajectory`
  estimates the velocity from the paths alone.
- `sample`: the flow from noise to data with `steps` equal steps (`flow_matching.sample_ode`, which
  is `solvers.sample` on `solvers.uniform_grid(steps)`), as a tensor.
- `distillation_loss` / `one_step` / `distil`: fit x0 ↦ x0 + v(x0, 0) to a coupling's pairs, e.g. a
  flow's own pairs (x0, Z1(x0)) from `reflow_pairs`, which turns the flow into a one-step sampler.
- `one_step_error` / `distillation_gain`: how far one step lands from the flow's ODE endpoint Z1(x0),
  on the same noise, for a distilled student against the teacher's own one step.
- `off_manifold_distance`: the mean distance from each sample to its nearest data point.
- Two modes to two modes (notebook 09 §7, where rewiring is visible): `two_modes` draws the toy,
  `two_modes_field` is its exact 1-rectified field in closed form, `mode_index` / `fraction_crossing`
  count the pairs that go to the other mode, `check_no_crossing`, `check_rewired` (end points reach
  the target without crossing) and `check_straightened` (S after / S before under a bar).
- Reflow against minibatch OT-CFM (notebook 09 §4): `coupled_pairs` re-pairs each minibatch by
  `flow_matching.ot_coupling`, `minibatch_ot_cost` the transport cost of that pairing per batch size,
  `check_straighter` (S of a field under a bar times a reference's and, optionally, its one step reaching the
  data).
- Where the time weights matter (§6): `loss_per_time` (the loss at fixed times) and `check_lower_loss`.

Notation: Liu et al. write X0, X1 for the coupling and Z_t for the flow; SD3 (Esser et al.
2024) runs time the other way, z_t = (1 − t) x + t ε, so their t is our 1 − t.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .flow_matching import (
    OTPath,
    Straightness,
    cfm_loss,
    check_pair,
    make_time_sampler,
    ot_coupling,
    sample_ode,
    straightness_integral,
)
from .train import TrainConfig, TrainResult, fit


def fit_rectified_flow(
    model,
    next_pair,
    config: TrainConfig | None = None,
    *,
    sampling: str = "uniform",
    m: float = 0.0,
    s: float = 1.0,
) -> TrainResult:
    """`train.fit` with the rectified-flow loss `cfm_loss(net, OTPath(), x0, x1)`, t drawn by
    `sample_time(sampling, m, s)`; `next_pair(step) -> (x0, x1)`."""
    path, draw = OTPath(), make_time_sampler(sampling, m=m, s=s)

    def loss_fn(net, pair):
        return cfm_loss(net, path, *pair, time_sampler=draw)

    return fit(model, loss_fn, next_pair, config)


# couplings and reflow --------------------------------------------------------------------
@dataclass
class Coupling:
    """Paired samples (x0[i], x1[i]): noise and the data point it is coupled to."""

    x0: torch.Tensor
    x1: torch.Tensor

    def __post_init__(self):
        check_pair(self.x0, self.x1)

    def __len__(self) -> int:
        return self.x0.shape[0]

    def batch(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A minibatch of `n` pairs drawn with replacement (pairs stay together)."""
        idx = torch.randint(len(self), (n,), generator=generator).to(self.x0.device)
        return self.x0[idx], self.x1[idx]


def reflow_pairs(model, x0: torch.Tensor, *, steps: int = 32, method: str = "rk4") -> Coupling:
    """The coupling of the flow dZ/dt = v(Z_t, t): pairs (x0, Z1) with Z0 = x0 (Liu et al., Alg. 1)."""
    return Coupling(x0, sample_ode(model, x0, steps, method).x)


def sample(model, x0: torch.Tensor, steps: int, method: str = "euler") -> torch.Tensor:
    """Integrate the flow from noise `x0` at t=0 to t=1 with `steps` steps (Euler by default)."""
    return sample_ode(model, x0, steps, method).x


@torch.no_grad()
def straightness(model, x0: torch.Tensor, *, steps: int = 32, method: str = "rk4") -> Straightness:
    """S = ∫₀¹ E ||(Z1 − Z0) − v(Z_t, t)||² dt along the flow of `model` started at `x0`: the paths
    from `steps` steps of `method` (`sample_ode`), the velocities the model's own at each grid
    time, the integral `flow_matching.straightness_integral`."""
    sol = sample_ode(model, x0, steps, method, return_trajectory=True)
    traj = sol.trajectory
    v = model(traj.flatten(0, 1), sol.t.repeat_interleave(x0.shape[0])).reshape(traj.shape)
    return straightness_integral(traj, v, sol.t)


# distillation ----------------------------------------------------------------------------
def distillation_loss(model, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """E ||(x1 − x0) − v(x0, 0)||²: make one Euler step x0 + v(x0, 0) land on x1 (Liu et al. §2.3)."""
    check_pair(x0, x1)
    return (model(x0, x0.new_zeros(x0.shape[0])) - (x1 - x0)).flatten(1).pow(2).sum(1).mean()


@torch.no_grad()
def one_step(model, x0: torch.Tensor) -> torch.Tensor:
    """One Euler step from t=0 to t=1: x0 + v(x0, 0)."""
    return x0 + model(x0, x0.new_zeros(x0.shape[0]))


def distil(teacher, pairs: Coupling, config: TrainConfig | None = None, *, batch_size: int = 256,
           generator: torch.Generator | None = None) -> TrainResult:
    """A copy of `teacher` trained by `train.fit` with `distillation_loss` on minibatches of `pairs`
    (the teacher is left unchanged; the student is the result's `model`). With the teacher's own
    pairs, `reflow_pairs(teacher, x0)`, the student's one step learns to land on the teacher's Z1(x0)."""
    student = copy.deepcopy(teacher)

    def loss_fn(net, pair):
        return distillation_loss(net, *pair)

    return fit(student, loss_fn, lambda step: pairs.batch(batch_size, generator), config)


@torch.no_grad()
def one_step_error(student, teacher, x0: torch.Tensor, *, steps: int = 32, method: str = "rk4") -> float:
    """E ||(x0 + v_student(x0, 0)) − Z1(x0)||²: how far one Euler step of `student` lands from the end
    point Z1(x0) of the flow of `teacher` from the same noise (`steps` steps of `method`). With
    `student = teacher`, the error of the teacher's own one-step sampler. The two samplers are compared
    point by point on the same x0, which makes this far less noisy than a distance between sample sets."""
    z1 = sample_ode(teacher, x0, steps, method).x
    return (one_step(student, x0) - z1).flatten(1).pow(2).sum(1).mean().item()


def distillation_gain(student, teacher, x0: torch.Tensor, *, steps: int = 32, method: str = "rk4") -> float:
    """one_step_error(student, teacher) / one_step_error(teacher, teacher): below 1 when the distilled
    student's one step lands closer to the teacher's ODE end point than the teacher's own one step;
    exactly 1 for a student that is a copy of the teacher (a distillation that did nothing)."""
    own = one_step_error(teacher, teacher, x0, steps=steps, method=method)
    return one_step_error(student, teacher, x0, steps=steps, method=method) / own


@torch.no_grad()
def off_manifold_distance(samples: torch.Tensor, reference: torch.Tensor, *, chunk: int = 512) -> float:
    """Mean over `samples` (N, D) of the Euclidean distance to the nearest point of `reference` (M, D),
    a large draw of the data: near 0 for samples on the data, large for samples beside or between its
    parts. Unlike W2 and MMD it ignores how the mass is spread along the data (a sampler that covers
    one part of the data only scores well): it measures sharpness, not coverage."""
    if samples.ndim != 2 or reference.ndim != 2 or samples.shape[1] != reference.shape[1]:
        raise ValueError(f"off_manifold_distance expects (N, D) and (M, D) point sets, got "
                         f"{tuple(samples.shape)} and {tuple(reference.shape)}.")
    nearest = [torch.cdist(part, reference).min(1).values for part in samples.split(chunk)]
    return torch.cat(nearest).mean().item()


# two modes to two modes: reflow rewires the coupling ----------------------------------------
def two_modes(n: int, x: float, *, scale: float = 1.0, spread: float = 0.3,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """`n` points, half around (x, +2)·scale and half around (x, −2)·scale (the mode drawn for each
    point with probability ½), Gaussian with standard deviation `spread`. With x = −2 a source, with
    x = +2 a target: the independent coupling sends half of each source mode to the other target mode."""
    upper = torch.rand(n, generator=generator) < 0.5
    centre = torch.stack([torch.full((n,), float(x)), torch.where(upper, 2.0, -2.0)], 1) * scale
    return centre + spread * torch.randn(n, 2, generator=generator)


def mode_index(x: torch.Tensor) -> torch.Tensor:
    """The mode of each point of a `two_modes` draw: 1 above the horizontal axis, 0 below."""
    return (x[:, 1] >= 0).long()


def fraction_crossing(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """For each source mode (0: below, 1: above), the fraction of its pairs (x0, x1) whose partner x1
    lies in the other mode: about ½ for independent pairs, 0 for a coupling that keeps the modes."""
    check_pair(x0, x1)
    src, dst = mode_index(x0), mode_index(x1)
    return torch.stack([(dst[src == m] != m).float().mean() for m in (0, 1)])


def check_no_crossing(x0: torch.Tensor, x1: torch.Tensor, *, bar: float = 0.05) -> torch.Tensor:
    """Assert that no source mode sends more than `bar` of its pairs to the other mode; returns the
    fractions (`fraction_crossing`)."""
    frac = fraction_crossing(x0, x1)
    if not bool((frac <= bar).all()):
        raise AssertionError(f"the coupling sends {frac.tolist()} of the two source modes across "
                             f"(bar {bar}): its pairs cross between the modes.")
    return frac


def check_straightened(s_before: float, s_after: float, *, bar: float) -> float:
    """Assert that a reflow round cut the straightness to at most `bar` times its previous value;
    returns the ratio S_after / S_before."""
    ratio = s_after / s_before
    if not ratio <= bar:
        raise AssertionError(f"straightness went from {s_before:.4f} to {s_after:.4f}, ratio {ratio:.3f} > "
                             f"bar {bar}: the round did not straighten the flow.")
    return ratio


def two_modes_field(x: torch.Tensor, t: torch.Tensor, *, scale: float = 1.0, spread: float = 0.3) -> torch.Tensor:
    """The exact 1-rectified field v*(x, t) = E[X1 − X0 | X_t = x] of the two-modes task: X0 = `two_modes(n,
    −2)`, X1 = `two_modes(n, +2)` (same `scale` and `spread`), independent. Given the modes a_i of X0 and
    b_j of X1 (four pairs, weight ¼ each), X_t is Gaussian with mean m_ij = t b_j + (1 − t) a_i and
    variance s_t² = spread² (t² + (1 − t)²) per coordinate, and E[X1 − X0 | X_t = x, i, j] =
    (b_j − a_i) + (2t − 1)/(t² + (1 − t)²) (x − m_ij); v* mixes these with the posterior weights of the
    pairs. It commutes with the reflection (x, y) ↦ (x, −y), so on the horizontal axis it is horizontal."""
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"two_modes_field expects points of shape (B, 2), got {tuple(x.shape)}.")
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])[:, None, None]
    y = torch.tensor([2.0, -2.0], dtype=x.dtype, device=x.device) * scale
    a = torch.stack([torch.full((2,), -2.0 * scale, dtype=x.dtype, device=x.device), y], 1)  # (2, 2): sources
    b = torch.stack([torch.full((2,), 2.0 * scale, dtype=x.dtype, device=x.device), y], 1)  # (2, 2): targets
    a_ij, b_ij = a[:, None].expand(2, 2, 2).reshape(4, 2), b[None].expand(2, 2, 2).reshape(4, 2)
    m = t * b_ij + (1 - t) * a_ij  # (B, 4, 2)
    q = t ** 2 + (1 - t) ** 2
    d = x[:, None] - m
    w = torch.softmax(-d.pow(2).sum(-1, keepdim=True) / (2 * spread ** 2 * q), dim=1)  # (B, 4, 1)
    return (w * ((b_ij - a_ij) + (2 * t - 1) / q * d)).sum(1)


def check_rewired(x0: torch.Tensor, z1: torch.Tensor, target: torch.Tensor, *, across: float,
                  distance: float) -> tuple[torch.Tensor, float]:
    """Assert that a flow's end points z1 = Z1(x0) on the two-modes task reach the target and keep the
    modes: the mean distance from z1 to the nearest point of `target` (`off_manifold_distance`) is at
    most `distance`, and no source mode sends more than `across` of its particles to the other target
    mode (`check_no_crossing`). An untrained or identity field fails the first (its end points stay at
    the source); independent pairs, or a flow that swaps the modes, the second. Returns the fractions
    and the distance."""
    dist = off_manifold_distance(z1, target)
    if not dist <= distance:
        raise AssertionError(f"the end points lie {dist:.3f} from the target on average (bar {distance}): "
                             f"the flow does not reach the target modes.")
    return check_no_crossing(x0, z1, bar=across), dist


# reflow against minibatch OT-CFM (notebook 09 §4) ------------------------------------------
def coupled_pairs(next_pair, coupling=None):
    """`next_pair(step) -> (x0, x1)` with every minibatch re-paired by `coupling(x0, x1) -> (x0, x1)`,
    by default `flow_matching.ot_coupling`: `fit_rectified_flow` on these pairs is minibatch OT-CFM
    (Tong et al. 2023), the exact OT pairing of each batch for the cost ‖x1 − x0‖². With
    `flow_matching.independent_coupling` the pairs stay as drawn (plain rectified flow)."""
    coupling = ot_coupling if coupling is None else coupling

    def pairs(step):
        return coupling(*next_pair(step))

    return pairs


@torch.no_grad()
def minibatch_ot_cost(x0: torch.Tensor, x1: torch.Tensor, batch_size: int) -> float:
    """E ‖x1 − x0‖² after splitting the point sets `x0`, `x1` (N, D) into consecutive batches of
    `batch_size` and pairing each batch by exact OT (`flow_matching.ot_coupling`). `batch_size = 1`
    keeps the pairs as given (the independent coupling for independent draws); `batch_size = N` is the
    exact OT between the two empirical sets. A larger batch can only find cheaper pairs on average."""
    check_pair(x0, x1)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    total = 0.0
    for a, b in zip(x0.split(batch_size), x1.split(batch_size)):
        a, b = ot_coupling(a, b) if batch_size > 1 else (a, b)
        total += (b - a).flatten(1).pow(2).sum(1).sum().item()
    return total / x0.shape[0]


def check_straighter(s_reference: float, s_new: float, *, bar: float, name: str = "the new flow",
                     w2_one_step: float | None = None, w2_bar: float | None = None) -> float:
    """Assert S(new) ≤ `bar` · S(reference), e.g. a minibatch-OT or reflowed field against the 1-rectified
    flow trained with independent pairs; returns the ratio S(new) / S(reference).

    Straightness alone is cheap: an untrained network, nearly linear and small, has S close to 0 and its
    one step stays on the noise. Given `w2_one_step` (W2 from one Euler step of the new field to the data)
    and `w2_bar`, the check also asserts w2_one_step < w2_bar: straight *and* reaching the data."""
    ratio = s_new / s_reference
    if not ratio <= bar:
        raise AssertionError(f"{name} has straightness {s_new:.4f} against {s_reference:.4f}, ratio {ratio:.3f} > "
                             f"bar {bar}: it is not straighter than the reference.")
    if (w2_one_step is None) != (w2_bar is None):
        raise ValueError("give both w2_one_step and w2_bar, or neither.")
    if w2_one_step is not None and not w2_one_step < w2_bar:
        raise AssertionError(f"{name} is straight (ratio {ratio:.3f}), but one Euler step lands at W2 {w2_one_step:.3f} "
                             f"from the data (bar {w2_bar}): a straight field that does not reach the data, as an "
                             f"untrained one.")
    return ratio


# where the time weights matter (notebook 09 §6) -------------------------------------------
@torch.no_grad()
def loss_per_time(model, x0: torch.Tensor, x1: torch.Tensor, times) -> torch.Tensor:
    """The rectified-flow loss E ‖v(x_t, t) − (x1 − x0)‖² at each fixed time of `times`, on the pairs
    (x0, x1): a tensor of len(times). Compare fields on the same pairs: most of each value is the
    irreducible variance of x1 − x0 given x_t, which cancels in a difference."""
    check_pair(x0, x1)
    ones = x0.new_ones(x0.shape[0])
    return torch.tensor([cfm_loss(model, OTPath(), x0, x1, float(t) * ones).item() for t in times])


def check_lower_loss(loss_reference: torch.Tensor, loss_new: torch.Tensor, times, *, band: tuple[float, float],
                     margin: float) -> float:
    """Assert that, averaged over the `times` inside `band`, `loss_new` is below `loss_reference` by at
    least `margin` (two `loss_per_time` profiles on the same pairs); returns that mean difference."""
    times = torch.as_tensor(times)
    inside = (times >= band[0]) & (times <= band[1])
    if not bool(inside.any()):
        raise ValueError(f"no time of {times.tolist()} lies in the band {band}.")
    gain = (loss_reference[inside] - loss_new[inside]).mean().item()
    if not gain >= margin:
        raise AssertionError(f"for t in {band} the loss is lower by {gain:.4f} on average, less than the margin "
                             f"{margin}: the new field is not learned better there.")
    return gain
