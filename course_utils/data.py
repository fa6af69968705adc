"""Toy 2D data sets, the same in every notebook, and the MNIST entry point.

Every toy set is a function `sample(n, *, generator=None) -> (n, 2)` float32 tensor.
Each is standardised once, by a fixed affine map, to mean 0 and unit standard deviation
per coordinate (measured on 200,000 points drawn with seed 1234), so that a standard
normal is a sensible source for all of them and one plotting window, [-3.5, 3.5]², fits
them all.

    >>> x = sample_toy("moons", 512, generator=torch.Generator().manual_seed(0))

MNIST lives in `course_utils.mnist`; `load_mnist` is re-exported here.
`python -m course_utils download-mnist` fetches the full set (needs internet).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import torch

from .mnist import load_mnist  # noqa: F401  (re-exported: data.load_mnist)

PLOT_BOUNDS = (-3.5, 3.5)


def _uniform(n, generator):
    return torch.rand(n, generator=generator)


def _normal(*shape, generator):
    return torch.randn(*shape, generator=generator)


def _raw_moons(n, generator):
    """Two interleaving half circles (as scikit-learn's make_moons), Gaussian noise 0.1."""
    upper = torch.rand(n, generator=generator) < 0.5
    angle = math.pi * _uniform(n, generator)
    x = torch.where(upper, torch.cos(angle), 1.0 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    return torch.stack([x, y], dim=1) + 0.1 * _normal(n, 2, generator=generator)


def _raw_eight_gaussians(n, generator):
    """Eight Gaussians (std 0.1) evenly spaced on a circle of radius 2."""
    k = torch.randint(0, 8, (n,), generator=generator)
    angle = 2 * math.pi * k / 8
    centres = 2.0 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return centres + 0.1 * _normal(n, 2, generator=generator)


def _raw_checkerboard(n, generator):
    """Uniform density on the 8 black squares (side 1) of a 4x4 board on [-2, 2]²."""
    x1 = 4 * _uniform(n, generator) - 2
    x2 = _uniform(n, generator) - 2 * torch.randint(0, 2, (n,), generator=generator).float()
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], dim=1)


def _raw_spirals(n, generator):
    """Two interleaved spirals, small Gaussian noise."""
    r = torch.sqrt(_uniform(n, generator)) * 3 * math.pi
    arm = torch.randint(0, 2, (n,), generator=generator).float()
    sign = 1 - 2 * arm  # second arm is the first rotated by pi
    x = sign * -torch.cos(r) * r
    y = sign * torch.sin(r) * r
    return torch.stack([x, y], dim=1) + 0.3 * _normal(n, 2, generator=generator)


def _raw_rings(n, generator):
    """Four concentric circles of radii 1..4, points spread evenly by circumference."""
    radius = torch.randint(1, 5, (n,), generator=generator).float()
    angle = 2 * math.pi * _uniform(n, generator)
    pts = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return pts + 0.08 * _normal(n, 2, generator=generator)


def _raw_swissroll(n, generator):
    """The 2D swiss roll: t·(cos t, sin t) for t in [1.5π, 4.5π], noise 0.5."""
    t = 1.5 * math.pi * (1 + 2 * _uniform(n, generator))
    pts = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1)
    return pts + 0.5 * _normal(n, 2, generator=generator)


_RAW: dict[str, Callable] = {
    "moons": _raw_moons,
    "8gaussians": _raw_eight_gaussians,
    "checkerboard": _raw_checkerboard,
    "spirals": _raw_spirals,
    "rings": _raw_rings,
    "swissroll": _raw_swissroll,
}

TOY_DATASETS = tuple(_RAW)


@lru_cache(maxsize=None)
def standardisation(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed (mean, std) of a raw toy set, measured once on 200,000 seeded points."""
    raw = _RAW[_check_name(name)](200_000, torch.Generator().manual_seed(1234))
    return raw.mean(0), raw.std(0)


def _check_name(name: str) -> str:
    if name not in _RAW:
        raise ValueError(
            f"Unknown toy data set {name!r}: choose one of {', '.join(TOY_DATASETS)}."
        )
    return name


def sample_toy(name: str, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """`n` points of the toy set `name`, standardised, as an `(n, 2)` float32 tensor."""
    _check_name(name)
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"Number of samples must be a positive integer, got {n!r}.")
    mean, std = standardisation(name)
    return ((_RAW[name](n, generator) - mean) / std).float()


def _sampler(name):
    def sample(n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return sample_toy(name, n, generator=generator)

    sample.__name__ = name if name.isidentifier() else "eight_gaussians"
    sample.__doc__ = f"`n` standardised points of the {name!r} toy set, shape (n, 2)."
    return sample


moons = _sampler("moons")
eight_gaussians = _sampler("8gaussians")
checkerboard = _sampler("checkerboard")
spirals = _sampler("spirals")
rings = _sampler("rings")
swissroll = _sampler("swissroll")


def checkerboard_entropy() -> float:
    """Differential entropy (nats) of the standardised checkerboard: the floor of any NLL.

    The density is uniform on 8 squares of side 1/std per axis, so H = log(8 / (s1·s2)).
    """
    _, std = standardisation("checkerboard")
    return math.log(8.0 / float(std[0] * std[1]))


def moons_log_prob(x: torch.Tensor, *, n_angles: int = 500) -> torch.Tensor:
    """log p(x) of the standardised moons, x: (B, 2) -> (B,); minus its mean over data is the entropy floor.

    A raw point is a uniform angle θ ∈ [0, π] on one of two half circles (as in `_raw_moons`) plus
    N(0, 0.1² I) noise, so p_raw(r) = ½ Σ_moon (1/π) ∫ N(r; c_moon(θ), 0.1² I) dθ; the integral is the
    midpoint rule on `n_angles` angles (spacing π/n_angles, far below the noise). Standardising
    x = (r − mean)/std gives log p(x) = log p_raw(x·std + mean) + Σ log std.
    """
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"moons_log_prob expects points of shape (B, 2), got {tuple(x.shape)}.")
    if not isinstance(n_angles, int) or n_angles <= 0:
        raise ValueError(f"n_angles must be a positive integer, got {n_angles!r}.")
    mean, std = standardisation("moons")
    raw = x.detach().to("cpu", torch.float64) * std.double() + mean.double()
    theta = (torch.arange(n_angles, dtype=torch.float64) + 0.5) * math.pi / n_angles
    upper = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    lower = torch.stack([1 - torch.cos(theta), 0.5 - torch.sin(theta)], 1)
    centres = torch.cat([upper, lower])  # (2 n_angles, 2), equal weights
    noise = 0.1
    out = []
    for chunk in raw.split(4096):  # bounded memory: (4096, 2 n_angles) at a time
        log_normal = -torch.cdist(chunk, centres).pow(2) / (2 * noise**2) - math.log(2 * math.pi * noise**2)
        out.append(torch.logsumexp(log_normal, 1) - math.log(len(centres)))
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    return (torch.cat(out) + torch.log(std.double()).sum()).to(x.device, dtype)


def gaussian(n: int, *, dim: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
    """`n` draws from the standard normal source N(0, I) of dimension `dim`."""
    return torch.randn(n, dim, generator=generator)
