"""Plotting helpers so that the same thing looks the same in every notebook.

Colours: data is blue, noise (the source) is grey, model samples are orange, everywhere.
Every helper draws on a given `ax`, sets a title and axis labels, and returns the ax.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .data import PLOT_BOUNDS

COLORS = {"data": "#1f77b4", "noise": "#7f7f7f", "model": "#ff7f0e", "trajectory": "#2ca02c"}


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def _finish(ax, title, xlabel="$x_1$", ylabel="$x_2$", bounds=PLOT_BOUNDS, square=True):
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if bounds is not None:
        ax.set_xlim(*bounds)
        ax.set_ylim(*bounds)
    if square:
        ax.set_aspect("equal")
    return ax


def subplots(ncols: int = 1, nrows: int = 1, size: float = 3.6, **kw):
    """A row (or grid) of square panels; returns (fig, axes as a flat array)."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False, **kw)
    return fig, axes.ravel()


def scatter(ax, x, kind: str = "data", title: str | None = None, *, s: float = 2.0,
            alpha: float = 0.5, label: str | None = None, bounds=PLOT_BOUNDS):
    """Scatter `x: (N, 2)` in the course colour of `kind` ('data', 'noise' or 'model')."""
    if kind not in COLORS:
        raise ValueError(f"Unknown kind {kind!r}: use one of {', '.join(COLORS)}.")
    pts = _np(x)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"scatter expects points of shape (N, 2), got {pts.shape}.")
    ax.scatter(pts[:, 0], pts[:, 1], s=s, alpha=alpha, color=COLORS[kind], label=label or kind,
               rasterized=True)
    return _finish(ax, title or kind, bounds=bounds)


def grid_points(bounds=PLOT_BOUNDS, n: int = 100) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A square grid: returns (points (n*n, 2), xs (n,), ys (n,))."""
    xs = torch.linspace(bounds[0], bounds[1], n)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    return torch.stack([gx.ravel(), gy.ravel()], dim=1), xs, xs


def density(ax, log_prob, title: str = "model density", *, bounds=PLOT_BOUNDS, n: int = 100,
            log: bool = False, cmap: str = "viridis"):
    """Heat map of p(x) (or log p(x) if `log`) for a callable `log_prob((M, 2)) -> (M,)`."""
    pts, xs, ys = grid_points(bounds, n)
    values = _np(log_prob(pts)).reshape(n, n)
    img = values if log else np.exp(values)
    ax.pcolormesh(_np(xs), _np(ys), img, cmap=cmap, shading="auto", rasterized=True)
    return _finish(ax, title, bounds=bounds)


def trajectories(ax, traj, title: str = "trajectories", *, n_show: int = 200, bounds=PLOT_BOUNDS,
                 alpha: float = 0.3):
    """Paths `traj: (T, N, 2)`: start points grey (noise), end points orange, paths green."""
    path = _np(traj)
    if path.ndim != 3 or path.shape[2] != 2:
        raise ValueError(f"trajectories expects shape (T, N, 2), got {path.shape}.")
    path = path[:, :n_show]
    ax.plot(path[:, :, 0], path[:, :, 1], color=COLORS["trajectory"], alpha=alpha, lw=0.6)
    ax.scatter(path[0, :, 0], path[0, :, 1], s=3, color=COLORS["noise"], label="start")
    ax.scatter(path[-1, :, 0], path[-1, :, 1], s=3, color=COLORS["model"], label="end")
    return _finish(ax, title, bounds=bounds)


def vector_field(ax, field, title: str = "vector field", *, bounds=PLOT_BOUNDS, n: int = 20):
    """Quiver plot of a callable `field((M, 2)) -> (M, 2)`."""
    pts, xs, ys = grid_points(bounds, n)
    vec = _np(field(pts))
    ax.quiver(_np(pts[:, 0]), _np(pts[:, 1]), vec[:, 0], vec[:, 1], np.hypot(vec[:, 0], vec[:, 1]),
              cmap="magma", angles="xy")
    return _finish(ax, title, bounds=bounds)


def image_grid(ax, images, title: str = "samples", *, nrow: int | None = None, pad_value: float = -1.0,
               row_labels=None):
    """Tile `images: (B, 1, H, W)` in [-1, 1] into one grey image, `nrow` images per row.

    Each tile has a one-pixel frame of `pad_value` (−1, black, by default; a grey such as 0.2
    makes the frames visible on black backgrounds). `row_labels` names the rows on the y axis."""
    imgs = _np(images)
    if imgs.ndim != 4 or imgs.shape[1] != 1:
        raise ValueError(f"image_grid expects (B, 1, H, W), got {imgs.shape}.")
    b, _, h, w = imgs.shape
    nrow = nrow or int(np.ceil(np.sqrt(b)))
    ncol = int(np.ceil(b / nrow))
    tiles = np.full((ncol * nrow, h + 2, w + 2), float(pad_value))
    tiles[:b, 1:-1, 1:-1] = imgs[:, 0]
    canvas = tiles.reshape(ncol, nrow, h + 2, w + 2).transpose(0, 2, 1, 3).reshape(ncol * (h + 2), -1)
    ax.imshow(np.clip(canvas, -1, 1), cmap="gray", vmin=-1, vmax=1)
    ax.set_xticks([])
    if row_labels is not None:
        if len(row_labels) != ncol:
            raise ValueError(f"row_labels has {len(row_labels)} names for {ncol} rows of images.")
        ax.set_yticks([(h + 2) * (i + 0.5) for i in range(ncol)], list(row_labels))
        ax.tick_params(axis="y", length=0)
    else:
        ax.set_yticks([])
    ax.set_title(title)
    return ax


def loss_curve(ax, losses, title: str = "training loss", *, window: int = 50, label=None):
    """Raw loss (faint) and its moving average."""
    from .train import smooth

    values = _np(torch.as_tensor(losses))
    line = ax.plot(values, alpha=0.25)[0]
    sm = _np(smooth(values, window))
    ax.plot(np.arange(len(sm)) + (len(values) - len(sm)), sm, color=line.get_color(), label=label)
    return _finish(ax, title, xlabel="step", ylabel="loss", bounds=None, square=False)
