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
