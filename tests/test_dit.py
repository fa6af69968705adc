import pytest
import torch

from course_utils.guidance import ClassifierFreeGuidance
from course_utils.models import dit
from course_utils.models.embeddings import LabelEmbedding


def tiny(**kw):
    return dit.DiT(dit.get_config("tiny", hidden=32, depth=2, heads=2, **kw))


@pytest.mark.parametrize("p", [1, 2, 4, 7])
def test_unpatchify_inverts_patchify(p):
    x = torch.randn(3, 2, 28, 28)
    tokens = dit.patchify(x, p)
    assert tokens.shape == (3, (28 // p) ** 2, p * p * 2)
    assert torch.equal(dit.unpatchify(tokens, p, 2, 28, 28), x)


def test_patch_tokens_hold_the_right_pixels():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    tokens = dit.patchify(x, 2)
    assert tokens[0, 0].tolist() == [0, 1, 4, 5]  # top-left patch, row-major
    assert tokens[0, 1].tolist() == [2, 3, 6, 7]  # top-right patch


def test_fresh_blocks_are_the_identity_and_output_is_zero():
    torch.manual_seed(0)
    model = tiny()
    h, c = torch.randn(4, 49, 32), torch.randn(4, 32)
    for block in model.blocks:
        torch.testing.assert_close(block(h, c), h)
    out = model(torch.randn(4, 1, 28, 28), torch.rand(4), torch.randint(0, 10, (4,)))
    assert out.shape == (4, 1, 28, 28) and out.abs().max() == 0


def test_gates_open_after_a_step():
    torch.manual_seed(0)
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 1, 28, 28)
    for _ in range(2):
        loss = (model(x, torch.rand(8), torch.randint(0, 10, (8,))) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.blocks[0].adaLN_modulation[-1].weight.abs().sum() > 0
    assert model(x, 0.5).abs().max() > 0


def test_bf16_autocast_keeps_shapes_and_gives_bf16():
    model = tiny(qk_norm=True)
    x = torch.randn(2, 1, 28, 28)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, torch.rand(2), torch.tensor([1, 2]))
    assert out.shape == x.shape and out.dtype == torch.bfloat16


def test_sinusoidal_position_embedding_is_fixed_and_distinct():
    pe = dit.sincos_pos_embed_2d(32, 7)
    assert pe.shape == (49, 32)
    assert torch.cdist(pe, pe).add(torch.eye(49) * 10).min() > 0.1  # every position differs
    torch.testing.assert_close(pe[0, :8], torch.zeros(8))  # sin(0) for row 0


def test_qk_norm_gives_unit_rms_queries():
    attn = dit.Attention(32, 2, qk_norm=True)
    q = torch.randn(3, 2, 5, 16) * 7
    torch.testing.assert_close(attn.q_norm(q).pow(2).mean(-1), torch.ones(3, 2, 5), atol=1e-4, rtol=0)


def test_label_dropout_rate_and_null_label():
    emb = LabelEmbedding(10, 8, dropout=0.25).train()
    y = torch.zeros(40_000, dtype=torch.long)
    out = emb(y, generator=torch.Generator().manual_seed(0))
    dropped = (out == emb.weight[10]).all(1).float().mean()
    assert abs(dropped - 0.25) < 0.01
    emb.eval()
    assert (emb(y) == emb.weight[0]).all()


def test_a_given_drop_mask_replaces_exactly_those_labels():
    torch.manual_seed(0)
    emb = LabelEmbedding(10, 8, dropout=0.5).train()
    y = torch.tensor([3, 1, 4, 1, 5])
    drop = torch.tensor([True, False, False, True, False])
    expected = emb.weight[torch.tensor([10, 1, 4, 10, 5])]
    torch.testing.assert_close(emb(y, drop=drop), expected)  # no random draw on top of the mask
    torch.testing.assert_close(emb.eval()(y, drop=drop), expected)
    with pytest.raises(ValueError, match="bool mask shaped like the labels"):
        emb(y, drop=torch.ones(5))
    model = tiny()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x, t = torch.randn(5, 1, 28, 28), torch.rand(5)
    model.train()
    torch.testing.assert_close(model(x, t, y, drop=drop), model.eval()(x, t, torch.where(drop, 10, y)))


def test_guidance_combination():
    torch.manual_seed(0)
    model = tiny()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    model.eval()
    x, t, y = torch.randn(3, 1, 28, 28), torch.rand(3), torch.tensor([0, 5, 9])
    cond, uncond = model(x, t, y), model(x, t)
    assert model.null_label == 10
    guided = ClassifierFreeGuidance(model, 3.0)(x, t, y)  # one doubled batch
    torch.testing.assert_close(guided, uncond + 3.0 * (cond - uncond), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ClassifierFreeGuidance(model, 1.0)(x, t, y), cond, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ClassifierFreeGuidance(model, 0.0)(x, t, y), uncond, atol=1e-5, rtol=1e-4)


def test_clear_errors():
    with pytest.raises(ValueError, match="not divisible by the patch size 3"):
        dit.DiT(patch_size=3)
    with pytest.raises(ValueError, match="not divisible by the patch size 4"):
        dit.patchify(torch.zeros(1, 1, 30, 30), 4)
    model = tiny()
    with pytest.raises(ValueError, match=r"Class labels must lie in 0..9"):
        model(torch.zeros(2, 1, 28, 28), 0.5, torch.tensor([3, 12]))
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 1, 28, 28\)"):
        model(torch.zeros(2, 28, 28), 0.5)
    with pytest.raises(ValueError, match="Unknown DiT configuration 'huge'"):
        dit.get_config("huge")
    tokens = dit.patchify(torch.zeros(2, 1, 28, 28), 4)
    with pytest.raises(ValueError, match="is 49 tokens of 16 numbers, got 48 tokens of 16"):
        dit.unpatchify(tokens[:, :48], 4, 1, 28, 28)
    with pytest.raises(ValueError, match="is 196 tokens of 4 numbers, got 49 tokens of 16"):
        dit.unpatchify(tokens, 2, 1, 28, 28)  # the wrong patch size
    with pytest.raises(ValueError, match=r"tokens of shape \(B, N, p·p·C\)"):
        dit.unpatchify(tokens[0], 4, 1, 28, 28)


