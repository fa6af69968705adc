"""The reflow explorer of notebook 09: one JavaScript renderer, live in Jupyter and without a kernel.

Everything the explorer shows is computed once, in Python, by `reflow_rounds`: for round 0 the
independent coupling (noise x0 paired with independent data draws, its straight chords), and for
each round k = 1..K the chords the k-rectified flow was trained on, the flow's own RK4 paths Z^k_t
from x0 (`rectified_flow.straightness`, which also gives S_k), and Euler paths with n = 1, 2, 4, 8,
16 steps from the same x0 (`flow_matching.sample_ode`) against the exact end point Z^k_1(x0).

`ReflowExplorer` (an `anywidget.AnyWidget`) sends those arrays to the browser once (float32,
base64) and draws them with `static/reflow_explorer.js` on a canvas: moving a control redraws in
the page, and playing t runs on requestAnimationFrame with no kernel round-trip per frame. Its
controls are synced traitlets (`round`, `t`, `steps`, `toy`, `show_chords`, `show_paths`), so code
can drive it, and `view()` returns what the current state shows, computed in Python the way the
renderer computes it.

`to_html()` is the kernel-free form: a sandboxed `<iframe>` whose document inlines the same module
and the same data, with a small stand-in for anywidget's model (get/set/on/off/save_changes), so the
renderer runs unchanged in an exported page. `_repr_mimebundle_` returns both: JupyterLab shows the
widget view, a page without a kernel (nbconvert, the course website) the HTML form.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

try:  # anywidget is a dependency; the arrays and `reflow_rounds` work without it
    import anywidget
    import traitlets
except ImportError:  # pragma: no cover
    anywidget = None

from . import flow_matching as fm
from . import rectified_flow as rf

ESM_PATH = Path(__file__).with_name("static") / "reflow_explorer.js"
EULER_STEPS = (1, 2, 4, 8, 16)
STEP_CHOICES = (0,) + EULER_STEPS  # 0: no Euler overlay
FRAME_HEIGHT = 540  # px, the iframe of `to_html`


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


# ------------------------------------------------------------------------------------------------
# the data
@dataclass
class Round:
    """One round of the explorer. Round 0 is the independent coupling (no flow, no Euler paths)."""

    k: int
    chord_end: np.ndarray  # (N, 2): the partner of every x0 in the coupling this round trains on
    paths: np.ndarray | None = None  # (T, N, 2): the flow's own paths Z^k_t (RK4), None for round 0
    straightness: float | None = None  # S_k on these particles, None for round 0
    euler: dict[int, np.ndarray] = field(default_factory=dict)  # n -> (n + 1, N, 2) Euler path
    euler_error: dict[int, float] = field(default_factory=dict)  # n -> E||Euler_n − Z^k_1||

    @property
    def label(self) -> str:
        return "independent coupling (no flow)" if self.k == 0 else f"{self.k}-rectified flow"


@dataclass
class ReflowRounds:
    """What the explorer shows for one toy: particles x0 (N, 2) with colour groups, the data and noise
    clouds, the time grid t (T,) of the flows' paths, and rounds 0..K."""

    name: str
    x0: np.ndarray
    groups: np.ndarray  # (N,) 0 or 1: where each particle starts
    group_names: tuple[str, str]
    t: np.ndarray
    data: np.ndarray
    noise: np.ndarray
    rounds: list[Round]

    @property
    def k_max(self) -> int:
        return len(self.rounds) - 1

    def bounds(self) -> list[float]:
        """[xmin, xmax, ymin, ymax], square with a margin: every particle's start, chord end and RK4 path
        in full, and the noise and data clouds up to their 0.5 and 99.5 percentiles (a few far cloud
        points may fall outside; no particle does). Euler paths are not included: a coarse step may
        overshoot, and the drawing clips it."""
        own = [self.x0] + [r.chord_end for r in self.rounds]
        own += [r.paths.reshape(-1, 2) for r in self.rounds if r.paths is not None]
        own = np.concatenate(own)
        clouds = np.concatenate([self.data, self.noise])
        lo = np.minimum(own.min(0), np.percentile(clouds, 0.5, axis=0))
        hi = np.maximum(own.max(0), np.percentile(clouds, 99.5, axis=0))
        centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2 * 1.06
        return [float(centre[0] - half), float(centre[0] + half), float(centre[1] - half), float(centre[1] + half)]


def upper_half(x) -> np.ndarray:
    """Colour groups by where a particle starts: 1 above the horizontal axis, 0 below."""
    return (_np(x)[:, 1] >= 0).astype(np.uint8)


