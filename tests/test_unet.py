import pytest
import torch

from course_utils.models.unet import AttnBlock, ResBlock, UNet


def test_shapes_labels_and_zero_output_at_init():
    net = UNet(channels=16)
    x = torch.randn(3, 1, 28, 28)
    out = net(x, torch.rand(3), torch.tensor([0, 5, 10]))
    assert out.shape == x.shape and out.abs().max() == 0  # the output conv starts at zero
    assert UNet(channels=16, num_classes=None)(x, 0.3).shape == x.shape


def test_blocks_start_as_identity_or_skip():
    block, attn = ResBlock(8, 8, 16), AttnBlock(8)
    h, e = torch.randn(2, 8, 7, 7), torch.randn(2, 16)
    torch.testing.assert_close(block(h, e), h)
    torch.testing.assert_close(attn(h), h)


def test_time_and_label_change_the_output_after_training_a_step():
    torch.manual_seed(0)
    net = UNet(channels=16)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.randn(4, 1, 28, 28)
    for _ in range(3):
        loss = (net(x, torch.rand(4), torch.randint(0, 10, (4,))) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    a, b = net(x, 0.1), net(x, 0.9)
    assert (a - b).abs().max() > 1e-4
    assert (net(x, 0.5, torch.zeros(4, dtype=torch.long)) - net(x, 0.5, torch.full((4,), 3))).abs().max() > 1e-5


def test_translation_of_time_batch_and_errors():
    net = UNet(channels=16)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(net(x, 0.4), net(x, torch.full((2,), 0.4)))
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(2, 1, 30, 30), 0.1)
    with pytest.raises(ValueError, match="Class labels must lie in 0..9"):
        net(x, 0.1, torch.tensor([1, 11]))
    with pytest.raises(ValueError, match="without classes"):
        UNet(channels=16, num_classes=None)(x, 0.1, torch.tensor([1, 2]))


def test_input_checks_name_what_was_expected():
    net = UNet(channels=16)
    x = torch.randn(2, 1, 28, 28)
    with pytest.raises(ValueError, match=r"UNet: x is torch.float64 but the network's weights are torch.float32: "
                                         r"call model.double\(\) or x.float\(\)"):
        net(x.double(), 0.1)
    with pytest.raises(ValueError, match=r"UNet: x is torch.uint8 .* call x.float\(\) "
                                         r"\(0..255 pixels: x.float\(\) / 127.5 - 1\)"):
        net(((x + 1) * 127.5).to(torch.uint8), 0.1)
    with pytest.raises(ValueError, match=r"UNet got an empty batch"):
        net(x[:0], 0.1)
    with pytest.raises(ValueError, match=r"UNet expects x of shape \(B, 1, H, W\) with H, W divisible by 4, "
                                         r"got \(2, 3, 28, 28\)"):
        net(torch.randn(2, 3, 28, 28), 0.1)
    with pytest.raises(ValueError, match=r"y is torch.float32"):
        net(x, 0.1, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"y has shape \(2, 1\)"):
        net(x, 0.1, torch.tensor([[1], [2]]))
    torch.testing.assert_close(net(x, 0.1, torch.tensor([1, 2], dtype=torch.int32)), net(x, 0.1, torch.tensor([1, 2])))
