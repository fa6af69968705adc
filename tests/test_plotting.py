import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_utils import plotting  # noqa: E402


def test_scatter_uses_course_colours_and_labels_axes():
    fig, (ax,) = plotting.subplots(1)
    plotting.scatter(ax, torch.zeros(5, 2), "model", title="t")
    rgba = ax.collections[0].get_facecolor()[0]
    assert np.allclose(rgba[:3], matplotlib.colors.to_rgb(plotting.COLORS["model"]))
    assert ax.get_title() == "t" and ax.get_xlabel() and ax.get_ylabel()
    with pytest.raises(ValueError, match="Unknown kind"):
        plotting.scatter(ax, torch.zeros(5, 2), "sample")
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plotting.scatter(ax, torch.zeros(5, 3))


def test_image_grid_tiles_in_order():
    fig, (ax,) = plotting.subplots(1)
    imgs = torch.stack([torch.full((1, 2, 2), v) for v in (-1.0, 0.0, 1.0, 0.5)])
    plotting.image_grid(ax, imgs, nrow=2)
    canvas = ax.images[0].get_array()
    assert canvas.shape == (8, 8)
    assert canvas[1, 5] == 0.0 and canvas[5, 1] == 1.0 and canvas[5, 5] == 0.5
    assert canvas[0, 0] == -1.0  # the frame: black by default


def test_image_grid_frames_and_row_labels():
    fig, (ax,) = plotting.subplots(1)
    imgs = -torch.ones(4, 1, 2, 2)  # black tiles: a black frame would vanish
    plotting.image_grid(ax, imgs, nrow=2, pad_value=0.2, row_labels=["a", "b"])
    canvas = ax.images[0].get_array()
    assert canvas[0, 0] == pytest.approx(0.2) and canvas[1, 1] == -1.0
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert list(ax.get_yticks()) == [2.0, 6.0]  # the middle of each 4-pixel row
    with pytest.raises(ValueError, match="2 names for 1 rows"):
        plotting.image_grid(ax, imgs, nrow=4, row_labels=["a", "b"])


def _titled_and_labelled(ax, title):
    return ax.get_title() == title and ax.get_xlabel() != "" and ax.get_ylabel() != ""


def test_density_shows_exp_of_log_prob_on_the_grid():
    fig, axes = plotting.subplots(2)
    log_p = lambda x: -0.5 * x.pow(2).sum(1)  # noqa: E731
    plotting.density(axes[0], log_p, "Gaussian", n=20)
    pts, _, _ = plotting.grid_points(n=20)
    shown = np.asarray(axes[0].collections[0].get_array()).ravel()
    np.testing.assert_allclose(shown, np.exp(log_p(pts).numpy()), rtol=1e-6)
    plotting.density(axes[1], log_p, "log", n=20, log=True)
    np.testing.assert_allclose(np.asarray(axes[1].collections[0].get_array()).ravel(), log_p(pts).numpy(), rtol=1e-6)
    assert _titled_and_labelled(axes[0], "Gaussian")


def test_trajectories_draw_paths_with_start_and_end_points():
    fig, (ax,) = plotting.subplots(1)
    start, end = torch.zeros(3, 2), torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.0, -2.0]])
    traj = start + torch.linspace(0, 1, 5)[:, None, None] * (end - start)
    plotting.trajectories(ax, traj, "paths")
    assert len(ax.lines) == 3
    np.testing.assert_allclose(ax.lines[1].get_xydata(), traj[:, 1].numpy())
    starts, ends = ax.collections
    np.testing.assert_allclose(starts.get_offsets(), start.numpy())
    np.testing.assert_allclose(ends.get_offsets(), end.numpy())
    assert np.allclose(ends.get_facecolor()[0][:3], matplotlib.colors.to_rgb(plotting.COLORS["model"]))
    assert _titled_and_labelled(ax, "paths")
    with pytest.raises(ValueError, match=r"\(T, N, 2\)"):
        plotting.trajectories(ax, torch.zeros(3, 2))


def test_vector_field_arrows_are_the_field():
    fig, (ax,) = plotting.subplots(1)
    plotting.vector_field(ax, lambda x: torch.stack([-x[:, 1], x[:, 0]], 1), "rotation", n=5)
    quiver = ax.collections[0]
    pts, _, _ = plotting.grid_points(n=5)
    np.testing.assert_allclose(quiver.U, -pts[:, 1].numpy(), atol=1e-7)
    np.testing.assert_allclose(quiver.V, pts[:, 0].numpy(), atol=1e-7)
    assert _titled_and_labelled(ax, "rotation")


def test_loss_curve_draws_raw_and_moving_average():
    fig, (ax,) = plotting.subplots(1)
    plotting.loss_curve(ax, [4.0, 2.0, 0.0, 2.0], "loss", window=2)
    raw, smooth = ax.lines
    np.testing.assert_allclose(raw.get_ydata(), [4.0, 2.0, 0.0, 2.0])
    np.testing.assert_allclose(smooth.get_xydata(), [[1, 3.0], [2, 1.0], [3, 1.0]])
    assert ax.get_title() == "loss" and ax.get_xlabel() == "step" and ax.get_ylabel() == "loss"
