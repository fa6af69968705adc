import math

import pytest
import torch

from course_utils import models as nn
from course_utils import tensors


def test_time_embedding_is_cos_sin_of_geometric_frequencies():
    emb = nn.SinusoidalTimeEmbedding(8, scale=1.0)
    t = torch.tensor([0.0, 0.5])
    out = emb(t)
    freqs = torch.tensor([10000 ** (-k / 4) for k in range(4)])
    torch.testing.assert_close(out[1], torch.cat([torch.cos(0.5 * freqs), torch.sin(0.5 * freqs)]))
    torch.testing.assert_close(out[0], torch.cat([torch.ones(4), torch.zeros(4)]))
    with pytest.raises(ValueError, match="even"):
        nn.SinusoidalTimeEmbedding(7)


def test_time_mlp_shapes_scalar_time_and_labels():
    net = nn.TimeMLP(dim=3, hidden=16, depth=2, num_classes=4)
    x = torch.randn(5, 3)
    assert net(x, 0.3).shape == (5, 3)
    torch.testing.assert_close(net(x, 0.3), net(x, torch.full((5,), 0.3)))
    y = torch.tensor([0, 1, 2, 3, 4])  # 4 = no label
    assert net(x, 0.3, y=y).shape == (5, 3)
    torch.testing.assert_close(net(x, 0.3), net(x, 0.3, y=torch.full((5,), 4)))


def test_time_mlp_clear_errors():
    net = nn.TimeMLP(dim=2, hidden=8, depth=1)
    with pytest.raises(ValueError, match=r"expects x of shape \(B, 2\)"):
        net(torch.randn(4, 3), 0.1)
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        net(torch.randn(4, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="without classes"):
        net(torch.randn(4, 2), 0.1, y=torch.zeros(4, dtype=torch.long))
    cond = nn.TimeMLP(dim=2, hidden=8, depth=1, num_classes=3)
    with pytest.raises(ValueError, match="Class labels must lie in 0..2"):
        cond(torch.randn(2, 2), 0.1, y=torch.tensor([0, 7]))


def test_append_dims_and_batch_time():
    t = torch.arange(3.0)
    assert tensors.append_dims(t, 4).shape == (3, 1, 1, 1)
    x = torch.zeros(3, 1, 28, 28)
    assert torch.equal(tensors.batch_time(0.5, x), torch.full((3,), 0.5))
    assert tensors.batch_time(torch.tensor([0.1]), x).shape == (3,)
    assert math.isclose(float((tensors.append_dims(t, 4) * torch.ones_like(x))[2].mean()), 2.0)


# --- every network checks its input once, at forward, through tensors.check_input ------------------

def _networks():
    """(name, network, a valid x, whether it takes t, whether it takes labels): the course's six."""
    from course_utils.models.classifier import MNISTClassifier
    from course_utils.models.conv_score import ConvScoreNet
    from course_utils.models.dit import DiT, get_config
    from course_utils.models.unet import UNet

    img = torch.randn(4, 1, 28, 28)
    return {
        "TimeMLP": (nn.TimeMLP(dim=2, hidden=8, depth=1, num_classes=3), torch.randn(4, 2), True, True),
        "TimeClassifier": (nn.TimeClassifier(dim=2, num_classes=3, hidden=8, depth=1), torch.randn(4, 2), True, False),
        "UNet": (UNet(channels=8, mults=(1, 2)), img, True, True),
        "DiT": (DiT(get_config("tiny", hidden=32, depth=1, heads=2)), img, True, True),
        "ConvScoreNet": (ConvScoreNet(channels=8, time_dim=16), img, True, False),
        "MNISTClassifier": (MNISTClassifier(width=8), img, False, False),
    }


NETWORKS = ["TimeMLP", "TimeClassifier", "UNet", "DiT", "ConvScoreNet", "MNISTClassifier"]
LABELLED = ["TimeMLP", "UNet", "DiT"]


def _call(name, x, t=0.3, **kw):
    net, _, takes_t, _ = _networks()[name]
    return net(x, t, **kw) if takes_t else net(x)


@pytest.mark.parametrize("name", NETWORKS)
def test_networks_refuse_x_of_another_dtype_than_their_weights(name):
    _, x, _, _ = _networks()[name]
    with pytest.raises(ValueError, match=rf"{name}: x is torch.float64 but the network's weights are torch.float32: "
                                         r"call model.double\(\) or x.float\(\)"):
        _call(name, x.double())
    with pytest.raises(ValueError, match=rf"{name}: x is torch.int64 but the network's weights are torch.float32: "
                                         r"call x.float\(\)"):
        _call(name, x.long())


@pytest.mark.parametrize("name", NETWORKS)
def test_networks_refuse_an_empty_batch(name):
    _, x, _, _ = _networks()[name]
    with pytest.raises(ValueError, match=rf"{name} got an empty batch \((x|images) of shape \(0, .*\): pass at least one item"):
        _call(name, x[:0])


@pytest.mark.parametrize("name", [n for n in NETWORKS if n != "MNISTClassifier"])
def test_networks_refuse_times_of_the_wrong_length_or_integer_steps(name):
    _, x, _, _ = _networks()[name]
    with pytest.raises(ValueError, match=rf"{name}: t must be a scalar or have shape \(B,\) = \(4,\), got \(3,\)"):
        _call(name, x, torch.rand(3))
    with pytest.raises(ValueError, match=rf"{name}: t is a torch.int64 tensor.*pass t / T"):
        _call(name, x, torch.randint(0, 1000, (4,)))  # DDPM step indices, not times in [0, 1]
    with pytest.raises(TypeError, match=rf"{name}: t must be a float"):
        _call(name, x, None)


@pytest.mark.parametrize("name", LABELLED)
def test_conditional_networks_refuse_labels_of_the_wrong_dtype_length_or_range(name):
    _, x, _, _ = _networks()[name]
    with pytest.raises(ValueError, match=r"Class labels must be an integer tensor of shape \(4,\): y is torch.float32"):
        _call(name, x, y=torch.zeros(4))
    with pytest.raises(ValueError, match=r"one per item of the batch: y has shape \(3,\)"):
        _call(name, x, y=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"Class labels must lie in 0\.\.\d+ \(\d+ = no label\), got -1\.\.1"):
        _call(name, x, y=torch.tensor([0, 1, -1, 0]))


class _DeviceReads(torch.overrides.TorchFunctionMode):
    """Counts the calls that copy a tensor's value to the host (a device sync on a GPU)."""

    READS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "cpu"}

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.READS:
            self.reads.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", NETWORKS)
