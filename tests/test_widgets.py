"""The reflow explorer, headless: the precomputed rounds, the synced state, `view()`, the payload and
the kernel-free page. Two closed-form fields stand in for trained flows: `turn` rotates about the
origin (curved paths, S > 0, one Euler step far from Z1) and `shift` moves every point by the same
constant velocity (straight paths, S = 0, one Euler step exact)."""

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
import traitlets

from course_utils import rectified_flow as rf
from course_utils import widgets as W
from course_utils.widgets import ReflowExplorer, decode_array, reflow_rounds

N = 60


def turn(x, t):
    return 2.0 * torch.stack([-x[:, 1], x[:, 0]], 1)


def shift(x, t):
    return torch.tensor([2.0, 0.0]).expand_as(x)


@pytest.fixture(scope="module")
def pairs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, 2, generator=g), torch.randn(N, 2, generator=g) + 1.0


@pytest.fixture(scope="module")
def toy(pairs):
    return reflow_rounds({1: turn, 2: shift}, *pairs, name="test")


@pytest.fixture
def explorer(toy, pairs):
    other = reflow_rounds([shift], *pairs, name="one round")
    return ReflowExplorer([toy, other])


def test_rounds_hold_the_couplings_paths_and_straightness(toy, pairs):
    x0, x1 = pairs
    assert toy.k_max == 2 and [r.k for r in toy.rounds] == [0, 1, 2]
    np.testing.assert_allclose(toy.rounds[0].chord_end, x1.numpy())  # round 0: the independent pairs
    np.testing.assert_allclose(toy.rounds[1].chord_end, x1.numpy())  # round 1 trains on them
    np.testing.assert_allclose(toy.rounds[2].chord_end, toy.rounds[1].paths[-1])  # round 2: (x0, Z^1_1(x0))
    assert toy.rounds[0].paths is None and toy.rounds[0].straightness is None and not toy.rounds[0].euler
    for r, field in zip(toy.rounds[1:], (turn, shift)):
        st = rf.straightness(field, x0, steps=16)
        assert r.straightness == pytest.approx(st.value)
        np.testing.assert_allclose(r.paths, st.trajectory.numpy(), atol=1e-6)
        assert r.paths.shape == (17, N, 2) and sorted(r.euler) == [1, 2, 4, 8, 16]
        assert r.euler[4].shape == (5, N, 2)
    assert toy.rounds[2].straightness < 1e-10 < 1.0 < toy.rounds[1].straightness
    np.testing.assert_array_equal(toy.groups, (x0[:, 1] >= 0).numpy().astype(np.uint8))


def test_turn_paths_are_circles_two_ways(toy, pairs):
    """The turn field's exact flow rotates by the angle 2t: the stored RK4 path against the closed form."""
    x0 = pairs[0].numpy()
    for j, t in enumerate(toy.t):
        c, s = np.cos(2 * t), np.sin(2 * t)
        np.testing.assert_allclose(toy.rounds[1].paths[j], x0 @ np.array([[c, s], [-s, c]]), atol=1e-4)


def test_round_zero_particles_move_along_straight_chords(explorer, pairs):
    x0, x1 = (p.numpy() for p in pairs)
    for t in (0.0, 0.3, 0.5, 1.0):
        explorer.t = t
        v = explorer.view()
        np.testing.assert_allclose(v.particles, (1 - t) * x0 + t * x1, atol=1e-6)
    assert v.paths is None and v.euler_landing is None and v.straightness is None
    assert v.readout.startswith("independent coupling (no flow)") and v.readout.endswith("t = 1.00")


def test_time_moves_particles_along_the_flow_paths(explorer, toy):
    explorer.round = 1
    explorer.t = 1.0
    np.testing.assert_allclose(explorer.view().particles, toy.rounds[1].paths[-1])
    explorer.t = float(toy.t[4])
    np.testing.assert_allclose(explorer.view().particles, toy.rounds[1].paths[4], atol=1e-6)
    explorer.t = float((toy.t[4] + toy.t[5]) / 2)  # halfway between two grid times
    np.testing.assert_allclose(explorer.view().particles, (toy.rounds[1].paths[4] + toy.rounds[1].paths[5]) / 2,
                               atol=1e-6)


def test_one_euler_step_is_exact_only_for_the_straight_field(explorer):
    explorer.steps = 1
    explorer.round = 2  # shift: constant velocity
    v = explorer.view()
    np.testing.assert_allclose(v.euler_landing, v.exact_end, atol=1e-5)
    assert v.euler_error < 1e-5 and "1 Euler step: mean error 0.000" in v.readout
    explorer.round = 1  # negative control: the turning field's one step misses Z1
    v = explorer.view()
    assert v.euler_error > 0.5 and np.abs(v.euler_landing - v.exact_end).max() > 0.5
    explorer.steps = 16  # more steps, closer
    assert explorer.view().euler_error < 0.2 * v.euler_error
    explorer.steps = 0
    assert explorer.view().euler_landing is None and "Euler" not in explorer.view().readout


def test_toggles_and_toy_switch(explorer, pairs):
    explorer.round = 2
    explorer.show_chords, explorer.show_paths = False, False
    v = explorer.view()
    assert v.chords is None and v.paths is None
    explorer.show_chords = True
    np.testing.assert_allclose(explorer.view().chords[0], pairs[0].numpy())
    explorer.toy = "one round"  # one flow only: the round is clamped to 1
    assert explorer.round == 1 and explorer.view().toy == "one round"


