"""`python -m course_utils.bench` runs and reports every case. Smoke tests only: nothing here
asserts on a timing (they depend on the machine), and the peers (diffusers, torchcfm) are not needed."""

import json
import os
import re
import subprocess
import sys

import pytest

from course_utils import bench

ROW = re.compile(r"^\| ([\w-]+): .*? \| ([0-9.]+)\s+\| (.*?)\s+\| (.*?)\s+\|$")


def table_rows(stdout: str) -> dict:
    rows = {}
    for line in stdout.splitlines():
        m = ROW.match(line)
        if m:
            rows[m.group(1)] = (float(m.group(2)), m.group(3), m.group(4))
    return rows


def test_quick_run_of_the_course_side_reports_every_case(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "course_utils.bench", "--quick", "--no-peers", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| case" in proc.stdout and "course ms" in proc.stdout and "peer/course" in proc.stdout
    assert "1 thread(s)" in proc.stdout
    rows = table_rows(proc.stdout)
    assert set(rows) == set(bench.CASES)
    for name, (course_ms, peer, ratio) in rows.items():
        assert course_ms > 0, name
        assert peer == "peer not run (--no-peers)" and ratio == "-", name
    result = json.loads(out.read_text())
    assert result["threads"] == 1 and result["quick"] is True and result["repeats"] == 3
    assert [r["case"] for r in result["rows"]] == list(bench.CASES)
    for r in result["rows"]:
        assert r["course_ms"] > 0 and len(r["course_samples_ms"]) == 3
        assert all(x > 0 for x in r["course_samples_ms"])
        assert r["peer_ms"] is None and r["ratio"] is None
    dit = result["rows"][-1]
    assert dit["notes"]["params course"] > 0


def test_a_missing_peer_is_reported_and_the_course_side_still_timed(monkeypatch, capsys):
    def missing(what):
        raise ImportError(f"No module named {what!r}")

    monkeypatch.setattr(bench, "_import_peer", missing)
    assert bench.main(["--quick", "--cases", "ot,cfm", "--repeats", "2", "--warmup", "0"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert list(rows) == ["ot", "cfm"]
    for course_ms, peer, ratio in rows.values():
        assert course_ms > 0
        assert peer == "peer not installed (pip install course_utils[bench])" and ratio == "-"


def test_interleaved_timing_calls_in_turn():
    calls = []
    times = bench.time_interleaved([lambda: calls.append("A"), lambda: calls.append("B")], repeats=3, warmup=1)
    assert calls == ["A", "B"] * 4
    assert [len(t) for t in times] == [3, 3] and all(x >= 0 for t in times for x in t)


def test_unknown_cases_and_bad_options_are_refused():
    with pytest.raises(SystemExit):
        bench.parse_args(["--cases", "ddim,nope"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--repeats", "0"])
    args = bench.parse_args(["--quick"])
    assert args.cases == list(bench.CASES) and args.repeats == 3


# --- bench threads: 1 thread or every CPU ---------------------------------------------------------

THREADS_ROW = re.compile(r"^\| ([\w-]+): .*? \| ([0-9.]+)\s+\| ([0-9.]+)\s+\|$")


def test_threads_benchmark_is_wired_to_the_cli(tmp_path):
    out = tmp_path / "threads.json"
    proc = subprocess.run(
        [sys.executable, "-m", "course_utils", "bench", "threads", "--quick", "--models", "2d", "--threads", "1",
         "--json", str(out)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COURSE_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("course_utils.bench threads: torch ") and "load average before" in lines[0]
    assert [c.strip() for c in lines[1].strip("|").split("|")] == [
        "model (ms/step)", "1 thread, quiet", "1 thread, 1 busy proc"]
    rows = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in map(THREADS_ROW.match, lines) if m}
    assert list(rows) == ["2d"] and all(ms > 0 for ms in rows["2d"])
    assert "config.set_threads chooses here" in proc.stdout
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["rounds"] == 1 and result["repeats"] == 3
    assert [(r["model"], r["threads"], r["busy"]) for r in result["rows"]] == [("2d", 1, False), ("2d", 1, True)]
    assert all(len(r["rounds_ms"]) == 1 and r["ms"] > 0 for r in result["rows"])
    assert set(result["chosen"]) == {"2d", "image"} and result["chosen"]["2d"] == 1


def test_threads_worker_runs_the_count_asked_and_the_busy_process_is_killed(monkeypatch):
    spawned = []
    real_spawn = bench._spawn_busy
    monkeypatch.setattr(bench, "_spawn_busy", lambda: spawned.append(real_spawn()) or spawned[-1])
    # the worker checks that it ran with 2 threads (via COURSE_THREADS and config.set_threads)
    ms = bench.time_threads_config("dit", 2, True, warmup=0, repeats=1, quick=True)
    assert ms > 0
    assert len(spawned) == 1 and spawned[0].poll() is not None  # the competitor is gone


def test_threads_benchmark_refuses_bad_options():
    with pytest.raises(SystemExit):
        bench.threads_main(["--models", "2d,vae"])
    with pytest.raises(SystemExit):
        bench.threads_main(["--threads", "0,2"])
    with pytest.raises(SystemExit):
        bench.threads_main(["--threads", "two"])
    with pytest.raises(SystemExit):
        bench.threads_main(["--rounds", "0"])


def test_threads_table_has_a_column_per_load_and_count():
    rows = [{"model": "2d", "label": "RealNVP", "threads": k, "busy": b, "ms": 10.0 * k + b, "rounds_ms": [1.0]}
            for b in (False, True) for k in (1, 2)]
    table = bench.format_threads_table(rows).splitlines()
    assert [c.strip() for c in table[0].strip("|").split("|")] == [
        "model (ms/step)", "1 thread, quiet", "2 threads, quiet", "1 thread, 1 busy proc", "2 threads, 1 busy proc"]
    assert [c.strip() for c in table[2].strip("|").split("|")] == ["2d: RealNVP", "10.0", "20.0", "11.0", "21.0"]