def test_named_configs_sizes():
    n_tiny = dit.num_params(dit.DiT(dit.get_config("tiny")))
    assert 0.8e6 < n_tiny < 1.6e6  # the tiny DiT: about 1.2 M parameters
    assert dit.get_config("small").patch_size == 2


def test_exercise_checks_pass_the_reference_and_name_the_mistakes():
    from course_utils import exercises
    from course_utils.models.dit import modulate, patchify

    exercises.check_patchify(patchify)
    exercises.check_modulate(modulate)
    exercises.check_guided_velocity(lambda u, c, w: u + w * (c - u))

    def patch_wrong_order(x, p):  # flattens each patch as (C, p, p): right shape, wrong layout
        b, c, h, w = x.shape
        return x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, p * p * c)

    with pytest.raises(exercises.ExerciseError, match="patchify"):
        exercises.check_patchify(patch_wrong_order)
    with pytest.raises(exercises.ExerciseError, match="modulate"):
        exercises.check_modulate(lambda x, shift, scale: x * scale.unsqueeze(1) + shift.unsqueeze(1))
    with pytest.raises(exercises.ExerciseError, match="guided_velocity"):
        exercises.check_guided_velocity(lambda u, c, w: w * u + (1 - w) * c)


def test_sample_guided_and_plain_agree_at_scale_one():
    from course_utils.dit import sample

    torch.manual_seed(0)
    model = dit.DiT(dit.get_config("tiny", hidden=32, depth=1, heads=2)).eval()
    for p in model.parameters():  # leave adaLN-Zero's zeros so the velocity is not trivially 0
        torch.nn.init.normal_(p, std=0.05)
    y = torch.tensor([1, 7, 3])
    x0 = torch.randn(3, 1, 28, 28)
    plain = sample(model, y, scale=1.0, steps=4, x0=x0)
    guided_one = sample(model, y, scale=1.0 + 1e-9, steps=4, x0=x0)  # goes through the doubled batch
    torch.testing.assert_close(plain, guided_one, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(plain, sample(model, y, scale=3.0, steps=4, x0=x0), atol=1e-3)
    assert plain.shape == x0.shape


def test_sample_with_midpoint_steps_matches_a_hand_written_midpoint():
    from course_utils.dit import sample

    torch.manual_seed(0)
    model = dit.DiT(dit.get_config("tiny", hidden=32, depth=1, heads=2)).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    y, x0 = torch.tensor([2, 8]), torch.randn(2, 1, 28, 28)
    x, h = x0, 1 / 3
    with torch.no_grad():
        for k in range(3):  # x ← x + h·v(x + h/2·v(x, t), t + h/2)
            t = torch.full((2,), k * h)
            v = lambda x, t: model(x, t) + 2.5 * (model(x, t, y) - model(x, t))  # noqa: E731
            x_mid = x + h / 2 * v(x, t)
            x = x + h * v(x_mid, t + h / 2)
    torch.testing.assert_close(sample(model, y, scale=2.5, steps=3, method="midpoint", x0=x0), x,
                               atol=1e-5, rtol=1e-5)
    euler = sample(model, y, scale=2.5, steps=6, method="euler", x0=x0)  # the same 6 evaluations
    assert not torch.allclose(euler, x, atol=1e-4)


def test_ablation_report_is_checked_when_loaded(tmp_path):
    from course_utils.cli import dit_ablation

    with pytest.raises(FileNotFoundError, match="dit-ablation"):
        dit_ablation.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"variants": {"uniform": {"steps": [100, 200], "held_out_loss": [1.0]}}}')
    with pytest.raises(ValueError, match="not a report"):
        dit_ablation.load(bad)
    bad.write_text("not json")
    with pytest.raises(ValueError, match="not a report"):
        dit_ablation.load(bad)
    report = dit_ablation.load()  # the shipped one
    assert set(report["variants"]) == set(dit_ablation.VARIANTS)