@torch.no_grad()
def reflow_rounds(
    flows: Mapping[int, torch.nn.Module] | Sequence[torch.nn.Module],
    x0: torch.Tensor,
    x1_independent: torch.Tensor,
    *,
    name: str = "toy",
    data: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    groups=None,
    group_names: tuple[str, str] = ("starts below", "starts above"),
    steps: int = 16,
    euler_steps: Sequence[int] = EULER_STEPS,
) -> ReflowRounds:
    """Precompute rounds 0..K for the explorer from the trained fields `flows` ({1: v1, 2: v2, ...}
    or [v1, v2, ...], each `v(x, t)`), the particles `x0` (N, 2) and independent data draws
    `x1_independent` (N, 2) paired with them (the round-1 training coupling).

    Round k's chords join x0 to its partner in the coupling the k-rectified flow trained on: the
    independent draw for k = 1, Z^{k−1}_1(x0) for k >= 2 (the previous flow's RK4 end point). Its paths
    are `rf.straightness(v_k, x0, steps=steps)`'s RK4 trajectory on a uniform grid of `steps` steps,
    with S_k; its Euler paths `fm.sample_ode(v_k, x0, n, "euler", return_trajectory=True)`, with the
    mean distance E||Euler_n(x0) − Z^k_1(x0)|| of their landing points to the RK4 end points.
    `groups` (N,) in {0, 1} colours the particles (default: `upper_half(x0)`)."""
    if isinstance(flows, Mapping):
        ks = sorted(flows)
        if ks != list(range(1, len(ks) + 1)):
            raise ValueError(f"flows must be keyed 1..K (the k-rectified flows), got keys {ks}.")
        flows = [flows[k] for k in ks]
    flows = list(flows)
    if not flows:
        raise ValueError("reflow_rounds needs at least one flow (the 1-rectified flow).")
    x0 = torch.as_tensor(x0, dtype=torch.float32)
    x1_independent = torch.as_tensor(x1_independent, dtype=torch.float32)
    if x0.ndim != 2 or x0.shape[1] != 2 or x1_independent.shape != x0.shape:
        raise ValueError(f"x0 and x1_independent must both have shape (N, 2), got {tuple(x0.shape)} "
                         f"and {tuple(x1_independent.shape)}.")
    bad = [n for n in euler_steps if n not in EULER_STEPS]
    if bad:
        raise ValueError(f"euler_steps must be taken from {EULER_STEPS}, got {bad}.")
    groups = upper_half(x0) if groups is None else np.asarray(groups, dtype=np.uint8)
    if groups.shape != (x0.shape[0],) or groups.max(initial=0) > 1:
        raise ValueError(f"groups must be (N,) = ({x0.shape[0]},) values in {{0, 1}}, got shape {groups.shape}.")
    device = next(iter(flows[0].parameters()), torch.empty(0)).device if isinstance(flows[0], torch.nn.Module) else "cpu"
    x0_d = x0.to(device)

    rounds = [Round(0, _np(x1_independent))]
    partner, t_grid = x1_independent, None
    for k, flow in enumerate(flows, 1):
        st = rf.straightness(flow, x0_d, steps=steps)
        z1 = st.trajectory[-1]
        rnd = Round(k, _np(partner), paths=_np(st.trajectory), straightness=float(st.value))
        for n in euler_steps:
            path = fm.sample_ode(flow, x0_d, n, "euler", return_trajectory=True).trajectory
            rnd.euler[n] = _np(path)
            rnd.euler_error[n] = float((path[-1] - z1).norm(dim=1).mean())
        rounds.append(rnd)
        partner, t_grid = z1, st.t
    return ReflowRounds(name=name, x0=_np(x0), groups=groups, group_names=tuple(group_names), t=_np(t_grid),
                        data=_np(x1_independent if data is None else data),
                        noise=_np(x0 if noise is None else noise), rounds=rounds)


