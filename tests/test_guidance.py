"""course_utils.guidance: classifier-free guidance in one doubled batch, with the network's own ∅."""

import pytest
import torch

from course_utils import guidance
from course_utils.models import TimeMLP


class Recorder(torch.nn.Module):
    null_label = 4

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, y):
        self.calls.append(len(x))
        return x * (y[:, None].float() + 1) + t[:, None]


def test_cfg_is_one_doubled_call_with_the_null_label_and_the_right_combination():
    model = Recorder()
    x, t, y = torch.randn(3, 2), torch.rand(3), torch.tensor([0, 1, 2])
    out = guidance.ClassifierFreeGuidance(model, 2.5)(x, t, y)
    assert model.calls == [6]
    uncond, cond = model(x, t, torch.full_like(y, 4)), model(x, t, y)
    torch.testing.assert_close(out, uncond + 2.5 * (cond - uncond))
    assert not torch.allclose(out, cond)  # a no-op wrapper (ω ignored) fails the check
    model.calls.clear()
    torch.testing.assert_close(guidance.ClassifierFreeGuidance(model, 1.0)(x, t, y), cond)
    assert model.calls == [3]


def test_cfg_uses_the_network_null_label_and_refuses_unconditional_networks():
    net = TimeMLP(2, hidden=8, depth=1, num_classes=3)
    assert net.null_label == 3
    x, t = torch.randn(5, 2), torch.rand(5)
    torch.testing.assert_close(guidance.ClassifierFreeGuidance(net, 0.0)(x, t, torch.zeros(5, dtype=torch.long)),
                               net(x, t))  # y = None means ∅
    with pytest.raises(ValueError, match="no null label"):
        guidance.ClassifierFreeGuidance(TimeMLP(2, hidden=8, depth=1), 2.0)
