"""Checks for notebook 06 (Langevin and NCSN): a Langevin step, the geometric noise levels and annealed Langevin."""

from __future__ import annotations

import math

import torch

from ._core import Exercise, Mistake, randint, uniform


# ---------------------------------------------------------------------------- one Langevin step
def reference_langevin_step(x: torch.Tensor, score: torch.Tensor, step_size: float, noise: torch.Tensor):
    """One unadjusted Langevin step x + (α/2)·score + √α·noise, with α = `step_size`."""
    return x + 0.5 * step_size * score + math.sqrt(step_size) * noise


def _langevin_inputs(gen):
    b, d = randint(3, 9, gen), randint(1, 4, gen)
    x = torch.randn(b, d, generator=gen)
    score = torch.randn(b, d, generator=gen)
    step_size = uniform(0.05, 0.55, gen)
    noise = torch.randn(b, d, generator=gen)
    return (x, score, step_size, noise)


def _step(drift, noise_scale):
    """x + drift(α)·score + noise_scale(α)·noise: a Langevin step with other coefficients."""
    return lambda x, score, a, noise: x + drift(a) * score + noise_scale(a) * noise


LANGEVIN_STEP = Exercise("langevin_step", reference_langevin_step, _langevin_inputs, mistakes=[
    Mistake(_step(lambda a: a, math.sqrt),
            "the drift is α·score; the step moves by half the step size, "
            "(α/2)·score, so that with noise √α·noise it samples p exactly as α → 0."),
    Mistake(_step(lambda a: a, lambda a: math.sqrt(2 * a)),
            "this is the other convention, x + α·score + √(2α)·noise (step α for the drift); the course "
            "writes the step as x + (α/2)·score + √α·noise."),
    Mistake(_step(lambda a: a / 2, lambda a: a),
            "the noise is scaled by α; its variance is α, so scale it by √α."),
    Mistake(_step(lambda a: a / 2, lambda a: 0.0),
            "the noise term √α·noise is missing: without it this is gradient ascent on log p, which collapses "
            "onto a mode instead of sampling."),
    Mistake(_step(lambda a: -a / 2, math.sqrt),
            "the score term has the wrong sign: the step climbs the log-density, x + (α/2)·score."),
])


def check_langevin_step(student_fn) -> None:
    """langevin_step(x, score, step_size, noise) = x + (α/2)·score + √α·noise."""
    LANGEVIN_STEP.check(student_fn)


# ---------------------------------------------------------------------------- geometric noise levels
def reference_geometric_sigmas(sigma_max: float, sigma_min: float, n_levels: int) -> torch.Tensor:
    """σ_i = σ_max (σ_min/σ_max)^{i/(L−1)}, i = 0..L−1: (L,) float32, from σ_max down to σ_min."""
    frac = torch.linspace(0, 1, n_levels, dtype=torch.float64)
    return (sigma_max * (sigma_min / sigma_max) ** frac).float()


def _sigma_inputs(gen):
    sigma_min = uniform(0.01, 0.51, gen)
    sigma_max = sigma_min * uniform(2, 102, gen)
    return (sigma_max, sigma_min, randint(3, 15, gen))


GEOMETRIC_SIGMAS = Exercise("geometric_sigmas", reference_geometric_sigmas, _sigma_inputs, atol=1e-6, rtol=1e-4,
                            mistakes=[
    Mistake(lambda hi, lo, n: reference_geometric_sigmas(hi, lo, n).flip(0),
            "the levels increase from σ_min to σ_max; annealing starts at the largest noise: σ_max first, "
            "decreasing to σ_min."),
    Mistake(lambda hi, lo, n: torch.linspace(hi, lo, n),
            "the levels are equally spaced; geometric levels have a constant ratio σ_(i+1)/σ_i: "
            "σ_max·(σ_min/σ_max)^(i/(L−1)), e.g. torch.logspace or an exponent from torch.linspace(0, 1, L)."),
    Mistake(lambda hi, lo, n: (hi * (lo / hi) ** (torch.arange(n, dtype=torch.float64) / n)).float(),
            "the last level is not σ_min: the exponent is i/(L − 1) for i = 0..L − 1 (torch.linspace(0, 1, L)), "
            "not i/L."),
])


def check_geometric_sigmas(student_fn) -> None:
    """geometric_sigmas(sigma_max, sigma_min, n_levels): (L,) from σ_max down to σ_min, constant ratio."""
    GEOMETRIC_SIGMAS.check(student_fn)


# ---------------------------------------------------------------------------- annealed Langevin (Algorithm 1)
def reference_annealed_langevin(score, x: torch.Tensor, sigmas: torch.Tensor, n_steps_each: int,
                                step_size: float, generator: torch.Generator) -> torch.Tensor:
    """`course_utils.langevin.annealed_langevin(...).x`, run on a copy of `generator` (the student's draws the same z)."""
    from .. import langevin as lg

    copy = torch.Generator().set_state(generator.get_state())
    return lg.annealed_langevin(score, x, sigmas, n_steps_each=n_steps_each, step_size=step_size,
                                generator=copy).x