def test_ablation_command_writes_a_report(tmp_path):
    from course_utils.cli import dit_ablation

    out = tmp_path / "r.json"
    dit_ablation.main(["--out", str(out), "--steps", "4", "--eval-every", "2", "--hidden", "32", "--depth", "1",
                       "--batch-size", "8", "--variants", "uniform", "no_qk_norm", "--device", "cpu"])
    report = dit_ablation.load(out)
    assert set(report["variants"]) == {"uniform", "no_qk_norm"}
    run = report["variants"]["no_qk_norm"]
    assert run["steps"] == [2, 4] and len(run["train_loss"]) == 4 and run["qk_norm"] is False
    assert 0 < run["held_out_loss"][-1] < 5 and 0 <= run["accuracy_w3_16_steps"] <= 1


def test_model_input_checks_name_what_was_expected():
    model = tiny()
    x = torch.randn(2, 1, 28, 28)
    with pytest.raises(ValueError, match=r"DiT: x is torch.float64 but the network's weights are torch.float32: "
                                         r"call model.double\(\) or x.float\(\)"):
        model(x.double(), 0.5, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="DiT got an empty batch"):
        model(x[:0], 0.5)
    with pytest.raises(ValueError, match=r"DiT: t must be a scalar or have shape \(B,\) = \(2,\), got \(5,\)"):
        model(x, torch.rand(5))
    with pytest.raises(ValueError, match=r"y is torch.float32; pass class indices as y.long\(\)"):
        model(x, 0.5, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"one per item of the batch: y has shape \(3,\)"):
        model(x, 0.5, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"Class labels must lie in 0..9 \(10 = no label\), got -2..2"):
        model(x, 0.5, torch.tensor([-2, 2]))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast x may differ from the weights
        assert model(x.bfloat16(), 0.5, torch.tensor([1, 2])).shape == x.shape


# -- adaLN-Zero: which weights receive a gradient first (notebook 10, section 4)
def zero_block(width=32):
    block = dit.DiTBlock(width, 2, 4.0, True)
    torch.nn.init.zeros_(block.adaLN_modulation[-1].weight)  # adaLN-Zero, as DiT.initialize_weights does
    torch.nn.init.zeros_(block.adaLN_modulation[-1].bias)
    return block


def block_inputs(width=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, c = torch.randn(4, 9, width, generator=g), torch.randn(4, width, generator=g)
    return x, c, torch.randn(4, 9, width, generator=g)


def test_gate_gradient_reference_is_autograds_gradient_of_the_gate_rows():
    from course_utils.exercises.dit import _gate_gradient

    torch.manual_seed(0)
    x, branch, grad_out, c = torch.randn(3, 5, 4), torch.randn(3, 5, 4), torch.randn(3, 5, 4), torch.randn(3, 6)
    rows = torch.nn.Linear(6, 4)
    y = x + rows(torch.nn.functional.silu(c)).unsqueeze(1) * branch  # y = x + α ⊙ F
    (y * grad_out).sum().backward()  # so that ∂L/∂y = grad_out
    grad_w, grad_b = _gate_gradient(branch, grad_out, c)
    torch.testing.assert_close(grad_w, rows.weight.grad)
    torch.testing.assert_close(grad_b, rows.bias.grad)


def test_a_zero_gated_block_gives_only_its_gates_a_gradient_then_opens():
    from course_utils.dit import gate_opening, opens_from_zero

    torch.manual_seed(0)
    report = gate_opening(zero_block(), *block_inputs(), lr=1e-2)
    assert report.at_init["attention"] == report.at_init["MLP"] == report.at_init["shift and scale rows"] == 0
    assert report.at_init["gate rows"] > 0
    assert report.after_step["attention"] > 0 and report.after_step["MLP"] > 0
    assert opens_from_zero(report)


def test_negative_control_a_block_with_a_non_zero_modulation_has_branch_gradients_at_init():
    from course_utils.dit import gate_opening, opens_from_zero

    torch.manual_seed(0)
    block = zero_block()
    torch.nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.02)  # not adaLN-Zero
    report = gate_opening(block, *block_inputs())
    assert report.at_init["attention"] > 0 and report.at_init["MLP"] > 0
    assert not opens_from_zero(report)


