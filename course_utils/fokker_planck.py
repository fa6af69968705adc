"""Fokker–Planck and continuity equations on a grid: the marginals of an SDE, numerically.

For dx = f(x, t) dt + g(t) dW the density p_t obeys the Fokker–Planck equation

    ∂p/∂t = −∇·(f p) + ½ g² Δp = −∇·J,      J = f p − D ∇p,   D = ½ g²,

and for g = 0 the continuity equation ∂p/∂t = −∇·(f p) of an ODE.

`solve` discretises it by finite volumes on a `Grid` of cells of side Δx (1D or 2D):
the flux J through each face between two neighbouring cells, none through the outer
boundary, so the total mass Σ p Δx^d is conserved exactly (the flux differences
telescope). The face flux is Scharfetter–Gummel's exponentially fitted one,

    J_{i+½} = f p_i + (D/Δx) B(f Δx / D) (p_i − p_{i+1}),   B(z) = z / (e^z − 1),

which is central differencing where diffusion dominates, upwinding where drift does
(and exactly upwind for D = 0), and keeps p ≥ 0 (Scharfetter & Gummel 1969; Chang &
Cooper 1970). Time steps are explicit Euler, sized for positivity/stability.

Densities on a grid are tensors of shape `grid.shape` = (n,) or (n, n), indexed [i, j]
↔ (x_i, y_j) at the cell centres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Grid:
    """n cells per axis on [lo, hi]^dim; cell centres lo + (i + ½) Δx."""

    bounds: tuple[float, float] = (-3.5, 3.5)
    n: int = 100
    dim: int = 1

    def __post_init__(self):
        lo, hi = self.bounds
        if not hi > lo:
            raise ValueError(f"Grid bounds must satisfy lo < hi, got {self.bounds}.")
        if self.n < 2 or self.dim not in (1, 2, 3):
            raise ValueError(f"A grid needs n >= 2 cells per axis and dim 1, 2 or 3, got n={self.n}, dim={self.dim}.")

    @property
    def dx(self) -> float:
        return (self.bounds[1] - self.bounds[0]) / self.n

    @property
    def cell_volume(self) -> float:
        return self.dx**self.dim

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n,) * self.dim

    def centres(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """Cell centres along one axis, shape (n,)."""
        return self.bounds[0] + (torch.arange(self.n, dtype=dtype, device=device) + 0.5) * self.dx

    def points(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """All cell centres, shape (n^dim, dim), in the order of `p.reshape(-1)`."""
        axes = torch.meshgrid(*[self.centres(dtype, device)] * self.dim, indexing="ij")
        return torch.stack([a.reshape(-1) for a in axes], dim=1)

    def evaluate(self, fn: Callable[[torch.Tensor], torch.Tensor], dtype=torch.float64, device=None) -> torch.Tensor:
        """`fn(points) -> (M,)` laid out on the grid, shape `grid.shape`."""
        return fn(self.points(dtype, device)).reshape(self.shape)

    def coarsen(self, factor: int) -> "Grid":
        """The grid with `factor`^dim cells merged into one."""
        if factor < 1 or self.n % factor:
            raise ValueError(f"Cannot merge cells by {factor}: it must divide n = {self.n}.")
        return Grid(self.bounds, self.n // factor, self.dim)


def _check_density(p: torch.Tensor, grid: Grid, name: str = "p"):
    if tuple(p.shape[-grid.dim:]) != grid.shape:
        raise ValueError(f"{name} must end in the grid's shape {grid.shape}, got {tuple(p.shape)}.")


def mass(p: torch.Tensor, grid: Grid) -> torch.Tensor:
    """∫ p ≈ Σ p Δx^d (over the last `dim` axes)."""
    _check_density(p, grid)
    return p.flatten(-grid.dim).sum(-1) * grid.cell_volume


def total_variation(p: torch.Tensor, q: torch.Tensor, grid: Grid) -> torch.Tensor:
    """TV(p, q) = ½ ∫ |p − q| ∈ [0, 1] for densities on the grid."""
    return 0.5 * mass((p - q).abs(), grid)


def coarsen(p: torch.Tensor, grid: Grid, factor: int) -> torch.Tensor:
    """Average a density over blocks of `factor`^dim cells: a density on `grid.coarsen(factor)`."""
    _check_density(p, grid)
    coarse = grid.coarsen(factor)
    lead = p.shape[: p.ndim - grid.dim]
    blocks = p.reshape(*lead, *[s for _ in range(grid.dim) for s in (coarse.n, factor)])
    return blocks.mean(dim=tuple(p.ndim - grid.dim + 2 * k + 1 for k in range(grid.dim)))


def histogram(x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Density histogram of samples `x: (N, dim)` on the grid's cells (points outside are dropped,
    but still counted in N, so the result integrates to the fraction inside)."""
    if x.ndim != 2 or x.shape[1] != grid.dim:
        raise ValueError(f"Samples must have shape (N, {grid.dim}), got {tuple(x.shape)}.")
    idx = torch.floor((x.detach() - grid.bounds[0]) / grid.dx).long()
    inside = ((idx >= 0) & (idx < grid.n)).all(1)
    flat = torch.zeros_like(idx[:, 0])
    for k in range(grid.dim):
        flat = flat * grid.n + idx[:, k]
    counts = torch.bincount(flat[inside], minlength=grid.n**grid.dim)
    return (counts.double() / (x.shape[0] * grid.cell_volume)).reshape(grid.shape)


