"""Interactive views for the notebooks (ipywidgets 8, JupyterLab 4, no extra extension).

`ReflowWidget` shows 2D particles travelling along precomputed flow trajectories, one set
per reflow round, with sliders for the round and the time t, a play button, and a live
straightness readout. The figure is drawn with matplotlib's Agg backend into a PNG that
an `ipywidgets.Image` displays: moving a slider only updates the artists' data and swaps
the image bytes (no flicker, no ipympl). Each round's static part (axes, clouds, paths) is
drawn once; a frame only blits the moving artists onto it, and frames are cached.

Outside a kernel (tests), the sliders still validate `.value` and fire the callbacks
synchronously, so the drawn data can be checked directly: `w.particles.get_offsets()`,
`w.paths.get_segments()`, `w.readout.value`, `w.image.value`.
"""

from __future__ import annotations

import io
from typing import Sequence

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from PIL import Image

from . import plotting


def _np(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def _cumulative_trapezoid(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """∫₀^{t_k} y dt for every grid point k (0 at the first)."""
    steps = 0.5 * (y[1:] + y[:-1]) * np.diff(t)
    return np.concatenate([[0.0], np.cumsum(steps)])


class ReflowWidget(widgets.VBox):
    """Particles along precomputed trajectories, one set per reflow round.

    trajectories: K tensors (T, N, 2), the paths Z_t of the 1-, 2-, ..., K-rectified flow
    t: (T,) the common time grid; profiles: K tensors (T,), E||(Z1 − Z0) − v(Z_t, t)||²
    data, noise: (M, 2) clouds drawn behind the particles.
    """

    def __init__(
        self,
        trajectories: Sequence[torch.Tensor],
        t: torch.Tensor,
        profiles: Sequence[torch.Tensor],
        *,
        data: torch.Tensor,
        noise: torch.Tensor,
        labels: Sequence[str] | None = None,
        size: float = 3.6,
        dpi: int = 80,
        cache_size: int = 512,
    ):
        self.trajectories = [_np(tr) for tr in trajectories]
        self.t = _np(t).astype(np.float64)
        self.profiles = [_np(p).astype(np.float64) for p in profiles]
        self._check()
        self.straightness = [float(_cumulative_trapezoid(p, self.t)[-1]) for p in self.profiles]
        self._so_far = [_cumulative_trapezoid(p, self.t) for p in self.profiles]
        k_max = len(self.trajectories)
        self.labels = list(labels) if labels is not None else [f"{k}-rectified flow" for k in range(1, k_max + 1)]
        if len(self.labels) != k_max:
            raise ValueError(f"Got {len(self.labels)} labels for {k_max} rounds.")
        self.dpi, self.cache_size, self._cache = dpi, cache_size, {}
        self.frames_rendered = 0

        self.round = widgets.IntSlider(value=1, min=1, max=k_max, description="reflow round",
                                       style={"description_width": "initial"})
        n_t = len(self.t)
        self.time = widgets.FloatSlider(value=float(self.t[0]), min=float(self.t[0]), max=float(self.t[-1]),
                                        step=float((self.t[-1] - self.t[0]) / (n_t - 1)), description="t",
                                        readout_format=".2f")
        self.play = widgets.Play(value=0, min=0, max=n_t - 1, step=1, interval=120, description="play")
        self.image = widgets.Image(format="png")
        self.readout = widgets.HTML()
        for control, name in ((self.round, "round"), (self.time, "time"), (self.play, "play"),
                              (self.image, "image"), (self.readout, "readout")):
            control.add_class(f"reflow-{name}")  # stable CSS hooks for the browser test
        self._build_figure(_np(data), _np(noise), size)

        self.round.observe(self._on_change, names="value")
        self.time.observe(self._on_change, names="value")
        self.play.observe(self._on_play, names="value")
        super().__init__([widgets.HBox([self.round, self.play, self.time]), self.image, self.readout])
        self._redraw()

    # ------------------------------------------------------------------------------------
    def _check(self) -> None:
        if not self.trajectories:
            raise ValueError("ReflowWidget needs at least one set of trajectories.")
        if len(self.profiles) != len(self.trajectories):
            raise ValueError(f"Got {len(self.profiles)} straightness profiles for {len(self.trajectories)} rounds.")
        n_t = self.t.shape[0]
        if self.t.ndim != 1 or n_t < 2 or np.any(np.diff(self.t) <= 0):
            raise ValueError(f"t must be an increasing (T,) grid with T >= 2, got shape {self.t.shape}.")
        for k, (tr, p) in enumerate(zip(self.trajectories, self.profiles), 1):
            if tr.ndim != 3 or tr.shape[0] != n_t or tr.shape[2] != 2:
                raise ValueError(f"Trajectories of round {k} must have shape (T={n_t}, N, 2), got {tr.shape}.")
            if p.shape != (n_t,):
                raise ValueError(f"Straightness profile of round {k} must have shape ({n_t},), got {p.shape}.")

    def _build_figure(self, data, noise, size) -> None:
        self.figure = Figure(figsize=(2 * size + 0.6, size))
        FigureCanvasAgg(self.figure)
        ax, ax_s = self.figure.subplots(1, 2)
        plotting.scatter(ax, noise, "noise", alpha=0.3)
        plotting.scatter(ax, data, "data", alpha=0.3)
        self.paths = LineCollection([], colors=plotting.COLORS["trajectory"], alpha=0.25, linewidths=0.6)
        ax.add_collection(self.paths)
        # animated artists are left out of a full draw and blitted onto the round's background
        self.particles = ax.scatter(np.zeros((0, 2)), np.zeros((0, 2)), s=6, color=plotting.COLORS["model"],
                                    zorder=3, label="particles", animated=True)
        ax.legend(loc="lower left", fontsize=7, markerscale=3)
        shades = colormaps["plasma"](np.linspace(0.0, 0.6, len(self.profiles)))  # not the data/model colours
        for k, p in enumerate(self.profiles):
            ax_s.plot(self.t, p, lw=1.2, color=shades[k], label=self.labels[k])
        self.cursor = ax_s.axvline(self.t[0], color="k", lw=0.8, animated=True)
        (self.marker,) = ax_s.plot([], [], "o", color="k", ms=5, animated=True)
        ax_s.set_yscale("symlog", linthresh=1e-3)
        ax_s.set(title="straightness integrand", xlabel="time $t$",
                 ylabel=r"$E\,\|(Z_1 - Z_0) - v(Z_t, t)\|^2$", xlim=(self.t[0], self.t[-1]))
        ax_s.legend(loc="upper right", fontsize=8)
        self.ax, self.ax_s = ax, ax_s
        self.figure.tight_layout()
        self._backgrounds = {}

    # ------------------------------------------------------------------------------------
    @property
    def round_index(self) -> int:
        """0-based index of the displayed round."""
        return self.round.value - 1

    @property
    def time_index(self) -> int:
        """Index of the grid time nearest to the t slider."""
        return int(np.argmin(np.abs(self.t - self.time.value)))

    def _on_play(self, change) -> None:
        self.time.value = float(self.t[change["new"]])

    def _on_change(self, change=None) -> None:
        if self.play.value != self.time_index:
            self.play.value = self.time_index  # keeps the play button in step with the slider
        self._redraw()

    def _background(self, r: int):
        """The round's static pixels: axes, clouds, its paths, its title (drawn once per round)."""
        if r not in self._backgrounds:
            self.paths.set_segments(list(np.swapaxes(self.trajectories[r], 0, 1)))  # N polylines of T points
            self.ax.set_title(self.labels[r])
            self.figure.canvas.draw()
            self._backgrounds[r] = self.figure.canvas.copy_from_bbox(self.figure.bbox)
        return self._backgrounds[r]

    def _redraw(self) -> None:
        r, k = self.round_index, self.time_index
        background = self._background(r)
        self.paths.set_segments(list(np.swapaxes(self.trajectories[r], 0, 1)))
        self.ax.set_title(self.labels[r])
        self.particles.set_offsets(self.trajectories[r][k])
        self.cursor.set_xdata([self.t[k], self.t[k]])
        self.marker.set_data([self.t[k]], [self.profiles[r][k]])
        self.readout.value = (
            f"<b>{self.labels[r]}</b> &nbsp; t = {self.t[k]:.2f} &nbsp; "
            f"straightness S = {self.straightness[r]:.4f} &nbsp; "
            f"(accumulated up to t: {self._so_far[r][k]:.4f})"
        )
        key = (r, k)
        if key not in self._cache:
            self._cache[key] = self._frame(background)
            self.frames_rendered += 1
            if len(self._cache) > self.cache_size:
                self._cache.pop(next(iter(self._cache)))
        self.image.value = self._cache[key]

    def _frame(self, background) -> bytes:
        canvas = self.figure.canvas
        canvas.restore_region(background)
        for artist in (self.particles, self.cursor, self.marker):
            self.figure.draw_artist(artist)
        buf = io.BytesIO()
        Image.fromarray(np.asarray(canvas.buffer_rgba())).save(buf, format="png", compress_level=1)
        return buf.getvalue()

    @classmethod
    def from_straightness(cls, results, *, data, noise, n_show: int = 300, **kw) -> "ReflowWidget":
        """Build from objects with `.trajectory (T, B, 2)`, `.t (T,)`, `.profile (T,)`, one per round
        (e.g. `rectified_flow.straightness(...)` results); shows the first `n_show` particles."""
        results = list(results)
        if not results:
            raise ValueError("from_straightness needs at least one result.")
        return cls([r.trajectory[:, :n_show] for r in results], results[0].t,
                   [r.profile for r in results], data=data, noise=noise, **kw)