def test_negative_control_a_gate_frozen_at_zero_never_lets_the_branches_learn():
    from course_utils.dit import gate_opening, opens_from_zero

    torch.manual_seed(0)
    block = zero_block()
    block.adaLN_modulation.requires_grad_(False)  # the gates stay 0
    before = {k: v.clone() for k, v in block.state_dict().items()}
    report = gate_opening(block, *block_inputs(), lr=1e-2, steps=5)
    assert report.at_init["gate rows"] == 0
    assert report.after_step["attention"] == report.after_step["MLP"] == 0  # five steps later: still nothing
    assert not opens_from_zero(report)
    assert all(torch.equal(before[k], v) for k, v in block.state_dict().items())  # a copy was trained


# -- the loss along the path (notebook 10, section 9)
def test_linear_per_t_loss_closed_form_matches_the_linear_guess_on_gaussian_classes():
    from course_utils.dit import linear_per_t_loss, linear_velocity, within_class_spectrum

    g = torch.Generator().manual_seed(0)
    d, n = 6, 40_000
    a = torch.randn(d, d, generator=g) * torch.tensor([1.0, 0.8, 0.5, 0.3, 0.1, 0.0])  # one direction of no spread
    means = torch.randn(3, d, generator=g)
    labels = torch.randint(0, 3, (n,), generator=g)
    x1 = means[labels] + torch.randn(n, d, generator=g) @ a.T
    x0 = torch.randn(n, d, generator=g)
    m, lam, q = within_class_spectrum(x1, labels)
    torch.testing.assert_close(lam.sum(), torch.tensor(float((a * a).sum()), dtype=torch.float64), rtol=0.03, atol=0)
    ts = torch.tensor([0.0, 0.3, 0.6, 0.9, 1.0])
    closed = linear_per_t_loss(lam, ts)
    assert closed[0] == pytest.approx(lam.sum().item()) and closed[-1] == d  # the ends: Var(x1 | y), then Var(x0)
    mc = torch.stack([(linear_velocity(t * x1 + (1 - t) * x0, t, labels, m, lam, q) - (x1 - x0)).pow(2).sum(1).mean()
                      for t in ts.tolist()])
    torch.testing.assert_close(mc.double(), closed, rtol=0.03, atol=0)


def test_per_t_loss_is_the_loss_at_each_time_and_a_zero_model_is_flat():
    from course_utils.dit import per_t_loss

    g = torch.Generator().manual_seed(0)
    x1, x0, y = torch.randn(5, 1, 28, 28, generator=g), torch.randn(5, 1, 28, 28, generator=g), torch.arange(5)
    ts = torch.tensor([0.0, 0.5, 1.0])
    model = tiny().eval()  # adaLN-Zero: outputs 0
    flat = per_t_loss(model, x1, y, x0, ts)
    torch.testing.assert_close(flat, (x1 - x0).flatten(1).pow(2).sum(1).mean().expand(3))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    got = per_t_loss(model, x1, y, x0, ts)
    with torch.no_grad():
        want = [(model(t * x1 + (1 - t) * x0, torch.full((5,), t), y) - (x1 - x0)).flatten(1).pow(2).sum(1).mean()
                for t in ts.tolist()]
    torch.testing.assert_close(got, torch.stack(want))


