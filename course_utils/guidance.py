"""Guidance: steer a conditional sampler towards a label y.

Both wrappers are models themselves, called `guided(x, t, y)` with `t: (B,)`, so they go
straight into `solvers.sample(..., y=labels)` and every topic's entry point.

- `ClassifierFreeGuidance(model, scale)` (Ho & Salimans 2022): one network trained with
  labels dropped to ∅ predicts both m(x, t, ∅) and m(x, t, y);
      m̃ = (1 − ω) m(x, t, ∅) + ω m(x, t, y)         (`combine`)
  in one doubled batch. ∅ is the network's own `null_label`. It holds for any prediction
  that is affine in the score (ε, x̂, velocity), so diffusion and flow models share it.
  ω = 0 is the unconditional model, ω = 1 the conditional one, ω > 1 sharpens.
- `ClassifierGuidance(eps_model, log_prob, schedule, scale)` (Dhariwal & Nichol 2021, Alg. 2):
      ε̃ = ε̂(x, t) − ω σ_t ∇_x log p_φ(y | x, t),
  the ε of the score ∇log p_t(x) + ω ∇log p_φ(y | x_t): `log_prob(x, t, y) -> (B,)` is a
  noise-aware classifier's log-probability of y, σ_t comes from the schedule.
"""

from __future__ import annotations

import torch

from .tensors import append_dims


def combine(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """(1 − ω) · uncond + ω · cond."""
    return (1 - scale) * uncond + scale * cond


class ClassifierFreeGuidance:
    """`guided(x, t, y)`: the classifier-free guided prediction of a network with a `null_label`."""

    def __init__(self, model, scale: float):
        null = getattr(model, "null_label", None)
        if null is None:
            raise ValueError(f"{type(model).__name__} has no null label: classifier-free guidance needs a "
                             "network built with classes (num_classes=...) and trained with label dropout.")
        self.model, self.scale, self.null_label = model, float(scale), null

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return self.model(x, t, y)
        null = torch.full_like(y, self.null_label)
        if self.scale == 0.0:
            return self.model(x, t, null)
        both = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([null, y]))
        uncond, cond = both.chunk(2)
        return combine(uncond, cond, self.scale)


class ClassifierGuidance:
    """`guided(x, t, y)`: ε̃ = ε̂(x, t) − ω σ_t ∇_x log p_φ(y | x, t) for an unconditional ε-model."""

    def __init__(self, eps_model, log_prob, schedule, scale: float):
        self.eps_model, self.log_prob, self.schedule, self.scale = eps_model, log_prob, schedule, float(scale)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_prob(x_in, t, y).sum(), x_in)
        sigma_t = append_dims(self.schedule(t).sigma_t.to(x.dtype), x.ndim)
        return self.eps_model(x, t) - self.scale * sigma_t * grad


# --- conditioning by replacement in an orthonormal basis: super-resolution (notebook 07b) -----------

HAAR_2X2 = 0.5 * torch.tensor([[1.0, 1.0, 1.0, 1.0],     # the block mean, times 2
                               [1.0, -1.0, 1.0, -1.0],   # left − right
                               [1.0, 1.0, -1.0, -1.0],   # top − bottom
                               [1.0, -1.0, -1.0, 1.0]])  # one diagonal − the other
"""The 2×2 Haar transform: row k maps the pixels (top-left, top-right, bottom-left, bottom-right) of a
block to coordinate k. Its rows are orthonormal, H Hᵀ = I, so the transform keeps lengths and its
inverse is its transpose."""


def haar2x2(x: torch.Tensor) -> torch.Tensor:
    """The 2×2 Haar coordinates of every block: `x: (B, C, H, W)`, H and W even -> `(B, C, 4, H/2, W/2)`.

    Coordinate 0 is (a + b + c + d)/2 = 2 × the block mean; 1, 2, 3 are the details (see `HAAR_2X2`).
    """
    if x.ndim != 4 or x.shape[-2] % 2 or x.shape[-1] % 2:
        raise ValueError(f"haar2x2 takes images (B, C, H, W) with even H and W, got {tuple(x.shape)}.")
    b, c, h, w = x.shape
    blocks = torch.nn.functional.pixel_unshuffle(x, 2).reshape(b, c, 4, h // 2, w // 2)
    return torch.einsum("kp,bcphw->bckhw", HAAR_2X2.to(x), blocks)


def inverse_haar2x2(y: torch.Tensor) -> torch.Tensor:
    """The inverse of `haar2x2`, Hᵀ on every block: `(B, C, 4, h, w)` -> `(B, C, 2h, 2w)`."""
    if y.ndim != 5 or y.shape[2] != 4:
        raise ValueError(f"inverse_haar2x2 takes Haar coordinates (B, C, 4, h, w), got {tuple(y.shape)}.")
    b, c, _, h, w = y.shape
    blocks = torch.einsum("kp,bckhw->bcphw", HAAR_2X2.to(y), y).reshape(b, c * 4, h, w)
    return torch.nn.functional.pixel_shuffle(blocks, 2)


def block_means(x: torch.Tensor) -> torch.Tensor:
    """The mean of every 2×2 block, `(B, C, H, W)` -> `(B, C, H/2, W/2)`: the low-resolution image."""
    return torch.nn.functional.avg_pool2d(x, 2)


def keeps_block_means(x: torch.Tensor, x_low: torch.Tensor, atol: float = 1e-4) -> bool:
    """Whether the 2×2 block means of `x` equal the known low-resolution `x_low` (to `atol`)."""
    return bool((block_means(x) - x_low).abs().max() <= atol)


def upsample(x_low: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """The two usual 2× upsamplings of a low-resolution image: "nearest" (each block a flat square) or
    "bilinear". Nearest is `inverse_haar2x2` of the mean coordinates 2·x_low with every detail set to zero."""
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"Unknown upsampling {mode!r}: use nearest or bilinear.")
    if mode == "nearest":
        return torch.nn.functional.interpolate(x_low, scale_factor=2, mode="nearest")
    return torch.nn.functional.interpolate(x_low, scale_factor=2, mode="bilinear", align_corners=False)


def mse_per_image(images: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """Mean squared pixel error to the originals, one value per image: `(B, ...)` -> `(B,)`."""
    return (images - originals).pow(2).flatten(1).mean(1)


def beats_upsampling(x: torch.Tensor, x_high: torch.Tensor, factor: float = 0.5, share: float = 0.8) -> bool:
    """Whether the super-resolved `x` is closer to the originals `x_high` than upsampling their block means:
    its mean squared error below `factor` × the better of nearest and bilinear upsampling, and below
    nearest's for at least a fraction `share` of the images.

    Nearest upsampling keeps the block means and sets every detail coordinate to zero, so for any `x` with the
    right block means the error is the error of its details alone, and nearest's is the originals' detail energy:
    passing says the details drawn are mostly right, not merely present.
    """
    x_low = block_means(x_high)
    mse = mse_per_image(x, x_high)
    nearest, bilinear = (mse_per_image(upsample(x_low, mode), x_high) for mode in ("nearest", "bilinear"))
    return bool(mse.mean() < factor * min(nearest.mean(), bilinear.mean())
                and (mse < nearest).float().mean() >= share)
