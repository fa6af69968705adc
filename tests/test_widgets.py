"""The reflow widget, headless: set the controls, check what is drawn.

Outside a kernel ipywidgets still validates `.value` and fires `observe` callbacks
synchronously, so each assignment below redraws before the next line runs.
"""

import math

import numpy as np
import pytest
import torch

from course_utils.widgets import ReflowWidget

T, N = 17, 40


@pytest.fixture(scope="module")
def paths():
    """Round 1 bends (a bump of height 0.5 sin(πt)), round 2 is straight; both join x0 to x1."""
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(0, 1, T)
    x0, x1 = torch.randn(N, 2, generator=g), torch.randn(N, 2, generator=g) + 1.0
    straight = t[:, None, None] * x1 + (1 - t[:, None, None]) * x0
    bump = 0.5 * torch.sin(math.pi * t)[:, None, None] * torch.tensor([0.0, 1.0])
    curved = straight + bump
    # profile of the curved paths: ||chord − (chord + bump')||² = (0.5 π cos πt)², exactly
    profile_curved = (0.5 * math.pi * torch.cos(math.pi * t)) ** 2
    return dict(t=t, x0=x0, x1=x1, trajectories=[curved, straight],
                profiles=[profile_curved, torch.zeros(T)])


@pytest.fixture
def widget(paths):
    return ReflowWidget(paths["trajectories"], paths["t"], paths["profiles"],
                        data=paths["x1"], noise=paths["x0"], dpi=40)


def test_initial_state_draws_round_one_at_t0(widget, paths):
    assert widget.round.value == 1 and widget.time_index == 0
    np.testing.assert_allclose(widget.particles.get_offsets(), paths["x0"].numpy(), atol=1e-6)
    segments = widget.paths.get_segments()
    assert len(segments) == N
    np.testing.assert_allclose(segments[3], paths["trajectories"][0][:, 3].numpy(), atol=1e-6)
    assert widget.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert "1-rectified flow" in widget.readout.value and "t = 0.00" in widget.readout.value


def test_time_slider_moves_particles_along_their_paths(widget, paths):
    before = widget.image.value
    widget.time.value = 0.5
    k = T // 2
    assert widget.time_index == k and widget.play.value == k
    np.testing.assert_allclose(widget.particles.get_offsets(), paths["trajectories"][0][k].numpy(), atol=1e-6)
    np.testing.assert_allclose(widget.marker.get_ydata(), [paths["profiles"][0][k].item()], rtol=1e-6)
    assert widget.image.value != before
    assert "t = 0.50" in widget.readout.value
    # (0.5π)² ∫₀^½ cos²(πs) ds = π²/16: the readout's running integral, to trapezoid accuracy
    so_far = float(widget.readout.value.split("accumulated up to t: ")[1].split(")")[0])
    assert so_far == pytest.approx(math.pi**2 / 16, rel=1e-2)


def test_round_slider_switches_paths_and_straightness(widget, paths):
    s1 = float(widget.readout.value.split("straightness S = ")[1].split(" ")[0])
    assert s1 == pytest.approx(math.pi**2 / 8, rel=1e-2)  # (0.5π)² · ½
    widget.time.value = 1.0
    widget.round.value = 2
    straight = paths["trajectories"][1]
    np.testing.assert_allclose(widget.paths.get_segments()[7], straight[:, 7].numpy(), atol=1e-6)
    np.testing.assert_allclose(widget.particles.get_offsets(), paths["x1"].numpy(), atol=1e-5)
    assert "2-rectified flow" in widget.readout.value and "S = 0.0000" in widget.readout.value
    assert widget.ax.get_title() == "2-rectified flow"


def test_play_drives_the_time_slider(widget, paths):
    widget.play.value = 4
    assert widget.time.value == pytest.approx(paths["t"][4].item())
    np.testing.assert_allclose(widget.particles.get_offsets(), paths["trajectories"][0][4].numpy(), atol=1e-6)


def test_values_are_validated_and_frames_cached(widget):
    widget.round.value = 99  # an IntSlider clamps to its range
    assert widget.round.value == 2 and widget.round_index == 1
    widget.time.value = 0.25
    rendered, frame = widget.frames_rendered, widget.image.value
    widget.time.value = 0.75
    widget.time.value = 0.25  # back to a cached frame: same bytes, no new render
    assert widget.image.value == frame and widget.frames_rendered == rendered + 1


def test_bad_inputs_raise_clear_errors(paths):
    t, trajs, profs = paths["t"], paths["trajectories"], paths["profiles"]
    kw = dict(data=paths["x1"], noise=paths["x0"])
    with pytest.raises(ValueError, match="profiles"):
        ReflowWidget(trajs, t, profs[:1], **kw)
    with pytest.raises(ValueError, match="shape"):
        ReflowWidget([trajs[0][:, :, :1], trajs[1]], t, profs, **kw)
    with pytest.raises(ValueError, match="increasing"):
        ReflowWidget(trajs, t.flip(0), profs, **kw)
    with pytest.raises(ValueError, match="at least one"):
        ReflowWidget([], t, [], **kw)


def test_from_straightness_keeps_the_first_particles(paths):
    from types import SimpleNamespace

    results = [SimpleNamespace(trajectory=tr, t=paths["t"], profile=p)
               for tr, p in zip(paths["trajectories"], paths["profiles"])]
    w = ReflowWidget.from_straightness(results, data=paths["x1"], noise=paths["x0"], n_show=10, dpi=40)
    assert len(w.paths.get_segments()) == 10 and w.straightness[1] == 0.0
    with pytest.raises(ValueError, match="at least one"):
        ReflowWidget.from_straightness([], data=paths["x1"], noise=paths["x0"])