def test_gain_peaks_inside_accepts_an_inner_peak_only():
    from course_utils.dit import gain_peaks_inside

    linear = torch.tensor([0.2, 0.3, 0.3, 0.4, 1.0])
    assert gain_peaks_inside(torch.tensor([0.3, 0.2, 0.1, 0.2, 1.5]), linear)
    assert not gain_peaks_inside(linear, linear)  # no gain: the linear guess itself
    assert not gain_peaks_inside(torch.full((5,), 1.9), linear)  # a zero output: all loss
    assert not gain_peaks_inside(torch.tensor([0.0, 0.3, 0.3, 0.4, 1.0]), linear)  # the gain at an end


def test_the_shipped_dit_gains_inside_the_path_and_a_fresh_one_does_not():
    from course_utils import train
    from course_utils.cli import train_dit
    from course_utils.dit import gain_peaks_inside, linear_per_t_loss, per_t_loss, within_class_spectrum
    from course_utils.mnist import load_mnist

    trained = dit.DiT(dit.get_config("tiny"))
    train.load_model(train_dit.default_export_path(), trained)
    images, labels = load_mnist("train").images, load_mnist("train").labels
    test = load_mnist("test")
    g = torch.Generator().manual_seed(0)
    x1, y = test.images[:64], test.labels[:64]
    x0 = torch.randn(x1.shape, generator=g)
    ts = torch.linspace(0, 1, 11)
    linear = linear_per_t_loss(within_class_spectrum(images, labels)[1], ts).float()
    assert gain_peaks_inside(per_t_loss(trained.eval(), x1, y, x0, ts), linear)
    fresh = per_t_loss(dit.DiT(dit.get_config("tiny")).eval(), x1, y, x0, ts)  # outputs 0: flat, E‖x1 − x0‖²
    torch.testing.assert_close(fresh, fresh[0].expand(11))
    assert not gain_peaks_inside(fresh, linear)


# -- review of notebook 10's section 4 and section 9 claims: the closed form is the least-squares optimum, and the
# checks fail on broken baselines and models
def best_affine_residual(x_t, target, labels, n_classes):
    """The least mean squared residual of target ≈ a_y + K x_t over all class offsets a_y and one matrix K, by least
    squares on the samples (features: x_t and a one-hot class indicator)."""
    features = torch.cat([x_t, torch.nn.functional.one_hot(labels, n_classes).to(x_t.dtype)], dim=1)
    coef = torch.linalg.lstsq(features, target).solution
    return (features @ coef - target).pow(2).sum(1).mean()


def test_linear_per_t_loss_is_the_least_squares_optimum_for_non_gaussian_classes():
    from course_utils.dit import linear_per_t_loss, linear_velocity, within_class_spectrum

    g = torch.Generator().manual_seed(3)
    d, n, k = 5, 60_000, 3
    spread = torch.tensor([1.5, 1.0, 0.6, 0.2, 0.0], dtype=torch.float64)  # the last direction: no spread
    a = torch.randn(d, d, generator=g, dtype=torch.float64) * spread
    means = 2 * torch.randn(k, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, k, (n,), generator=g)
    signs = torch.randint(0, 2, (n, d), generator=g).double() * 2 - 1  # ±1 coordinates: far from Gaussian
    x1 = means[labels] + signs @ a.T
    x0 = torch.randn(n, d, generator=g, dtype=torch.float64)
    m, lam, q = within_class_spectrum(x1, labels)
    assert int((lam > 1e-9).sum()) == d - 1  # one direction with no spread
    for t in (0.0, 0.25, 0.5, 0.75, 0.95):
        x_t = t * x1 + (1 - t) * x0
        best = best_affine_residual(x_t, x1 - x0, labels, k)
        closed = linear_per_t_loss(lam, torch.tensor([t]))[0]
        torch.testing.assert_close(best, closed, rtol=0.02, atol=1e-3)  # numerics (lstsq) = closed form
        guess = (linear_velocity(x_t, t, labels, m, lam, q) - (x1 - x0)).pow(2).sum(1).mean()
        torch.testing.assert_close(guess, best, rtol=0.02, atol=1e-3)  # dit.linear_velocity is that optimum
        if 0 < t < 1:  # negative control: a mis-scaled spectrum (images in [0, 1] instead of [−1, 1]) does worse
            wrong = (linear_velocity(x_t, t, labels, m, lam / 4, q) - (x1 - x0)).pow(2).sum(1).mean()
            assert wrong > 1.05 * best
    ends = linear_per_t_loss(lam, torch.tensor([0.0, 0.9999, 1.0]))
    assert ends[0] == pytest.approx(lam.sum().item())  # t = 0: tr Σ
    assert ends[1] == pytest.approx(d - 1, abs=1e-3) and ends[2] == d  # → rank Σ as t → 1, then D at t = 1


