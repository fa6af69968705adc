"""Sampling the class-conditional DiT of notebook 10 (the network is `course_utils.models.dit`).

Flow time: noise x0 at t = 0, images at t = 1, dx/dt = ṽ(x, t, y), where ṽ is the guided
velocity (1 − ω) v(x, t, ∅) + ω v(x, t, y) (`guidance.ClassifierFreeGuidance`). ω = 1 is the
conditional model (one network call per evaluation); otherwise both halves run as one batch.

Two measurements of notebook 10 live here too: which weights of an adaLN-Zero block or DiT receive a
gradient first (`gradient_norms`, `gate_opening`, `opens_from_zero`, `learning_order`), and the
rectified-flow loss along the path beside the best linear guess (`per_t_loss`, `linear_per_t_loss`,
`linear_velocity`, `gain_peaks_inside`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from . import solvers
from .guidance import ClassifierFreeGuidance
from .models.dit import DiT


@torch.no_grad()
def sample(model: DiT, y: torch.Tensor, *, scale: float = 1.0, steps: int = 32, method: str = "euler",
           x0: torch.Tensor | None = None, grid: torch.Tensor | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Images for labels `y: (B,)`, integrating the guided velocity from x0 (t = 0) to t = 1.

    The grid is `solvers.uniform_grid(steps)` unless given (e.g. `solvers.shifted_grid`);
    NFE = steps for Euler, 2·steps for midpoint and Heun.
    """
    cfg = model.cfg
    if x0 is None:
        x0 = torch.randn((len(y), cfg.in_channels, cfg.image_size, cfg.image_size), generator=generator)
        x0 = x0.to(y.device)
    grid = solvers.uniform_grid(steps) if grid is None else grid
    return solvers.sample(ClassifierFreeGuidance(model, scale), x0, grid, method=method, y=y).x


# ---------------------------------------------------------------------------- adaLN-Zero: which weights learn first
GATE_CHUNKS = (2, 5)
"""The gate rows among the six chunks (β_a, γ_a, α_a, β_m, γ_m, α_m) of a block's adaLN modulation layer."""


