"""course_utils.guidance: classifier-free guidance in one doubled batch, with the network's own ∅."""

import pytest
import torch

from course_utils import guidance
from course_utils.models import TimeMLP


class Recorder(torch.nn.Module):
    null_label = 4

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, y):
        self.calls.append(len(x))
        return x * (y[:, None].float() + 1) + t[:, None]


def test_cfg_is_one_doubled_call_with_the_null_label_and_the_right_combination():
    model = Recorder()
    x, t, y = torch.randn(3, 2), torch.rand(3), torch.tensor([0, 1, 2])
    out = guidance.ClassifierFreeGuidance(model, 2.5)(x, t, y)
    assert model.calls == [6]
    uncond, cond = model(x, t, torch.full_like(y, 4)), model(x, t, y)
    torch.testing.assert_close(out, uncond + 2.5 * (cond - uncond))
    assert not torch.allclose(out, cond)  # a no-op wrapper (ω ignored) fails the check
    model.calls.clear()
    torch.testing.assert_close(guidance.ClassifierFreeGuidance(model, 1.0)(x, t, y), cond)
    assert model.calls == [3]


def test_cfg_uses_the_network_null_label_and_refuses_unconditional_networks():
    net = TimeMLP(2, hidden=8, depth=1, num_classes=3)
    assert net.null_label == 3
    x, t = torch.randn(5, 2), torch.rand(5)
    torch.testing.assert_close(guidance.ClassifierFreeGuidance(net, 0.0)(x, t, torch.zeros(5, dtype=torch.long)),
                               net(x, t))  # y = None means ∅
    with pytest.raises(ValueError, match="no null label"):
        guidance.ClassifierFreeGuidance(TimeMLP(2, hidden=8, depth=1), 2.0)


# --- the 2×2 Haar transform and super-resolution by replacement (notebook 07b) -----------------------------

from course_utils import diffusion  # noqa: E402
from course_utils.exercises.inpainting import SUPERRES_MERGE, reference_superres_merge  # noqa: E402


def test_haar_matrix_is_orthonormal_and_the_transform_is_the_blockwise_formula():
    H = guidance.HAAR_2X2.double()
    torch.testing.assert_close(H @ H.T, torch.eye(4, dtype=torch.float64), rtol=0, atol=0)  # closed form: exact
    x = torch.randn(3, 2, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = guidance.haar2x2(x)
    assert y.shape == (3, 2, 4, 3, 4)
    a, b, c, d = x[..., ::2, ::2], x[..., ::2, 1::2], x[..., 1::2, ::2], x[..., 1::2, 1::2]  # the block's pixels
    for k, want in enumerate([(a + b + c + d) / 2, (a - b + c - d) / 2, (a + b - c - d) / 2, (a - b - c + d) / 2]):
        torch.testing.assert_close(y[:, :, k], want)
    torch.testing.assert_close(y[:, :, 0], 2 * guidance.block_means(x))  # the mean coordinate is 2 × the block mean


def test_haar_keeps_lengths_inverts_exactly_and_keeps_white_noise_white():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64, generator=gen)
    y = guidance.haar2x2(x)
    torch.testing.assert_close(y.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1))  # ‖Hx‖ = ‖x‖
    torch.testing.assert_close(guidance.inverse_haar2x2(y), x, rtol=0, atol=1e-14)  # H⁻¹ = Hᵀ
    torch.testing.assert_close(guidance.haar2x2(guidance.inverse_haar2x2(y)), y, rtol=0, atol=1e-14)
    x32 = torch.randn(4, 1, 28, 28, generator=gen)
    assert (guidance.inverse_haar2x2(guidance.haar2x2(x32)) - x32).abs().max() < 1e-6  # float32 precision

    noise = torch.randn(20_000, 1, 2, 2, dtype=torch.float64, generator=gen)  # one block per draw
    coords = guidance.haar2x2(noise).reshape(-1, 4)
    torch.testing.assert_close(torch.cov(coords.T), torch.eye(4, dtype=torch.float64), rtol=0, atol=0.03)
    plain_mean = guidance.block_means(noise).flatten()  # the average without the factor 2: not orthonormal
    assert abs(plain_mean.var().item() - 0.25) < 0.01  # its noise has variance 1/4, not 1


def _superresolve(diff, eps_fn, x_low, merge, steps, seed):
    """DDPM's ancestral steps with `merge` after each one: the loop of notebook 07b."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(x_low.shape[0], 1, 2 * x_low.shape[-2], 2 * x_low.shape[-1], generator=gen, dtype=x_low.dtype)
    times = diff.timesteps(steps)
    for t, s in zip(times[:-1], times[1:]):
        x = diff.ddpm_step(x, eps_fn(x, diff.schedule.tau(t).expand(len(x))), t, s, generator=gen)
        abar_s = diff.schedule.alphas_cumprod[s].to(x).expand(len(x))
        x = merge(x, x_low, abar_s, torch.randn(x_low.shape, generator=gen, dtype=x.dtype))
    return x


def test_superresolution_keeps_the_block_means_and_a_merge_that_does_nothing_does_not():
    diff = diffusion.GaussianDiffusion(diffusion.DiscreteSchedule.linear(50))

    def eps_fn(x, tau):  # the exact ε of N(0, 0.25 I) data; any ε-model would do, the constraint is the merge's
        abar = diff.abar(diff.schedule.step_index(tau), x)
        return (1 - abar).sqrt() * x / (0.25 * abar + 1 - abar)

    x_low = guidance.block_means(torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1)
    out = _superresolve(diff, eps_fn, x_low, reference_superres_merge, steps=10, seed=3)
    assert guidance.keeps_block_means(out, x_low)
    assert (guidance.block_means(out) - x_low).abs().max() < 1e-6
    nothing = _superresolve(diff, eps_fn, x_low, lambda x, low, a, eps: x, steps=10, seed=3)  # unconstrained samples
    assert not guidance.keeps_block_means(nothing, x_low)
    halved = _superresolve(diff, eps_fn, x_low, SUPERRES_MERGE.mistakes[0].wrong, steps=10, seed=3)  # no factor 2
    assert not guidance.keeps_block_means(halved, x_low)
    torch.testing.assert_close(guidance.block_means(halved), x_low / 2)


def test_haar_refuses_odd_sizes_and_wrong_layouts():
    with pytest.raises(ValueError, match="even"):
        guidance.haar2x2(torch.zeros(1, 1, 5, 4))
    with pytest.raises(ValueError, match="4"):
        guidance.inverse_haar2x2(torch.zeros(1, 1, 3, 2, 2))