@pytest.mark.parametrize("name, value, message", [
    ("round", 3, r"round must be an integer in 0\.\.2"),
    ("round", -1, r"0\.\.2"),
    ("t", 1.5, r"t must lie in \[0, 1\]"),
    ("steps", 3, r"steps must be one of \(0, 1, 2, 4, 8, 16\)"),
    ("toy", "spirals", r"toy must be one of \['test', 'one round'\]"),
])
def test_bad_values_raise_one_clear_error(explorer, name, value, message):
    with pytest.raises(traitlets.TraitError, match=message):
        setattr(explorer, name, value)


def test_bad_inputs_to_reflow_rounds(pairs):
    with pytest.raises(ValueError, match="keyed 1..K"):
        reflow_rounds({2: shift}, *pairs)
    with pytest.raises(ValueError, match="at least one flow"):
        reflow_rounds([], *pairs)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        reflow_rounds([shift], pairs[0], pairs[1][:5])
    with pytest.raises(ValueError, match="euler_steps"):
        reflow_rounds([shift], *pairs, euler_steps=(3,))


def test_payload_decodes_back_to_the_arrays(explorer, toy):
    sent = explorer.payload["toys"][0]
    np.testing.assert_array_equal(decode_array(sent["x0"]), toy.x0)
    np.testing.assert_array_equal(decode_array(sent["groups"]), toy.groups)
    np.testing.assert_array_equal(decode_array(sent["rounds"][1]["paths"]), toy.rounds[1].paths)
    np.testing.assert_array_equal(decode_array(sent["rounds"][2]["euler"]["8"]["path"]), toy.rounds[2].euler[8])
    assert sent["rounds"][1]["straightness"] == toy.rounds[1].straightness
    assert sent["rounds"][0]["paths"] is None


def test_payload_of_notebook_size_stays_small():
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g)
    e = ReflowExplorer(reflow_rounds([turn, shift, shift], x0, x1, name="a"))
    assert e.payload_bytes() < 450_000  # per toy with three rounds; notebook 09 shows two toys


def _frame_document(page: str) -> str:
    m = re.fullmatch(r'<iframe class="reflow-explorer-frame" sandbox="allow-scripts" style="[^"]*" '
                     r'title="[^"]*" srcdoc="([^"]*)"></iframe>', page)
    assert m, page[:300]
    return html.unescape(m.group(1))


def test_to_html_inlines_the_module_once_and_the_data(explorer):
    explorer.round, explorer.steps = 2, 4
    page = explorer.to_html()
    assert "http://" not in page and "https://" not in page and page.isascii()
    doc = _frame_document(page)
    assert doc.count(W.ESM_PATH.read_text(encoding="utf-8")) == 1
    state = re.search(r'<script type="application/json" id="reflow-state">(.*?)</script>', doc, re.S).group(1)
    state = json.loads(state)
    assert state["round"] == 2 and state["steps"] == 4 and state["payload"] == explorer.payload
    assert "get(name)" in doc and "save_changes()" in doc and "on(event, f)" in doc and "off(event, f)" in doc


def test_mimebundle_has_the_widget_view_and_the_html_form(explorer):
    bundle = explorer._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["text/html"].startswith('<iframe class="reflow-explorer-frame"')


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js not found: the renderer's readout is checked with node")
def test_renderer_builds_the_same_readout_as_python(explorer, toy, tmp_path):
    """Import the ES module in Node and call its `readoutText` on the payload, for every state."""
    states = [(k, t, n) for k in range(3) for t in (0.0, 0.37, 1.0) for n in W.STEP_CHOICES]
    (tmp_path / "payload.json").write_text(json.dumps(explorer.payload["toys"][0]))
    script = tmp_path / "readout.mjs"
    script.write_text(
        f"import {{ readoutText }} from {json.dumps(W.ESM_PATH.as_uri())};\n"
        "import { readFileSync } from 'node:fs';\n"
        f"const toy = JSON.parse(readFileSync({json.dumps(str(tmp_path / 'payload.json'))}, 'utf8'));\n"
        f"for (const [k, t, n] of {json.dumps(states)}) console.log(readoutText(toy, k, t, n));\n")
    out = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.splitlines() == [W.readout_text(toy, k, t, n) for k, t, n in states]


def test_bounds_hold_every_particle_and_ignore_far_cloud_points(toy, pairs):
    """The square view contains every start, chord end and RK4 path point (nothing a particle does is
    clipped), while one far point of the data cloud does not shrink the drawing to a dot."""
    def inside(b, pts):
        return bool(((pts[:, 0] >= b[0]) & (pts[:, 0] <= b[1]) & (pts[:, 1] >= b[2]) & (pts[:, 1] <= b[3])).all())

    x0, x1 = pairs
    far = torch.cat([x1, torch.tensor([[60.0, -60.0]])])
    cloud = W.ReflowRounds(**{**toy.__dict__, "data": W._np(far), "noise": W._np(torch.randn(500, 2) * 3)})
    b = cloud.bounds()
    assert b[1] - b[0] == pytest.approx(b[3] - b[2])  # square
    for r in cloud.rounds:
        assert inside(b, r.chord_end)
        assert r.paths is None or inside(b, r.paths.reshape(-1, 2))
    assert inside(b, cloud.x0)
    assert b[1] - b[0] < 20  # the far cloud point is left out
    # one particle far outside both clouds is still drawn: the view grows to hold it
    moved = W.ReflowRounds(**{**cloud.__dict__, "x0": np.concatenate([cloud.x0[:-1], [[15.0, 15.0]]]).astype(np.float32)})
    assert inside(moved.bounds(), moved.x0) and not inside(b, moved.x0)
