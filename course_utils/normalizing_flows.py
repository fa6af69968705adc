"""Normalizing flows: invertible maps x -> z onto a standard normal base, trained by exact likelihood.

Convention (notebook 01): a flow f maps data to the base, z = f(x), z ~ N(0, I), so

    log p(x) = log N(f(x); 0, I) + log |det ∂f/∂x|,

and samples are x = f⁻¹(z). Every flow here is a `Flow`: `forward(x) -> FlowOutput(z,
log_det)`, `inverse(z) -> x`, `log_prob(x)`, `sample(n, generator=None)`; `x: (B, D)`,
`log_det: (B,)`. Layers compose with `FlowSequence`, whose log-det is the sum of the layers'.

- `PlanarLayer` (Rezende & Mohamed 2015, §4.1): z = x + û tanh(wᵀx + b); the determinant
  lemma gives det = 1 + tanh'(wᵀx + b) ûᵀw; the inverse is a 1D root-find along w.
- `AffineCoupling` (Dinh et al. 2016, eq. 6-9): z = m⊙x + (1−m)⊙(x⊙exp s(m⊙x) + t(m⊙x));
  the Jacobian is triangular, log-det = Σ (1−m)⊙s; the inverse is closed form.
- `PlanarFlow(dim, n_layers)` and `RealNVP(dim, n_layers, hidden, depth)`: stacks of them.
- `log_prob_via_jacobian(f, x)`: the brute-force formula with a dense autograd Jacobian
  (O(D) backward passes and an O(D³) determinant per point), for checks and comparisons.
- `histogram_l1(samples, density, edges)`: how far a 1D density is from a histogram of samples.
- `mass_on_grid(log_prob, bounds, n)`: ∫ p over a square, to check that a 2D model density is normalised.
- `likelihood_gap(model_log_prob, data_log_prob, x)`: test NLL, data entropy and their difference,
  which is KL(p_data ‖ p_θ), the quantity maximum likelihood minimises.
- `bits_per_dim(nll_nats, dim)`: an NLL in nats per data point as bits per dimension.

Notebook 01 has no time; from notebook 03 on, flows run from noise x₀ at t = 0 to data x₁ at t = 1, and
this module's f (data to noise) is the inverse ψ₁⁻¹ of that time-1 flow map (docs/conventions.md).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .models.embeddings import mlp


class FlowOutput(NamedTuple):
    z: torch.Tensor  # f(x), (B, D)
    log_det: torch.Tensor  # log |det ∂f/∂x|, (B,)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over all but the batch dim: (B, *D) -> (B,)."""
    z = z.flatten(1)
    return -0.5 * (z.pow(2).sum(1) + z.shape[1] * math.log(2 * math.pi))