def _annealed(alpha=lambda eps, s, sigmas: eps * (s / sigmas[-1]) ** 2, drift=lambda a: a / 2,
              noise=lambda a: math.sqrt(a), order=lambda sigmas: sigmas, steps_outside=False, z_per_level=False):
    """Algorithm 1 with one piece changed: the step size, the drift or noise coefficient, the order of the levels,
    the two loops swapped (steps outside, levels inside), or one z drawn per level and reused for its T steps."""
    def run(score, x, sigmas, n_steps_each, step_size, generator):
        generator = torch.Generator().set_state(generator.get_state())  # a copy: the inputs are shared
        drawn = {}

        def step(x, s):
            a = float(alpha(step_size, s, sigmas))
            if z_per_level and float(s) in drawn:
                z = drawn[float(s)]
            else:
                z = drawn[float(s)] = torch.randn(x.shape, generator=generator)
            return x + drift(a) * score(x, s) + noise(a) * z
        if steps_outside:
            for _ in range(n_steps_each):
                for s in order(sigmas):
                    x = step(x, s)
            return x
        for s in order(sigmas):
            for _ in range(n_steps_each):
                x = step(x, s)
        return x
    return run


def _annealed_inputs(gen):
    from ..mixtures import GaussianMixture

    means = 8 * torch.rand(2, 2, generator=gen) - 4
    mix = GaussianMixture(means, [uniform(0.5, 1.5, gen), uniform(0.5, 1.5, gen)], [uniform(0.2, 0.8, gen), 0.5])
    sigma_min = uniform(0.3, 1.0, gen)
    sigmas = reference_geometric_sigmas(sigma_min * uniform(4, 12, gen), sigma_min, randint(3, 6, gen))
    x = float(sigmas[0]) * torch.randn(randint(4, 9, gen), 2, generator=gen)
    step_size = uniform(0.05, 0.5, gen) * float(sigmas[-1]) ** 2
    return (mix.marginal_score(), x, sigmas, randint(2, 5, gen), step_size,
            torch.Generator().manual_seed(randint(0, 2**30, gen)))


ANNEALED_LANGEVIN = Exercise("annealed_langevin", reference_annealed_langevin, _annealed_inputs,
                             atol=1e-4, rtol=1e-4, mistakes=[
    Mistake(_annealed(drift=lambda a: a),
            "the drift is α_i·score; each step moves by half the step size, (α_i/2)·s(x, σ_i), next to the noise "
            "√α_i·z."),
    Mistake(_annealed(drift=lambda a: a, noise=lambda a: math.sqrt(2 * a)),
            "this is the other convention, x + α_i·s + √(2α_i)·z; the course (and Song & Ermon's Algorithm 1) "
            "writes the step as x + (α_i/2)·s + √α_i·z."),
    Mistake(_annealed(noise=lambda a: math.sqrt(2 * a)),
            "the drift (α_i/2)·s and the noise √(2α_i)·z belong to two different conventions: with the drift "
            "(α_i/2)·s the noise is √α_i·z; mixed, the chain samples p^(1/2) (twice the temperature)."),
    Mistake(_annealed(noise=lambda a: 0.0),
            "the noise term √α_i·z is missing: that is annealed gradient ascent, which collapses onto modes."),
    Mistake(_annealed(alpha=lambda eps, s, sigmas: eps),
            "the step size is the same at every level; it must scale with the level, α_i = ε·σ_i²/σ_L², so that "
            "α_i/σ_i² is fixed."),
    Mistake(_annealed(alpha=lambda eps, s, sigmas: eps * s / sigmas[-1]),
            "the step size scales with σ_i; it scales with the variance, α_i = ε·σ_i²/σ_L²."),
    Mistake(_annealed(alpha=lambda eps, s, sigmas: eps * s**2),
            "the step size is ε·σ_i², without the division by σ_L²: ε is the step at the smallest level, "
            "α_i = ε·σ_i²/σ_L² (so that α_L = ε)."),
    Mistake(_annealed(alpha=lambda eps, s, sigmas: eps * (s / sigmas[0]) ** 2),
            "the step size is normalised by the largest level σ_1; ε is the step at the smallest level σ_L: "
            "α_i = ε·σ_i²/σ_L²."),
    Mistake(_annealed(order=lambda sigmas: sigmas.flip(0)),
            "the levels run from the smallest noise to the largest; annealing starts at σ_1 (the largest, "
            "`sigmas[0]`) and ends at σ_L."),
    Mistake(_annealed(steps_outside=True),
            "the loops are swapped: all T steps at one level come before moving to the next level (levels in the "
            "outer loop, steps in the inner one)."),
    Mistake(_annealed(z_per_level=True),
            "one z is drawn per level and reused for all its T steps; every step needs fresh noise, "
            "torch.randn(x.shape, generator=generator) inside the inner loop."),
])


def check_annealed_langevin(student_fn) -> None:
    """annealed_langevin(score, x, sigmas, n_steps_each, step_size, generator): Song & Ermon's Algorithm 1."""
    ANNEALED_LANGEVIN.check(student_fn)