def test_the_checks_read_at_most_one_value_per_forward(name):
    net, x, takes_t, labelled = _networks()[name]
    with _DeviceReads() as counter:
        net(x, torch.rand(4)) if takes_t else net(x)
    assert counter.reads == []  # shapes and dtypes only; y = None is ∅ without a check
    if labelled:
        with _DeviceReads() as counter:
            net(x, 0.3, y=torch.tensor([0, 1, 2, 1]))
        assert len(counter.reads) == 1, counter.reads  # the label range, once


def test_the_checks_trace_into_one_graph_under_torch_compile():
    net = nn.TimeMLP(dim=2, hidden=8, depth=1, num_classes=3)
    compiled = torch.compile(net, backend="eager", fullgraph=True)  # a graph break would raise
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(compiled(x, torch.rand(4, generator=torch.Generator().manual_seed(0)), y),
                               net(x, torch.rand(4, generator=torch.Generator().manual_seed(0)), y))
    torch.testing.assert_close(compiled(x, 0.5), net(x, 0.5))


def test_a_double_network_takes_double_input_and_autocast_may_mix_dtypes():
    net = nn.TimeMLP(dim=2, hidden=8, depth=1, num_classes=3)
    x = torch.randn(4, 2)
    out = net.double()(x.double(), 0.3, torch.tensor([0, 1, 2, 3]))
    assert out.dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts inputs and weights itself
        assert net.float()(x.bfloat16(), 0.3).shape == (4, 2)
    with pytest.raises(ValueError, match="call model.bfloat16"):
        net(x.bfloat16(), 0.3)


def test_check_input_names_the_expected_shape():
    like = torch.zeros(1)
    with pytest.raises(ValueError, match=r"Net expects images of shape \(B, 1, H, W\) with H = W, got \(2, 3, 8, 8\)"):
        tensors.check_input("Net", torch.zeros(2, 3, 8, 8), shape=(1, None, None), like=like, what="images",
                            note=" with H = W")
    with pytest.raises(TypeError, match=r"Net expects x as a tensor of shape \(B, 2\), got list"):
        tensors.check_input("Net", [[0.0, 1.0]], 0.5, shape=(2,), like=like)
    assert tensors.check_input("Net", torch.zeros(3, 2), 0.5, shape=(2,), like=like).shape == (3,)
    assert tensors.check_input("Net", torch.zeros(3, 2), shape=(2,), like=like) is None