# ------------------------------------------------------------------------------------------------
# the payload: float32 arrays as base64, the rest JSON
def _encode(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    dtype = {"float32": "float32", "uint8": "uint8"}[a.dtype.name]
    return {"dtype": dtype, "shape": list(a.shape), "b64": base64.b64encode(a.astype("<" + a.dtype.str[1:]).tobytes()).decode()}


def decode_array(d: dict) -> np.ndarray:
    """The inverse of the payload's array encoding."""
    return np.frombuffer(base64.b64decode(d["b64"]), dtype=np.dtype(d["dtype"]).newbyteorder("<")).reshape(d["shape"])


def _round_payload(r: Round) -> dict:
    return {"k": r.k, "label": r.label, "chord_end": _encode(r.chord_end),
            "paths": None if r.paths is None else _encode(r.paths),
            "straightness": r.straightness,
            "euler": {str(n): {"path": _encode(p), "error": r.euler_error[n]} for n, p in r.euler.items()}}


def toy_payload(toy: ReflowRounds) -> dict:
    return {"name": toy.name, "group_names": list(toy.group_names), "bounds": toy.bounds(),
            "x0": _encode(toy.x0), "groups": _encode(toy.groups), "t": _encode(toy.t),
            "data": _encode(toy.data), "noise": _encode(toy.noise),
            "rounds": [_round_payload(r) for r in toy.rounds]}


def readout_text(toy: ReflowRounds, k: int, t: float, steps: int) -> str:
    """The explorer's readout line; the renderer builds the same text from the payload."""
    r = toy.rounds[k]
    parts = [r.label]
    if k == 0:
        parts.append("straight chords, which cross")
    else:
        parts.append(f"S = {r.straightness:.4f}")
        if steps and steps in r.euler_error:
            parts.append(f"{steps} Euler step{'s' if steps > 1 else ''}: mean error {r.euler_error[steps]:.3f}")
    parts.append(f"t = {t:.2f}")
    return " · ".join(parts)


def positions_at(toy: ReflowRounds, k: int, t: float) -> np.ndarray:
    """Particle positions at time t in round k: on the chord for round 0 (x_t = t x1 + (1 − t) x0),
    linear interpolation of the stored RK4 path between grid times for k >= 1 (as the renderer does)."""
    r = toy.rounds[k]
    if r.paths is None:
        return ((1 - t) * toy.x0 + t * r.chord_end).astype(np.float32)
    grid = toy.t.astype(np.float64)
    j = int(np.clip(np.searchsorted(grid, t, side="right") - 1, 0, len(grid) - 2))
    w = (t - grid[j]) / (grid[j + 1] - grid[j])
    return ((1 - w) * r.paths[j] + w * r.paths[j + 1]).astype(np.float32)


@dataclass
class View:
    """What the explorer shows in its current state."""

    toy: str
    round: int
    t: float
    steps: int
    particles: np.ndarray  # (N, 2) at time t
    groups: np.ndarray  # (N,)
    chords: tuple[np.ndarray, np.ndarray] | None  # (x0, partner) when shown
    paths: np.ndarray | None  # (T, N, 2) when shown and round >= 1
    euler_path: np.ndarray | None  # (n + 1, N, 2)
    euler_landing: np.ndarray | None  # (N, 2)
    exact_end: np.ndarray | None  # (N, 2) Z^k_1(x0)
    euler_error: float | None
    straightness: float | None
    readout: str


# ------------------------------------------------------------------------------------------------
# the widget
if anywidget is not None:

    class ReflowExplorer(anywidget.AnyWidget):
        """Reflow rounds on a canvas, with controls for the round, the time t (and play), Euler steps,
        chords, paths and the toy. Build it from one or more `reflow_rounds(...)` results."""

        _esm = traitlets.Unicode(ESM_PATH.read_text(encoding="utf-8")).tag(sync=True)
        payload = traitlets.Dict().tag(sync=True)
        toy = traitlets.Unicode("").tag(sync=True)
        round = traitlets.Int(0).tag(sync=True)
        t = traitlets.Float(0.0).tag(sync=True)
        steps = traitlets.Int(0).tag(sync=True)
        show_chords = traitlets.Bool(True).tag(sync=True)
        show_paths = traitlets.Bool(True).tag(sync=True)

        def __init__(self, toys: ReflowRounds | Sequence[ReflowRounds], **state):
            toys = [toys] if isinstance(toys, ReflowRounds) else list(toys)
            if not toys:
                raise ValueError("ReflowExplorer needs at least one reflow_rounds(...) result.")
            names = [toy.name for toy in toys]
            if len(set(names)) != len(names):
                raise ValueError(f"toy names must differ, got {names}.")
            self.toys = {toy.name: toy for toy in toys}
            super().__init__(payload={"toys": [toy_payload(toy) for toy in toys],
                                      "euler_steps": list(EULER_STEPS)}, toy=names[0])
            for key, value in state.items():
                setattr(self, key, value)

        # validation: one clear error naming the allowed values
        @traitlets.validate("toy")
        def _valid_toy(self, proposal):
            if proposal["value"] not in getattr(self, "toys", {proposal["value"]: None}):
                raise traitlets.TraitError(f"toy must be one of {list(self.toys)}, got {proposal['value']!r}.")
            return proposal["value"]

        @traitlets.observe("toy")
        def _clamp_round(self, change):
            self.round = min(self.round, self.toys[change["new"]].k_max)

        @traitlets.validate("round")
        def _valid_round(self, proposal):
            k_max = self.toys[self.toy].k_max if self.toy else 0
            if not 0 <= proposal["value"] <= k_max:
                raise traitlets.TraitError(f"round must be an integer in 0..{k_max} (0: the independent "
                                           f"coupling, k: the k-rectified flow), got {proposal['value']}.")
            return proposal["value"]

        @traitlets.validate("t")
        def _valid_t(self, proposal):
            if not 0.0 <= proposal["value"] <= 1.0:
                raise traitlets.TraitError(f"t must lie in [0, 1], got {proposal['value']}.")
            return proposal["value"]

        @traitlets.validate("steps")
        def _valid_steps(self, proposal):
            if proposal["value"] not in STEP_CHOICES:
                raise traitlets.TraitError(f"steps must be one of {STEP_CHOICES} (0: no Euler path), "
                                           f"got {proposal['value']}.")
            return proposal["value"]

        # what the current state shows
        def view(self) -> View:
            toy, k, t, n = self.toys[self.toy], self.round, self.t, self.steps
            r = toy.rounds[k]
            euler = r.euler.get(n) if n else None
            return View(
                toy=toy.name, round=k, t=t, steps=n, particles=positions_at(toy, k, t), groups=toy.groups,
                chords=(toy.x0, r.chord_end) if self.show_chords else None,
                paths=r.paths if self.show_paths else None,
                euler_path=euler, euler_landing=None if euler is None else euler[-1],
                exact_end=None if r.paths is None else r.paths[-1],
                euler_error=r.euler_error.get(n) if euler is not None else None,
                straightness=r.straightness, readout=readout_text(toy, k, t, n))

        def payload_bytes(self) -> int:
            """Size of the data sent to the page (JSON text, arrays in base64)."""
            return len(json.dumps(self.payload))

        # the kernel-free form
        def _state(self) -> dict:
            return {"payload": self.payload, "toy": self.toy, "round": self.round, "t": self.t,
                    "steps": self.steps, "show_chords": self.show_chords, "show_paths": self.show_paths}

        def to_html(self, height: int = FRAME_HEIGHT) -> str:
            """A self-contained `<iframe>` (sandbox="allow-scripts", no network) running the same
            renderer on the same data, with a stand-in for anywidget's model."""
            state = json.dumps(self._state()).replace("</", "<\\/")
            esm = self._esm
            if "</script" in esm.lower():
                raise ValueError("the renderer's source must not contain '</script'.")
            doc = _PAGE.replace("__STATE__", state).replace("__ESM__", esm).replace("__SHIM__", _SHIM)
            # character references for non-ASCII: the frame reads the same whatever the page's encoding
            srcdoc = html.escape(doc, quote=True).encode("ascii", "xmlcharrefreplace").decode("ascii")
            return (f'<iframe class="reflow-explorer-frame" sandbox="allow-scripts" '
                    f'style="width: 100%; height: {height}px; border: 0;" title="reflow explorer" '
                    f'srcdoc="{srcdoc}"></iframe>')

        def _repr_mimebundle_(self, **kwargs):
            bundle = super()._repr_mimebundle_(**kwargs)
            data, meta = bundle if isinstance(bundle, tuple) else (bundle, {})
            data = dict(data or {})
            data["text/html"] = self.to_html()
            return (data, meta) if isinstance(bundle, tuple) else data


# the model stand-in: the parts of anywidget's model API the renderer uses
_SHIM = """\
const state = JSON.parse(document.getElementById("reflow-state").textContent);
const handlers = new Map();
const model = {
  get(name) { return state[name]; },
  set(name, value) {
    const old = state[name];
    state[name] = value;
    if (old !== value) for (const f of [...(handlers.get("change:" + name) || [])]) f({ name, old, new: value });
  },
  on(event, f) { if (!handlers.has(event)) handlers.set(event, []); handlers.get(event).push(f); },
  off(event, f) {
    if (event === undefined) handlers.clear();
    else if (f === undefined) handlers.delete(event);
    else handlers.set(event, (handlers.get(event) || []).filter((g) => g !== f));
  },
  save_changes() {},
  send() {},
};
const source = document.getElementById("reflow-esm").textContent;
const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
const widget = (await import(url)).default;
widget.render({ model, el: document.getElementById("root") });"""

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>reflow explorer</title>
<style>body { margin: 0; font-family: system-ui, sans-serif; background: #fff; }</style></head>
<body><div id="root"></div>
<script type="application/json" id="reflow-state">__STATE__</script>
<script type="text/plain" id="reflow-esm">__ESM__</script>
<script type="module">
__SHIM__
</script></body></html>"""
