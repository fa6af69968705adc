import math

import pytest
import torch

from course_utils import data


@pytest.mark.parametrize("name", data.TOY_DATASETS)
def test_toy_sets_are_standardised_seeded_and_shaped(name):
    x = data.sample_toy(name, 50_000, generator=torch.Generator().manual_seed(0))
    assert x.shape == (50_000, 2) and x.dtype == torch.float32
    assert x.mean(0).abs().max() < 0.03
    assert (x.std(0) - 1).abs().max() < 0.03
    again = data.sample_toy(name, 10, generator=torch.Generator().manual_seed(5))
    assert torch.equal(again, data.sample_toy(name, 10, generator=torch.Generator().manual_seed(5)))
    assert not torch.equal(again, data.sample_toy(name, 10, generator=torch.Generator().manual_seed(6)))


def test_named_samplers_match_sample_toy():
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    assert torch.equal(data.eight_gaussians(7, generator=g()), data.sample_toy("8gaussians", 7, generator=g()))
    assert torch.equal(data.moons(7, generator=g()), data.sample_toy("moons", 7, generator=g()))


def test_eight_gaussians_have_eight_equal_modes():
    x = data.sample_toy("8gaussians", 40_000, generator=torch.Generator().manual_seed(0))
    angle = torch.atan2(x[:, 1], x[:, 0])
    k = torch.round(angle / (2 * math.pi / 8)) % 8
    counts = torch.bincount(k.long(), minlength=8).float() / len(k)
    assert (counts - 1 / 8).abs().max() < 0.01


def test_checkerboard_is_uniform_on_eight_squares_and_its_entropy():
    mean, std = data.standardisation("checkerboard")
    x = data.sample_toy("checkerboard", 40_000, generator=torch.Generator().manual_seed(0))
    raw = x * std + mean
    assert raw.min() >= -2 - 1e-4 and raw.max() <= 2 + 1e-4
    cell = torch.floor(raw).long() + 2  # 0..3 per axis
    black = (cell[:, 0] + cell[:, 1]) % 2
    assert black.unique().numel() == 1  # one colour of the board only
    # uniform on 8 squares of side 1 (raw): entropy log 8 in raw units, minus log|std| per axis
    assert data.checkerboard_entropy() == pytest.approx(math.log(8) - math.log(std[0] * std[1]), rel=1e-6)
    # the marginal std of a uniform on [-2, 2] is 4/sqrt(12)
    assert std.numpy() == pytest.approx([4 / math.sqrt(12)] * 2, rel=0.01)


def _kozachenko_leonenko_entropy(x: torch.Tensor) -> float:
    """Nearest-neighbour entropy estimate in 2D (k = 1), a density-free second route to H."""
    x = x.double()
    # distance to the nearest other point ([:, 0] is the point itself)
    nn = torch.cat([torch.cdist(c, x).topk(2, dim=1, largest=False).values[:, 1] for c in x.split(1000)])
    n = len(x)
    euler_gamma = 0.5772156649015329
    return (torch.digamma(torch.tensor(float(n))) + euler_gamma + math.log(math.pi) + 2 * nn.log().mean()).item()


def test_moons_log_prob_is_the_density_of_the_moons():
    # a density: mass 1 on a grid that holds the whole set
    xs = torch.linspace(-4, 4, 201, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), -1).reshape(-1, 2)
    p = data.moons_log_prob(pts).exp()
    assert (p.sum() * (xs[1] - xs[0]) ** 2).item() == pytest.approx(1.0, abs=1e-4)
    # the quadrature over angles has converged: 8 times finer angles change the density by < 3e-5
    # (about 1e-4 of its peak, 0.28)
    torch.testing.assert_close(data.moons_log_prob(pts[::7], n_angles=4000).exp(), p[::7], atol=3e-5, rtol=0)
    # the mass of each cell of a coarse grid matches the share of 200,000 samples in it
    x = data.moons(200_000, generator=torch.Generator().manual_seed(7)).double()
    edges = torch.linspace(-2.5, 2.5, 11, dtype=torch.float64)
    counts = torch.histogramdd(x, bins=[edges, edges]).hist / len(x)
    fine = torch.linspace(-2.5, 2.5, 301, dtype=torch.float64)
    centres = 0.5 * (fine[1:] + fine[:-1])
    grid = torch.stack(torch.meshgrid(centres, centres, indexing="ij"), -1).reshape(-1, 2)
    mass = (data.moons_log_prob(grid).exp() * (fine[1] - fine[0]) ** 2).reshape(10, 30, 10, 30).sum((1, 3))
    assert (mass - counts).abs().max().item() < 3e-3  # binomial noise per cell is at most 1.1e-3
    assert (mass - counts).abs().sum().item() < 0.02


def test_moons_entropy_floor_agrees_with_a_nearest_neighbour_estimate():
    x = data.moons(20_000, generator=torch.Generator().manual_seed(8))
    floor = -data.moons_log_prob(x).double().mean().item()
    assert floor == pytest.approx(_kozachenko_leonenko_entropy(x), abs=0.04)  # its noise: about 0.013
    # Gibbs: the true density beats a standard normal on its own data (the baseline log 2π + 1 on unit variance)
    assert floor < math.log(2 * math.pi) + 1 - 0.8


def test_moons_log_prob_keeps_dtype_and_refuses_bad_shapes():
    assert data.moons_log_prob(torch.zeros(3, 2)).dtype == torch.float32
    assert data.moons_log_prob(torch.zeros(3, 2, dtype=torch.float64)).shape == (3,)
    with pytest.raises(ValueError, match=r"shape \(B, 2\)"):
        data.moons_log_prob(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="n_angles"):
        data.moons_log_prob(torch.zeros(3, 2), n_angles=0)


def test_unknown_name_and_bad_n_are_clear_errors():
    with pytest.raises(ValueError, match="Unknown toy data set 'moon'.*moons"):
        data.sample_toy("moon", 10)
    with pytest.raises(ValueError, match="positive integer"):
        data.sample_toy("moons", 0)