def test_gain_peaks_inside_rejects_a_mis_scaled_baseline():
    from course_utils.dit import gain_peaks_inside

    ts = torch.linspace(0, 1, 11)
    linear = 0.2 + 0.5 * ts**2
    linear[-1] = 1.0  # per pixel: tr Σ / D at t = 0, then 1 at t = 1
    loss = linear.clone()
    loss[1:-1] -= 0.1 * torch.sin(torch.pi * ts[1:-1])  # a network that gains inside the path only
    loss[0], loss[-1] = loss[0] + 0.05, loss[-1] + 0.3  # and loses at the ends, where it is rarely trained
    assert gain_peaks_inside(loss, linear)
    assert not gain_peaks_inside(loss, linear * 784)  # the baseline summed over pixels, the loss per pixel
    assert not gain_peaks_inside(loss, linear + 0.5 * torch.sin(torch.pi * ts) + 0.2)  # a baseline too high at the ends
    zero = torch.full_like(linear, 1.9)  # a zero output: flat, E‖x1 − x0‖² per pixel
    assert not gain_peaks_inside(zero, linear) and not gain_peaks_inside(zero, linear * 784)


def test_a_network_that_ignores_t_is_no_better_than_the_linear_guess_at_its_own_time_only():
    # the linear guess tuned for t = 0.5, applied at every t: its loss equals the optimum at 0.5 and exceeds it
    # elsewhere, so its gain is never positive and it cannot pass gain_peaks_inside
    from course_utils.dit import gain_peaks_inside, linear_per_t_loss, linear_velocity, within_class_spectrum

    g = torch.Generator().manual_seed(0)
    d, n = 6, 20_000
    a = torch.randn(d, d, generator=g) * torch.tensor([1.0, 0.8, 0.5, 0.3, 0.1, 0.05])
    labels = torch.randint(0, 2, (n,), generator=g)
    means = torch.randn(2, d, generator=g)
    x1, x0 = means[labels] + torch.randn(n, d, generator=g) @ a.T, torch.randn(n, d, generator=g)
    m, lam, q = within_class_spectrum(x1, labels)
    ts = torch.linspace(0, 1, 11)
    frozen = torch.stack([(linear_velocity(t * x1 + (1 - t) * x0, 0.5, labels, m, lam, q) - (x1 - x0))
                          .pow(2).sum(1).mean() for t in ts.tolist()]).double()
    assert not gain_peaks_inside(frozen, linear_per_t_loss(lam, ts))


def test_learning_order_of_a_fresh_dit_step_by_step_and_a_block_that_is_not_zero():
    from course_utils.dit import learning_order

    torch.manual_seed(0)
    model = tiny()
    g = torch.Generator().manual_seed(2)
    x, target = torch.randn(4, 1, 28, 28, generator=g), torch.randn(4, 1, 28, 28, generator=g)
    t, y = torch.full((4,), 0.5), torch.tensor([1, 2, 3, 4])
    order = learning_order(model, x, t, y, target)
    second = {"final linear", "final adaLN", "block gates", "patch embedding"}  # through the identity blocks
    assert order == [{"final linear"}, second,
                     second | {"attention", "MLP", "block shifts and scales", "time and label embedders"}]
    for block in model.blocks:  # negative control: blocks whose modulation is not zero (not adaLN-Zero)
        torch.nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.02)
    assert {"attention", "MLP", "time and label embedders"} <= learning_order(model, x, t, y, target, steps=2)[1]
    torch.nn.init.normal_(model.final_layer.linear.weight, std=0.02)  # and a final layer that is not zero
    assert "block gates" in learning_order(model, x, t, y, target, steps=1)[0]
    with pytest.raises(ValueError, match="not finite"):
        learning_order(model, x * 1e30, t, y, target, lr=1e30)


def test_opens_from_zero_needs_the_shifts_and_scales_to_open_too():
    from course_utils.dit import GateOpening, opens_from_zero

    start = {"attention": 0.0, "MLP": 0.0, "shift and scale rows": 0.0, "gate rows": 1.0}
    opened = {"attention": 1.0, "MLP": 1.0, "shift and scale rows": 1.0, "gate rows": 1.0}
    assert opens_from_zero(GateOpening(start, opened, 1))
    assert not opens_from_zero(GateOpening(start, {**opened, "shift and scale rows": 0.0}, 1))
    assert not opens_from_zero(GateOpening({**start, "gate rows": 0.0}, opened, 1))  # a gate with no gradient
