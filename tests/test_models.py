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
