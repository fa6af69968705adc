"""Checks for notebook 10 (a DiT on MNIST)."""

from __future__ import annotations

import torch

from ..models import dit
from ._core import Case, Exercise, Mistake, randint
from .diffusion import guidance_exercise


# ---------------------------------------------------------------------------- patchify
def _patchify_inputs(gen):
    p = randint(2, 5, gen)
    b, c = randint(1, 4, gen), randint(2, 4, gen)  # C ≥ 2: with one channel every layout of a patch is the same
    h, w = p * randint(2, 5, gen), p * randint(2, 5, gen)
    return (torch.randn(b, c, h, w, generator=gen), p)


def _patches(order):
    """patchify with the axes of (B, C, H/p, p, W/p, p) permuted to `order` before the final reshape."""

    def patchify(x, p):
        b, c, h, w = x.shape
        return x.reshape(b, c, h // p, p, w // p, p).permute(*order).reshape(b, (h // p) * (w // p), p * p * c)

    return patchify


PATCHIFY = Exercise("patchify", dit.patchify, cases=[
    Case(_patchify_inputs, "random images"),
    Case(lambda gen: (torch.randn(2, 3, 8, 12, generator=gen), 4),
         "(2, 3, 8, 12) images in 4×4 patches, which dit.unpatchify must turn back into the images"),
], mistakes=[
    Mistake(_patches((0, 2, 4, 1, 3, 5)),
            "each patch is flattened as (C, p, p), channels first; the course's layout is (p, p, C): permute "
            "(B, C, H/p, p, W/p, p) to (B, H/p, W/p, p, p, C) before the last reshape."),
    Mistake(_patches((0, 4, 2, 3, 5, 1)),
            "the patches are listed column by column; list them row by row (row-major): the patch-row index "
            "H/p comes before the patch-column index W/p."),
    Mistake(_patches((0, 2, 4, 5, 3, 1)),
            "the pixels inside each patch are transposed (column-major); flatten each patch row by row: (p_row, "
            "p_col, C)."),
    Mistake(lambda x, p: x.reshape(x.shape[0], -1, p * p * x.shape[1]),
            "a reshape alone does not cut patches: it groups numbers that are consecutive in memory (along a "
            "row of pixels); reshape to (B, C, H/p, p, W/p, p) and permute the axes first."),
])


def check_patchify(student_fn) -> None:
    """patchify(x, p): (B, C, H, W) -> (B, (H/p)(W/p), p·p·C), patches row by row, each flattened as (p, p, C)."""
    PATCHIFY.check(student_fn)


# ---------------------------------------------------------------------------- adaLN modulation
def _modulate_inputs(gen, zero=False):
    b, n, d = (randint(2, 7, gen) for _ in range(3))
    x = torch.randn(b, n, d, generator=gen)
    shift, scale = torch.randn(b, d, generator=gen), torch.randn(b, d, generator=gen)
    return (x, 0 * shift, 0 * scale) if zero else (x, shift, scale)


MODULATE = Exercise("modulate", dit.modulate, cases=[
    Case(_modulate_inputs, "random tokens"),
    Case(lambda gen: _modulate_inputs(gen, zero=True),
         "zero shift and zero scale must return x unchanged (that is adaLN-Zero's start)"),
], mistakes=[
    Mistake(lambda x, shift, scale: x * scale.unsqueeze(1) + shift.unsqueeze(1),
            "it multiplies by scale; adaLN multiplies by (1 + scale), so that scale = 0 (adaLN-Zero's start) "
            "leaves x unchanged."),
    Mistake(lambda x, shift, scale: x * (1 + shift.unsqueeze(1)) + scale.unsqueeze(1),
            "shift and scale are swapped: x·(1 + scale) + shift."),
    Mistake(lambda x, shift, scale: (x + shift.unsqueeze(1)) * (1 + scale.unsqueeze(1)),
            "it shifts before scaling; scale first, then shift: x·(1 + scale) + shift."),
])


def check_modulate(student_fn) -> None:
    """modulate(x, shift, scale): x·(1 + scale) + shift with (B, d) shift/scale over (B, N, d) tokens."""
    MODULATE.check(student_fn)


# ---------------------------------------------------------------------------- guidance
def _velocity_pair(gen):
    b = randint(1, 5, gen)
    return (torch.randn(b, 1, 4, 4, generator=gen), torch.randn(b, 1, 4, 4, generator=gen))


GUIDED_VELOCITY = guidance_exercise("guided_velocity", "v", _velocity_pair)


def check_guided_velocity(student_fn) -> None:
    """guided_velocity(v_uncond, v_cond, w) = (1 − w)·v_uncond + w·v_cond."""
    GUIDED_VELOCITY.check(student_fn)


# ---------------------------------------------------------------------------- adaLN-Zero: the gate's gradient
def _gate_gradient(branch, grad_out, c):
    """∂L/∂W and ∂L/∂b of the gate rows α = W·SiLU(c) + b, for y = x + α ⊙ F (α broadcast over the tokens)."""
    d_alpha = (grad_out * branch).sum(1)  # ∂L/∂α, (B, d): the chain rule through y = x + α ⊙ F sums over tokens
    return d_alpha.T @ torch.nn.functional.silu(c), d_alpha.sum(0)


def _silu_slope(c):
    """d SiLU(c)/dc = sigmoid(c)·(1 + c·(1 − sigmoid(c)))."""
    s = torch.sigmoid(c)
    return s * (1 + c * (1 - s))


def _gate_gradient_through(features):
    """The gate gradient with SiLU(c) replaced by features(c) as the input the weights see."""

    def wrong(branch, grad_out, c):
        d_alpha = (grad_out * branch).sum(1)
        return d_alpha.T @ features(c), d_alpha.sum(0)

    return wrong


def _gate_inputs(gen, square=False):
    b, n, d = randint(2, 5, gen), randint(2, 7, gen), randint(3, 7, gen)
    d_c = d if square else d + randint(1, 4, gen)  # a condition width ≠ d: a transposed weight has the wrong shape
    return (torch.randn(b, n, d, generator=gen), torch.randn(b, n, d, generator=gen),
            torch.randn(b, d_c, generator=gen))


def _block_at_init(gen):
    """A fresh adaLN-Zero DiT block, its attention branch at init and ∂L/∂y for L = ‖y − target‖²."""
    with torch.random.fork_rng():  # building the block draws from the global generator: leave it as it was
        torch.manual_seed(randint(0, 2**30, gen))
        block = dit.DiTBlock(8, 2, 4.0, True)
    x, c = torch.randn(2, 5, 8, generator=gen), torch.randn(2, 8, generator=gen)
    target = torch.randn(2, 5, 8, generator=gen)
    with torch.no_grad():
        branch = block.attn(block.norm1(x))  # shift = scale = 0 at init: modulate(LN(x), 0, 0) = LN(x)
    return (branch, 2 * (x - target), c)  # at init y = x, so ∂L/∂y = 2(x − target)


GATE_GRADIENT = Exercise("gate_gradient", _gate_gradient, cases=[
    Case(_gate_inputs, "random branch outputs, upstream gradients and conditions"),
    Case(lambda gen: _gate_inputs(gen, square=True), "a condition as wide as the tokens, as in the DiT"),
    Case(_block_at_init, "the attention branch of a fresh adaLN-Zero block, L = ‖y − target‖²"),
], mistakes=[
    Mistake(lambda branch, grad_out, c: (torch.zeros(branch.shape[2], c.shape[1]), torch.zeros(branch.shape[2])),
            "it returns zeros, as if nothing could learn while the gates are 0; but ∂L/∂α does not contain α: "
            "y = x + α ⊙ F changes with α at the rate F, which is not zero. What vanishes at α = 0 are the "
            "gradients of the weights behind the gate."),
    Mistake(lambda branch, grad_out, c: _gate_gradient(torch.ones_like(branch), grad_out, c),
            "it forgets the branch's output: y = x + α ⊙ F changes with α at the rate ∂y/∂α = F, so F belongs "
            "in ∂L/∂α."),
    Mistake(_gate_gradient_through(lambda c: c),
            "it multiplies by c; the modulation layer is SiLU then Linear, so its weights see SiLU(c)."),
    Mistake(_gate_gradient_through(_silu_slope),
            "it multiplies by the slope of SiLU at c; that slope belongs in ∂L/∂c, not in ∂L/∂W. The weights see "
            "SiLU(c) itself: α = W·SiLU(c) + b changes with W at the rate SiLU(c)."),
    Mistake(lambda branch, grad_out, c: _gate_gradient(branch / branch.shape[1], grad_out, c),
            "it averages over the tokens; α is shared by the N tokens of an image, so their contributions add up: "
            "sum over the token axis."),
    Mistake(lambda branch, grad_out, c: _gate_gradient(branch / branch.shape[0], grad_out, c),
            "it averages over the batch; each image's α comes from the same W and b, so the gradients of the "
            "images add up: sum over the batch."),
    Mistake(lambda branch, grad_out, c: tuple(-g for g in _gate_gradient(branch, grad_out, c)),
            "it has the wrong sign: return the gradient ∂L/∂W, ∂L/∂b, not the descent direction."),
    Mistake(lambda branch, grad_out, c: tuple(g.T if g.ndim == 2 else g for g in _gate_gradient(branch, grad_out, c)),
            "the weight gradient is transposed: nn.Linear stores W as (out, in), so ∂L/∂W has one row per gate "
            "channel and one column per input channel of the modulation layer."),
])


def check_gate_gradient(student_fn) -> None:
    """gate_gradient(branch, grad_out, c) -> (∂L/∂W, ∂L/∂b) of the gate rows α = W·SiLU(c) + b, y = x + α ⊙ F."""
    GATE_GRADIENT.check(student_fn)