def histogram_tv(x: torch.Tensor, p: torch.Tensor, grid: Grid, factor: int = 4) -> torch.Tensor:
    """TV between samples `x: (N, dim)` and a grid density `p`, on cells of `factor`^dim grid cells:
    TV(histogram(x), coarsen(p)). The comparison of simulated paths with a Fokker–Planck solution;
    a histogram of N exact draws sits at a floor of order √(cells / N)."""
    coarse = grid.coarsen(factor)
    return total_variation(histogram(x.detach().cpu().to(p.dtype), coarse), coarsen(p, grid, factor), coarse)


def gibbs_density(potential: Callable[[torch.Tensor], torch.Tensor], beta: float, grid: Grid) -> torch.Tensor:
    """p ∝ exp(−β U), normalised on the grid: the stationary density of dx = −∇U dt + √(2/β) dW.

    `potential(points: (M, dim)) -> (M,)`.
    """
    if beta <= 0:
        raise ValueError(f"The inverse temperature beta must be positive, got {beta}.")
    log_p = -beta * grid.evaluate(potential)
    return torch.exp(log_p - torch.logsumexp(log_p.reshape(-1), 0) - math.log(grid.cell_volume))


# ---------------------------------------------------------------------------- the solver
def _bernoulli(z: torch.Tensor) -> torch.Tensor:
    """B(z) = z / (e^z − 1), with B(0) = 1; B(+∞) = 0, B(−∞) ~ −z."""
    return torch.where(z == 0, torch.ones_like(z), z / torch.expm1(z))