def _check_points(x, dim: int, who: str, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{who} expects {name} to be a torch tensor, got {type(x).__name__}.")
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{who} expects {name} of shape (B, {dim}), got {tuple(x.shape)}.")


class Flow(nn.Module):
    """An invertible map f: x -> z onto the base N(0, I), with its log-det Jacobian.

    Subclasses implement `_forward(x) -> FlowOutput` and `_inverse(z) -> x`; the public
    methods check shapes first.
    """

    dim: int

    def forward(self, x: torch.Tensor) -> FlowOutput:
        """z = f(x) and log |det ∂f/∂x| for `x: (B, dim)`."""
        _check_points(x, self.dim, type(self).__name__)
        return self._forward(x)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """x = f⁻¹(z) for `z: (B, dim)`."""
        _check_points(z, self.dim, f"{type(self).__name__}.inverse", "z")
        return self._inverse(z)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = log N(f(x); 0, I) + log |det ∂f/∂x|, shape (B,)."""
        z, log_det = self(x)
        return standard_normal_log_prob(z) + log_det

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` samples x = f⁻¹(z), z ~ N(0, I) drawn from `generator` (on its own device)."""
        if not isinstance(n, int) or n <= 0:
            raise ValueError(f"Number of samples must be a positive integer, got {n!r}.")
        ref = next(self.parameters())
        gen_device = generator.device if generator is not None else ref.device
        z = torch.randn(n, self.dim, generator=generator, device=gen_device, dtype=ref.dtype)
        return self.inverse(z.to(ref.device))

    def _forward(self, x: torch.Tensor) -> FlowOutput:
        raise NotImplementedError

    def _inverse(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class FlowSequence(Flow):
    """f = f_K ∘ ... ∘ f_1: log-dets add up (chain rule and det(AB) = det A · det B)."""

    def __init__(self, *layers: Flow):
        super().__init__()
        if not layers:
            raise ValueError("A FlowSequence needs at least one layer.")
        dims = {layer.dim for layer in layers}
        if len(dims) != 1:
            raise ValueError(f"All layers of a FlowSequence must have the same dim, got {sorted(dims)}.")
        self.dim = dims.pop()
        self.layers = nn.ModuleList(layers)

    def _forward(self, x):
        log_det = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer._forward(x)
            log_det = log_det + ld
        return FlowOutput(x, log_det)

    def _inverse(self, z):
        for layer in reversed(self.layers):
            z = layer._inverse(z)
        return z


class PlanarLayer(Flow):
    """z = x + û tanh(wᵀx + b), with û = u + (softplus(wᵀu) − 1 − wᵀu) w/‖w‖² so that ûᵀw > −1.

    log |det ∂z/∂x| = log |1 + tanh'(wᵀx + b) ûᵀw| (matrix determinant lemma). The inverse
    solves the scalar equation a + ûᵀw tanh(a + b) = wᵀz for a = wᵀx (increasing in a) by
    bisection, then x = z − û tanh(a + b).
    """

    def __init__(self, dim: int = 2, bisection_steps: int = 60):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}.")
        self.dim, self.bisection_steps = dim, bisection_steps
        self.config = dict(dim=dim, bisection_steps=bisection_steps)
        # Start at the identity: u = log(e − 1) w/‖w‖² gives softplus(wᵀu) − 1 = 0 and û = 0.
        w = torch.randn(dim)
        self.w = nn.Parameter(w)
        self.u = nn.Parameter(math.log(math.e - 1) * w / (w @ w))
        self.b = nn.Parameter(torch.zeros(()))

    def u_hat(self) -> torch.Tensor:
        """u moved along w so that ûᵀw = softplus(wᵀu) − 1 > −1 (Rezende & Mohamed, App. A.1)."""
        wu = self.w @ self.u
        return self.u + (F.softplus(wu) - 1 - wu) * self.w / (self.w @ self.w + 1e-12)

    def _forward(self, x):
        u_hat = self.u_hat()
        a = x @ self.w + self.b  # (B,)
        z = x + torch.tanh(a)[:, None] * u_hat
        d_tanh = 1 - torch.tanh(a).pow(2)
        return FlowOutput(z, torch.log(torch.abs(1 + d_tanh * (u_hat @ self.w))))

    def _inverse(self, z):
        u_hat = self.u_hat()
        wu = u_hat @ self.w
        target = z @ self.w  # wᵀz = a + wu tanh(a + b), a = wᵀx; |wu tanh| <= |wu|
        lo, hi = target - wu.abs() - 1e-6, target + wu.abs() + 1e-6
        for _ in range(self.bisection_steps):
            mid = 0.5 * (lo + hi)
            above = mid + wu * torch.tanh(mid + self.b) > target
            lo, hi = torch.where(above, lo, mid), torch.where(above, mid, hi)
        a = 0.5 * (lo + hi)
        return z - torch.tanh(a + self.b)[:, None] * u_hat


class AffineCoupling(Flow):
    """Affine coupling (RealNVP): the coordinates with mask 1 pass through and condition the rest.

        s, t = net(m⊙x) (masked to the other coordinates),  s bounded by a learned scale·tanh
        z = m⊙x + (1−m)⊙(x⊙exp(s) + t),    log |det ∂z/∂x| = Σ_d (1−m_d) s_d
        x = m⊙z + (1−m)⊙((z − t)⊙exp(−s))  (s, t depend only on m⊙z = m⊙x)

    The network's last layer starts at zero, so a fresh layer is the identity.
    """

    def __init__(self, mask, hidden: int = 64, depth: int = 2):
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if mask.ndim != 1 or not torch.all((mask == 0) | (mask == 1)) or not 0 < int(mask.sum()) < mask.numel():
            raise ValueError(
                "The coupling mask must be a 1D vector of 0s and 1s with at least one of each, "
                f"got {mask.tolist()}."
            )
        self.dim = mask.numel()
        self.config = dict(mask=[int(m) for m in mask.tolist()], hidden=hidden, depth=depth)
        self.register_buffer("mask", mask)
        self.net = mlp(self.dim, 2 * self.dim, hidden, depth)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.scale = nn.Parameter(torch.ones(self.dim))

    def scale_and_shift(self, x_masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """s, t of shape (B, D) from the pass-through part m⊙x, zero on the pass-through coordinates."""
        m = self.mask.to(x_masked.dtype)
        s_raw, t = self.net(x_masked).chunk(2, dim=1)
        return (1 - m) * self.scale * torch.tanh(s_raw), (1 - m) * t

    def _forward(self, x):
        m = self.mask.to(x.dtype)
        s, t = self.scale_and_shift(m * x)
        z = m * x + (1 - m) * (x * torch.exp(s) + t)
        return FlowOutput(z, s.sum(1))

    def _inverse(self, z):
        m = self.mask.to(z.dtype)
        s, t = self.scale_and_shift(m * z)
        return m * z + (1 - m) * ((z - t) * torch.exp(-s))


def alternating_masks(dim: int, n_layers: int) -> list[list[int]]:
    """Masks that alternate between the first and the second half of the coordinates."""
    if dim < 2:
        raise ValueError(f"A coupling flow needs dim >= 2 (half the coordinates pass through), got {dim}.")
    first = [1 if d < dim // 2 else 0 for d in range(dim)]
    return [first if k % 2 == 0 else [1 - v for v in first] for k in range(n_layers)]


def _check_layers(n_layers) -> None:
    if not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}.")


class PlanarFlow(FlowSequence):
    """`n_layers` planar layers in `dim` dimensions."""

    def __init__(self, dim: int = 2, n_layers: int = 16):
        _check_layers(n_layers)
        super().__init__(*[PlanarLayer(dim) for _ in range(n_layers)])
        self.config = dict(dim=dim, n_layers=n_layers)


class RealNVP(FlowSequence):
    """`n_layers` affine couplings with alternating masks; each net is an MLP `depth`×`hidden`."""

    def __init__(self, dim: int = 2, n_layers: int = 8, hidden: int = 64, depth: int = 2):
        _check_layers(n_layers)
        masks = alternating_masks(dim, n_layers)
        super().__init__(*[AffineCoupling(m, hidden, depth) for m in masks])
        self.config = dict(dim=dim, n_layers=n_layers, hidden=hidden, depth=depth)


def nll_loss(flow: Flow, x: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood −(1/B) Σ log p(x_i): the exact maximum-likelihood objective."""
    return -flow.log_prob(x).mean()


def jacobian(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *,
             create_graph: bool = False) -> torch.Tensor:
    """Per-point Jacobians ∂f/∂x of a map `f: (B, D) -> (B, D)` acting row by row: (B, D, D).

    One backward pass per output coordinate, D in all (works inside `torch.no_grad()` too).
    """
    if x.ndim != 2:
        raise ValueError(f"jacobian expects x of shape (B, D), got {tuple(x.shape)}.")
    with torch.enable_grad():
        x = x if create_graph and x.requires_grad else x.detach().requires_grad_(True)
        y = f(x)
        if y.shape != x.shape:
            raise ValueError(f"jacobian expects f to map (B, D) to (B, D), got {tuple(x.shape)} -> {tuple(y.shape)}.")
        rows = []
        for d in range(y.shape[1]):
            (row,) = torch.autograd.grad(y[:, d].sum(), x, retain_graph=True, create_graph=create_graph,
                                         allow_unused=True)
            rows.append(row if row is not None else torch.zeros_like(x))
    return torch.stack(rows, dim=1)


def log_prob_via_jacobian(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                          base_log_prob: Callable = standard_normal_log_prob) -> torch.Tensor:
    """log p(x) = log p_z(f(x)) + log |det ∂f/∂x| with a dense autograd Jacobian (slow, general)."""
    _, log_abs_det = torch.linalg.slogdet(jacobian(f, x))
    return base_log_prob(f(x)) + log_abs_det


def histogram_l1(samples: torch.Tensor, density: Callable[[torch.Tensor], torch.Tensor],
                 edges: torch.Tensor) -> float:
    """∫ |histogram − density| over the bins `edges`, the density read at the bin centres (midpoint rule).

    The histogram is normalised by the number of all samples (not only those inside the bins), so it
    estimates the true density on [edges[0], edges[-1]]; for a density that matches the samples the
    distance falls like 1/√n plus the binning error.
    """
    samples, edges = samples.detach().flatten().to(torch.float64), edges.detach().to(torch.float64)
    if edges.ndim != 1 or len(edges) < 2 or not torch.all(torch.diff(edges) > 0):
        raise ValueError("histogram_l1 needs increasing bin edges, a 1D tensor of at least two values.")
    widths = torch.diff(edges)
    hist = torch.histogram(samples, edges).hist / (samples.numel() * widths)
    centres = 0.5 * (edges[1:] + edges[:-1])
    return float(((hist - density(centres).to(torch.float64)).abs() * widths).sum())


def mass_on_grid(log_prob: Callable[[torch.Tensor], torch.Tensor], bounds=(-4.0, 4.0), n: int = 100) -> float:
    """∫ exp(log_prob(x)) dx over the square [bounds]², by the midpoint rule on n × n cells, for a 2D density.

    A normalised density with (almost) all its mass in the square gives ≈ 1. A "density" that forgot its
    log-det does not, although its NLL can look plausible; a likelihood gap means something only after this check.
    """
    lo, hi = float(bounds[0]), float(bounds[1])
    edges = torch.linspace(lo, hi, n + 1, dtype=torch.float64)
    centres = 0.5 * (edges[1:] + edges[:-1])
    gx, gy = torch.meshgrid(centres, centres, indexing="xy")
    pts = torch.stack([gx.ravel(), gy.ravel()], dim=1).to(torch.float32)
    values = log_prob(pts).detach().to("cpu", torch.float64).exp()
    return float(values.sum() * ((hi - lo) / n) ** 2)


class LikelihoodGap(NamedTuple):
    nll: float  # E_data[−log p_θ(x)] on the sample
    entropy: float  # E_data[−log p_data(x)] on the same sample
    kl: float  # nll − entropy: KL(p_data ‖ p_θ), estimated
    stderr: float  # standard error of `kl` (from the spread of the per-point log-ratios)


def likelihood_gap(model_log_prob: Callable, data_log_prob: Callable, x: torch.Tensor) -> LikelihoodGap:
    """The test NLL of a model against the data's entropy, on samples `x` of the data.

        NLL − H(p_data) = E_{p_data}[log p_data(x) − log p_θ(x)] = KL(p_data ‖ p_θ) ≥ 0,

    estimated by the mean over `x` of the per-point log-ratio. Both log-densities are taken on the same
    points, so the gap is much less noisy than either of its terms. Wrap the call in `torch.no_grad()`
    for a model that does not need autograd for its density.
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[0] < 2:
        raise ValueError("likelihood_gap needs at least two points of the data, a tensor (N, *D).")
    log_q = model_log_prob(x).detach().to(torch.float64).flatten()
    log_p = data_log_prob(x).detach().to(torch.float64).flatten()
    if log_q.shape != (x.shape[0],) or log_p.shape != (x.shape[0],):
        raise ValueError("Both log-densities must return one value per point, shape (N,).")
    ratio = log_p - log_q
    return LikelihoodGap(float(-log_q.mean()), float(-log_p.mean()), float(ratio.mean()),
                         float(ratio.std() / math.sqrt(len(ratio))))


def bits_per_dim(nll_nats: float, dim: int) -> float:
    """An NLL in nats per data point as bits per dimension: nll / (D ln 2), the unit of image models."""
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}.")
    return nll_nats / (dim * math.log(2))
