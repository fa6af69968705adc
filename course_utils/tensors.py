"""Shape and noise helpers that every module uses: one code path for `(B, 2)` points and `(B, C, H, W)` images."""

from __future__ import annotations

import numbers

import torch


def append_dims(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append singleton dims to `t: (B,)` so it broadcasts against a `(B, *D)` tensor of `ndim` dims."""
    if t.ndim > ndim:
        raise ValueError(f"Cannot broadcast a {t.ndim}-d tensor to {ndim} dims.")
    return t.reshape(*t.shape, *([1] * (ndim - t.ndim)))


def batch_time(t, x: torch.Tensor) -> torch.Tensor:
    """Time as a `(B,)` tensor on `x`'s device and dtype: a float or 0-d/1-element tensor is broadcast."""
    t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
    if t.ndim == 0 or t.numel() == 1:
        return t.reshape(()).expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(
            f"Time must be a scalar or have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}."
        )
    return t


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like `x`, drawn from `generator` (on its own device), moved to x's device."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


# --- the input check every network runs once at the top of `forward` -----------------------------

_NO_TIME = object()
_CAST = {torch.float64: "double", torch.float32: "float", torch.float16: "half", torch.bfloat16: "bfloat16"}


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def _cast(dtype: torch.dtype) -> str:
    return f"{_CAST[dtype]}()" if dtype in _CAST else f"to({dtype})"


def check_input(network: str, x, t=_NO_TIME, *, shape: tuple, like: torch.Tensor, what: str = "x",
                note: str = ""):
    """The one input check of the course's networks: `x` is `(B, *shape)` with B ≥ 1 and the dtype of
    the weights (`like`, one of the network's parameters), `t` a scalar or `(B,)` floats.

    `shape` lists the sizes after the batch dimension, `None` for "any"; `note` is appended to
    the expected shape in the message (e.g. "with H, W divisible by 4"). Returns `t` as `(B,)`
    on x's device and dtype (`batch_time`), or None when no `t` is passed (a classifier).
    Plain Python on shapes and dtypes: it never reads a tensor's values, so it costs no device
    sync and traces into one graph under `torch.compile`. (Labels are checked by `LabelEmbedding`.)
    """
    names = ("C", "H", "W") if len(shape) == 3 else ("D",) * len(shape)
    expected = "(B, " + ", ".join(n if s is None else str(s) for n, s in zip(names, shape)) + ")"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{network} expects {what} as a tensor of shape {expected}{note}, got {type(x).__name__}.")
    if x.ndim != len(shape) + 1 or any(s is not None and n != s for n, s in zip(x.shape[1:], shape)):
        raise ValueError(f"{network} expects {what} of shape {expected}{note}, got {tuple(x.shape)}.")
    if x.shape[0] == 0:
        raise ValueError(f"{network} got an empty batch ({what} of shape {tuple(x.shape)}): pass at least one item.")
    if x.dtype != like.dtype:
        if not x.is_floating_point():
            pixels = " (0..255 pixels: x.float() / 127.5 - 1)" if len(shape) == 3 else ""
            raise ValueError(f"{network}: x is {x.dtype} but the network's weights are {like.dtype}: "
                             f"call x.{_cast(like.dtype)}{pixels}.")
        if not _autocast_on(x.device.type):  # autocast casts inputs and weights itself
            raise ValueError(f"{network}: x is {x.dtype} but the network's weights are {like.dtype}: "
                             f"call model.{_cast(x.dtype)} or x.{_cast(like.dtype)}.")
    if t is _NO_TIME:
        return None
    if isinstance(t, torch.Tensor):
        if not t.is_floating_point():
            raise ValueError(f"{network}: t is a {t.dtype} tensor, but the networks take times in [0, 1] as "
                             "floats: for integer diffusion steps pass t / T.")
        if t.numel() != 1 and t.shape != (x.shape[0],):
            raise ValueError(f"{network}: t must be a scalar or have shape (B,) = ({x.shape[0]},), "
                             f"got {tuple(t.shape)}.")
    elif not isinstance(t, numbers.Real) or isinstance(t, bool):
        raise TypeError(f"{network}: t must be a float or a (B,) tensor of times in [0, 1], got {type(t).__name__}.")
    return batch_time(t, x)