def gradient_norms(block: nn.Module, x: torch.Tensor, c: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """‖∂L/∂θ‖ by group for L = ‖block(x, c) − target‖² (summed): the attention branch, the MLP branch, and the
    shift-and-scale rows and the gate rows of the adaLN modulation layer (weight and bias rows together).

    A group whose parameters do not require gradients (or receive none) counts as 0."""
    block.zero_grad(set_to_none=True)
    with torch.enable_grad():
        loss = (block(x, c) - target).pow(2).sum()
        loss.backward()

    def norm(params):
        grads = [p.grad.flatten() for p in params if p.grad is not None]
        return torch.cat(grads).norm().item() if grads else 0.0

    layer = block.adaLN_modulation[-1]
    rows = {"gate rows": [], "shift and scale rows": []}
    for p in (layer.weight, layer.bias):
        chunks = p.grad.chunk(6, dim=0) if p.grad is not None else []
        for k, chunk in enumerate(chunks):
            rows["gate rows" if k in GATE_CHUNKS else "shift and scale rows"].append(chunk.flatten())
    out = {"attention": norm(block.attn.parameters()), "MLP": norm(block.mlp.parameters())}
    out.update({name: torch.cat(g).norm().item() if g else 0.0 for name, g in rows.items()})
    block.zero_grad(set_to_none=True)
    return out


@dataclass(frozen=True)
class GateOpening:
    """Gradient norms by group (`gradient_norms`) before and after SGD steps on a copy of a block."""

    at_init: dict[str, float]
    after_step: dict[str, float]
    steps: int


def gate_opening(block: nn.Module, x: torch.Tensor, c: torch.Tensor, target: torch.Tensor, *, lr: float = 0.1,
                 steps: int = 1) -> GateOpening:
    """The gradient norms of `block` on L = ‖block(x, c) − target‖², then again after `steps` plain SGD steps on
    L (on a copy: `block` is left as it is). Only parameters that require gradients move."""
    at_init = gradient_norms(block, x, c, target)
    moved = copy.deepcopy(block)
    params = [p for p in moved.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            (moved(x, c) - target).pow(2).sum().backward()
        opt.step()
    return GateOpening(at_init, gradient_norms(moved, x, c, target), steps)


def opens_from_zero(report: GateOpening) -> bool:
    """adaLN-Zero's start, as gradients show it: at init the attention and MLP weights and the shift and scale rows
    get exactly zero gradient while the gate rows do not; after the step(s) the branches' weights and the shift and
    scale rows all have non-zero gradients."""
    start, after = report.at_init, report.after_step
    closed = start["attention"] == 0 and start["MLP"] == 0 and start["shift and scale rows"] == 0
    opened = after["attention"] > 0 and after["MLP"] > 0 and after["shift and scale rows"] > 0
    return closed and start["gate rows"] > 0 and opened


# ---------------------------------------------------------------------------- the loss along the path
@torch.no_grad()
def per_t_loss(model: nn.Module, x1: torch.Tensor, y: torch.Tensor | None, x0: torch.Tensor,
               ts: torch.Tensor) -> torch.Tensor:
    """The rectified-flow loss E‖v(x_t, t, y) − (x1 − x0)‖² (summed over pixels, averaged over the batch) at each
    time of `ts`, with x_t = t·x1 + (1 − t)·x0 and the same x0 at every t: shape (len(ts),)."""
    out = []
    for t in ts.tolist():
        tt = torch.full((len(x1),), t, device=x1.device, dtype=x1.dtype)
        v = model(t * x1 + (1 - t) * x0, tt, y)
        out.append((v - (x1 - x0)).flatten(1).pow(2).sum(1).mean())
    return torch.stack(out).cpu()


def within_class_spectrum(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                                torch.Tensor]:
    """(class means (K, D), eigenvalues λ (D,), eigenvectors (D, D)) of the pooled within-class covariance
    E[(x − μ_y)(x − μ_y)ᵀ] of flattened images, in float64."""
    x = images.flatten(1).double()
    classes = torch.unique(labels)
    means = torch.zeros(int(classes.max()) + 1, x.shape[1], dtype=torch.float64)
    for k in classes.tolist():
        means[k] = x[labels == k].mean(0)
    r = x - means[labels]
    lam, q = torch.linalg.eigh(r.T @ r / len(r))
    return means, lam.clamp_min(0), q


def linear_per_t_loss(lam: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """The least loss E‖u − (x1 − x0)‖² of a guess u = a_y + K_t x_t (a class offset a_y, one matrix K_t for every
    class), for x0 ~ N(0, I) independent of the data and classes whose pooled within-class covariance has eigenvalues
    λ: Σ_i λ_i / (t² λ_i + (1 − t)²) at t < 1, and D (the noise's variance) at t = 1.

    It needs only the class means and Σ, not Gaussian classes (for Gaussian classes with one Σ no guess of any kind
    does better). Directions with λ_i = 0 cost nothing at t < 1 (the noise is read off them) and 1 each at t = 1, so
    the loss is tr Σ at t = 0, tends to rank Σ as t → 1 and jumps to D at t = 1."""
    out = []
    for t in ts.tolist():
        if t >= 1:
            out.append(torch.tensor(float(len(lam)), dtype=torch.float64))
        else:
            out.append((lam / (t * t * lam + (1 - t) ** 2)).sum())
    return torch.stack(out)


def linear_velocity(x_t: torch.Tensor, t: float, y: torch.Tensor, means: torch.Tensor, lam: torch.Tensor,
                    q: torch.Tensor) -> torch.Tensor:
    """The best linear guess of x1 − x0 from x_t for Gaussian classes (means, within-class spectrum λ, q):
    μ_y + (tΣ − (1−t)I)(t²Σ + (1−t)²I)⁻¹(x_t − tμ_y)."""
    shape = x_t.shape
    m = means[y.cpu()]
    if t >= 1:
        return x_t.clone()  # x_t = x1 says nothing of x0: the guess is x1 − E x0 = x1
    k = (t * lam - (1 - t)) / (t * t * lam + (1 - t) ** 2)
    u = m + ((x_t.flatten(1).double().cpu() - t * m) @ q * k) @ q.T
    return u.to(x_t.dtype).reshape(shape).to(x_t.device)


def gain_peaks_inside(loss: torch.Tensor, linear: torch.Tensor, *, margin: float = 0.1,
                      end_tol: float = 0.05) -> bool:
    """Whether a per-t loss beats the linear guess most in the middle of the path: the gain linear − loss, on a grid
    of t from 0 to 1, peaks at an inner point, above both end points, by more than `margin` of the linear loss there.

    At t = 0 and t = 1 the linear guess (μ_y − x0, then x1) is the best prediction of any kind, so no model can gain
    there beyond sampling error: a gain above `end_tol` of the linear loss at either end means that the baseline is
    not that guess (mis-scaled, or in other units than the loss), and the answer is False."""
    gain = (linear - loss).double()
    k = int(gain.argmax())
    ends_fair = gain[0] <= end_tol * linear[0] and gain[-1] <= end_tol * linear[-1]
    return bool(ends_fair and 0 < k < len(gain) - 1 and gain[k] > margin * linear[k]
                and gain[k] > max(gain[0], gain[-1]))


def _group(name: str) -> str:
    """The part of a DiT a parameter belongs to, by its name (the modulation rows are split later)."""
    parts = name.split(".")
    if parts[0] == "blocks":
        return {"attn": "attention", "mlp": "MLP", "adaLN_modulation": "block modulation"}[parts[2]]
    if parts[0] == "final_layer":
        return "final adaLN" if parts[1] == "adaLN_modulation" else "final linear"
    return {"x_embedder": "patch embedding", "t_embedder": "time and label embedders",
            "y_embedder": "time and label embedders"}[parts[0]]


def learning_order(model: DiT, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, target: torch.Tensor, *,
                   steps: int = 3, lr: float = 1e-3) -> list[set[str]]:
    """For each of `steps` plain SGD steps on L = ‖model(x, t, y) − target‖² (on a copy of the model), the set of
    parts of the DiT whose gradient is non-zero; a block's modulation layer counts as 'block gates' and 'block shifts
    and scales' by its rows."""
    moved = copy.deepcopy(model).train()
    opt = torch.optim.SGD(moved.parameters(), lr=lr)
    order = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            (moved(x, t, y, drop=torch.zeros(len(x), dtype=torch.bool, device=x.device) if y is not None else None)
             - target).pow(2).sum().backward()
        seen = set()
        for name, p in moved.named_parameters():
            if p.grad is None:
                continue
            if not torch.isfinite(p.grad).all():
                raise ValueError(f"learning_order: the gradient of {name} is not finite; the steps diverged, lower lr.")
            group = _group(name)
            if group == "block modulation":
                chunks = p.grad.chunk(6, dim=0)
                if any(chunks[k].abs().sum() > 0 for k in GATE_CHUNKS):
                    seen.add("block gates")
                if any(chunks[k].abs().sum() > 0 for k in range(6) if k not in GATE_CHUNKS):
                    seen.add("block shifts and scales")
            elif p.grad.abs().sum() > 0:
                seen.add(group)
        order.append(seen)
        opt.step()
    return order
