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
