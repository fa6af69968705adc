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


def test_nearest_upsampling_is_the_haar_answer_with_every_detail_zero():
    """Two ways to the same image: interpolate's nearest upsampling, and Hᵀ of (2·x_low, 0, 0, 0) on every block.
    So nearest's squared error is the originals' detail energy, ‖(u₁, u₂, u₃)‖² per block."""
    x = torch.rand(5, 1, 8, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 2 - 1
    u = guidance.haar2x2(x)
    zero_details = guidance.inverse_haar2x2(torch.cat([u[:, :, :1], torch.zeros_like(u[:, :, 1:])], dim=2))
    nearest = guidance.upsample(guidance.block_means(x), "nearest")
    torch.testing.assert_close(nearest, zero_details)
    torch.testing.assert_close(guidance.mse_per_image(nearest, x), u[:, :, 1:].pow(2).flatten(1).sum(1) / (8 * 6))
    with pytest.raises(ValueError, match="nearest or bilinear"):
        guidance.upsample(x, "bicubic")


def test_beats_upsampling_passes_good_details_and_fails_upsampling_and_random_details():
    """The notebook's headline check on super-resolution, and its negative controls: nearest and bilinear
    upsampling of the block means, and the right block means with another image's details (details present, but
    wrong) all fail; the originals and details that are mostly right pass."""
    gen = torch.Generator().manual_seed(5)
    x_high = torch.rand(16, 1, 8, 8, generator=gen) * 2 - 1
    x_low = guidance.block_means(x_high)
    u = guidance.haar2x2(x_high)

    def with_details(details):
        return guidance.inverse_haar2x2(torch.cat([u[:, :, :1], details], dim=2))

    assert guidance.beats_upsampling(x_high, x_high)
    assert guidance.beats_upsampling(with_details(0.7 * u[:, :, 1:] + 0.2 * torch.randn(u[:, :, 1:].shape,
                                                                                         generator=gen)), x_high)
    assert not guidance.beats_upsampling(guidance.upsample(x_low, "nearest"), x_high)
    assert not guidance.beats_upsampling(guidance.upsample(x_low, "bilinear"), x_high)
    shuffled = with_details(u[torch.randperm(16, generator=gen), :, 1:])  # block means right, details another's
    assert guidance.keeps_block_means(shuffled, x_low) and not guidance.beats_upsampling(shuffled, x_high)


def test_superres_check_explains_an_abar_that_is_not_reshaped():
    from course_utils.exercises import ExerciseError

    def unreshaped(x_generated, x_low, abar_s, eps):  # ᾱ_s of shape (B,) against images (B, 1, h, w)
        known = abar_s.sqrt() * 2 * x_low + (1 - abar_s).sqrt() * eps
        u = guidance.haar2x2(x_generated)
        return guidance.inverse_haar2x2(torch.cat([known.unsqueeze(2), u[:, :, 1:]], dim=2))

    for seed in range(4):
        with pytest.raises(ExerciseError, match=r"\(B, 1, 1, 1\)"):
            SUPERRES_MERGE.check(unreshaped, seed=seed, quiet=True)


def _replacement_inpaint(rho, x_known, n, seed, T=100, merge=True):
    """Inpainting by replacement on 2-pixel Gaussian data N(0, [[1, ρ], [ρ, 1]]) with its exact ε: pixel 0
    known, pixel 1 filled in by DDPM's ancestral steps, the known pixel re-noised to each level (notebook 07b)."""
    from course_utils.exercises.inpainting import reference_inpaint_merge

    diff = diffusion.GaussianDiffusion(diffusion.DiscreteSchedule.linear(T))
    cov = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64)
    mask = torch.tensor([1.0, 0.0], dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)

    def eps_fn(x, tau):  # E[ε | x_t] = √(1 − ᾱ) Σ_t⁻¹ x_t with Σ_t = ᾱ Σ + (1 − ᾱ) I
        abar = diff.schedule.alphas_cumprod[diff.schedule.step_index(tau[:1])].item()
        cov_t = abar * cov + (1 - abar) * torch.eye(2, dtype=torch.float64)
        return (1 - abar) ** 0.5 * x @ torch.linalg.inv(cov_t).T

    x = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    times = diff.timesteps()
    for t, s in zip(times[:-1], times[1:]):
        x = diff.ddpm_step(x, eps_fn(x, diff.schedule.tau(t).expand(n)), t, s, generator=gen)
        abar_s = diff.schedule.alphas_cumprod[s]
        known = abar_s.sqrt() * x_known + (1 - abar_s).sqrt() * torch.randn(n, 2, generator=gen, dtype=torch.float64)
        x = reference_inpaint_merge(x, known, mask) if merge else x
    return x


def test_inpainting_by_replacement_is_only_approximately_the_conditional():
    """Closed form against numerics: for correlated Gaussian pixels the exact conditional of the unknown pixel
    given the known one, x_k = 1.5, is N(ρ x_k, 1 − ρ²). Replacement with the *exact* ε misses it, in mean and
    in variance, by far more than the sampling error: the known pixel is re-noised independently of the path,
    so the unknown one is steered by a noisy copy of it. The control: with independent pixels (ρ = 0) there is
    nothing to steer, and pixel 1 comes out as the same sampler draws it with no merge at all (N(0, 1) up to
    the sampler's own discretisation error, which is much smaller than the miss)."""
    n, x_known = 4000, 1.5
    out = _replacement_inpaint(0.9, x_known, n, seed=0)
    assert torch.equal(out[:, 0], torch.full((n,), x_known, dtype=torch.float64))  # the known pixel is kept exactly
    mean, var = out[:, 1].mean().item(), out[:, 1].var().item()
    exact_mean, exact_var = 0.9 * x_known, 1 - 0.9**2
    assert exact_mean - mean > 0.3  # standard error of the mean: about 0.01
    assert var > 1.3 * exact_var  # standard error of the variance: about 0.007
    independent = _replacement_inpaint(0.0, x_known, n, seed=1)[:, 1]
    plain = _replacement_inpaint(0.0, x_known, n, seed=2, merge=False)[:, 1]
    assert abs(independent.mean().item()) < 0.05 and abs(independent.var().item() - plain.var().item()) < 0.07
    assert abs(plain.var().item() - 1) < 0.1  # the sampler itself: N(0, 1) up to its discretisation error