def wall_coefficients(f: torch.Tensor, D: float, dx: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) ≥ 0 with J = a p_l − b p_r: a = f + c, b = c, c = (D/Δx) B(fΔx/D) (Scharfetter–Gummel).

    D = 0 gives upwinding: c = max(−f, 0), so J = f p_l if f > 0 and f p_r if f < 0.
    """
    c = D / dx * _bernoulli(f * dx / D) if D > 0 else (-f).clamp_min(0)
    return f + c, c


def face_flux(f: torch.Tensor, D: float, p_left: torch.Tensor, p_right: torch.Tensor, dx: float) -> torch.Tensor:
    """Scharfetter–Gummel flux J = f p_l + (D/Δx) B(fΔx/D)(p_l − p_r) through a wall."""
    a, b = wall_coefficients(f, D, dx)
    return a * p_left - b * p_right


def _face_points(grid: Grid, axis: int, dtype, device):
    """Centres of the interior faces normal to `axis`: (M, dim) points and their grid shape."""
    c = grid.centres(dtype, device)
    coords = [c] * grid.dim
    coords[axis] = c[:-1] + 0.5 * grid.dx
    mesh = torch.meshgrid(*coords, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=1), mesh[0].shape


def _coefficients(t: float, drift, diffusion, grid: Grid, faces, dtype, device):
    """Wall coefficients (a, b) per axis at time t, and the largest stable explicit step."""
    t_vec = torch.full((1,), float(t), dtype=dtype, device=device)
    g = diffusion(t_vec) if callable(diffusion) else diffusion
    D = 0.5 * float(torch.as_tensor(g).reshape(-1)[0]) ** 2
    coeffs, rate = [], grid.dim * 2 * D / grid.dx**2
    for k, (pts, shape) in enumerate(faces):
        f = drift(pts, t_vec.expand(pts.shape[0]))[:, k].reshape(shape).to(dtype)
        coeffs.append(wall_coefficients(f, D, grid.dx))
        rate = rate + 2 * float(f.abs().max()) / grid.dx
    return coeffs, (1.0 / rate if rate > 0 else math.inf)


def _divergence(p: torch.Tensor, coeffs, grid: Grid) -> torch.Tensor:
    """−∇·J for J = a p_l − b p_r at the interior walls and J = 0 at the boundary."""
    n, dp = grid.n, 0.0
    for k, (a, b) in enumerate(coeffs):
        J = a * p.narrow(k, 0, n - 1) - b * p.narrow(k, 1, n - 1)
        J = F.pad(J, [0, 0] * (grid.dim - 1 - k) + [1, 1])  # no flux through the boundary
        dp = dp - torch.diff(J, dim=k) / grid.dx
    return dp


def rhs(p: torch.Tensor, t: float, drift, diffusion, grid: Grid):
    """∂p/∂t = −∇·J on the grid, and the largest stable explicit step for it.

    `drift(x: (M, dim), t: (M,)) -> (M, dim)`; `diffusion(t: (1,)) -> g` (or a number).
    """
    faces = [_face_points(grid, k, p.dtype, p.device) for k in range(grid.dim)]
    coeffs, dt_max = _coefficients(t, drift, diffusion, grid, faces, p.dtype, p.device)
    return _divergence(p, coeffs, grid), dt_max


@dataclass
class FPSolution:
    t: torch.Tensor  # (T,) the requested times
    p: torch.Tensor  # (T, *grid.shape) densities at those times
    mass: torch.Tensor  # (T,) ∫ p at those times
    steps: int  # explicit steps taken


def solve(drift, diffusion, p0: torch.Tensor, grid: Grid, times, *, time_homogeneous: bool = False,
          cfl: float = 0.9, max_steps: int = 1_000_000) -> FPSolution:
    """Evolve the density `p0` (shape `grid.shape`) by ∂p/∂t = −∇·(f p) + ½ g² Δp.

    `times`: increasing output times, the first one being the time of `p0`. Steps are
    explicit Euler of size ≤ `cfl` × the positivity limit 1 / Σ_k (2D/Δx² + 2 max|f_k|/Δx).
    `time_homogeneous=True` (f and g do not depend on t) computes the wall coefficients once.
    Use float64 densities; pass `diffusion=0.0` for the continuity equation.
    """
    _check_density(p0, grid, "p0")
    if p0.ndim != grid.dim:
        raise ValueError(f"p0 must be one density of shape {grid.shape}, got {tuple(p0.shape)}.")
    times = [float(s) for s in torch.as_tensor(times).reshape(-1)]
    if any(b <= a for a, b in zip(times, times[1:])):
        raise ValueError(f"times must be strictly increasing, got {times}.")
    if not 0 < cfl <= 1:
        raise ValueError(f"cfl must lie in (0, 1], got {cfl}.")
    faces = [_face_points(grid, k, p0.dtype, p0.device) for k in range(grid.dim)]
    coefficients = lambda t: _coefficients(t, drift, diffusion, grid, faces, p0.dtype, p0.device)
    fixed = coefficients(times[0]) if time_homogeneous else None
    p, t, steps, out = p0.clone(), times[0], 0, [p0.clone()]
    for t_next in times[1:]:
        while t < t_next - 1e-12:
            coeffs, dt_max = fixed or coefficients(t)
            dt = min(cfl * dt_max, t_next - t)
            p, t, steps = p + dt * _divergence(p, coeffs, grid), t + dt, steps + 1
            if steps > max_steps:
                raise RuntimeError(f"More than {max_steps} steps: refine the time span or coarsen the grid.")
        out.append(p.clone())
    ps = torch.stack(out)
    return FPSolution(torch.tensor(times, dtype=p0.dtype, device=p0.device), ps, mass(ps, grid), steps)
