import subprocess
import sys

import nbformat


def write(path, sources):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_runs_in_order_writes_copies_and_names_the_failing_cell(tmp_path):
    ok = write(tmp_path / "a_ok.ipynb", ["import os\nprint(os.environ['COURSE_MODE'])"])
    bad = write(tmp_path / "b_bad.ipynb", ["x = 1", "y = 2\nraise ValueError('the W2 is too large')", "z = 3"])
    out = tmp_path / "executed"
    proc = subprocess.run(
        [sys.executable, "-m", "course_utils", "run-notebooks", "--mode", "full", "--out", str(out), str(ok), str(bad)],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 1
    assert "a_ok.ipynb" in proc.stdout and "ok" in proc.stdout and "FAILED" in proc.stdout
    assert "b_bad.ipynb failed in code cell 2 (cell index 1), which starts `y = 2`: ValueError: the W2 is too large" \
        in proc.stderr.splitlines()
    executed = nbformat.read(out / "a_ok.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"].strip() == "full"
    assert (out / "b_bad.ipynb").is_file()


def test_a_kernel_that_dies_is_named_with_its_cell(tmp_path):
    dead = write(tmp_path / "dead.ipynb", ["x = 1", "import os\nos._exit(3)", "y = 2"])
    proc = subprocess.run(
        [sys.executable, "-m", "course_utils.cli.run_notebooks", "--out", str(tmp_path / "out"), str(dead)],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 1 and "FAILED" in proc.stdout
    assert "dead.ipynb failed in code cell 2" in proc.stderr and "the kernel died" in proc.stderr
    assert "Traceback" not in proc.stderr


def run_notebooks(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "course_utils", "run-notebooks", "--out", str(tmp_path / "out"), *map(str, args)],
        capture_output=True, text=True, timeout=240,
    )


def failure_line(stderr):
    """The report after the table: the last line of stderr (the progress bars come before it)."""
    return stderr.rstrip().splitlines()[-1]


def test_a_timeout_is_one_line_naming_the_notebook_cell_and_limit(tmp_path):
    slow = write(tmp_path / "slow.ipynb", ["x = 1", "\nimport time  # wait\nfor _ in range(60):\n    time.sleep(1)\nprint('done')"])
    proc = run_notebooks(tmp_path, "--timeout", "2", slow)
    assert proc.returncode == 1 and "FAILED" in proc.stdout
    assert failure_line(proc.stderr) == (
        "slow.ipynb timed out in code cell 2 (cell index 1), which starts `import time  # wait`: "
        "still running after the limit of 2 s per cell (raise it with --timeout)")
    # no kernel log (zmq errors after the interrupt, transport warnings), no cell source past its first line
    for noise in ("zmq", "Traceback", "IPKernelApp", "time.sleep", "print('done')"):
        assert noise not in proc.stderr, noise


def test_a_multi_line_error_keeps_its_type_and_whole_message(tmp_path):
    bad = write(tmp_path / "multi.ipynb", ["x = 1", "raise KeyError('the first line')", "y = 2"])
    bad2 = write(tmp_path / "multi2.ipynb", ["class StepError(Exception):\n    pass",
                                             "raise StepError('the loss is nan\\n  at step 12\\n\\nlower the lr')"])
    proc = run_notebooks(tmp_path, bad2)
    assert proc.returncode == 1
    assert failure_line(proc.stderr) == ("multi2.ipynb failed in code cell 2 (cell index 1), which starts "
                                         "`raise StepError('the loss is nan\\n  at step 12\\n\\nlower the lr')`: "
                                         "StepError: the loss is nan at step 12 lower the lr")
    assert "IPKernelApp" not in proc.stderr
    proc = run_notebooks(tmp_path, bad)
    assert failure_line(proc.stderr).endswith(": KeyError: 'the first line'")


def test_the_default_is_every_notebook_of_the_course():
    from course_utils.cli import run_notebooks

    assert sorted(run_notebooks.ROOT.joinpath("notebooks").glob("*.ipynb")), run_notebooks.ROOT


def test_the_reason_is_the_last_line_that_says_something():
    from course_utils.cli.run_notebooks import _reason

    text = "Traceback\n\x1b[31mValueError\x1b[0m: the W2 is too large\n-------------------\n\n"
    assert _reason(text) == "ValueError: the W2 is too large"
    assert _reason("-----\n") == ""


def test_the_table_states_each_budget_and_flags_a_notebook_over_it():
    from course_utils.cli.run_notebooks import Result, table

    rows = [Result("a.ipynb", "2d", 80.0, (3, "train()", 60.0)), Result("b.ipynb", "2d", 95.0, (1, "x = 1", 90.0)),
            Result("c.ipynb", "image", 30.0, None, failure="c.ipynb failed in code cell 2")]
    fast = table(rows, "fast", "cpu").splitlines()
    assert fast[0].startswith("machine: ") and "mode fast" in fast[0]
    assert fast[2].split()[:5] == ["a.ipynb", "2d", "80.0", "90", "ok"] and "60.0 s in cell 3 `train()`" in fast[2]
    assert fast[3].split()[:5] == ["b.ipynb", "2d", "95.0", "90", "OVER"]
    assert fast[4].split()[4] == "FAILED"
    edge = table([Result("g.ipynb", "2d", 90.0, None), Result("h.ipynb", "2d", 90.1, None)], "fast", "cpu")
    assert [line.split()[4] for line in edge.splitlines()[2:4]] == ["ok", "OVER"]  # the budget itself is within it
    full_cpu = table([Result("d.ipynb", "2d", 599.0, None), Result("e.ipynb", "image", 2000.0, None)], "full", "cpu")
    assert full_cpu.splitlines()[2].split()[3:5] == ["600", "ok"]
    assert full_cpu.splitlines()[3].split()[3:6] == ["-", "ok", "(no"]  # an image notebook on a CPU: no stated budget
    assert "900 s" in full_cpu.splitlines()[-1]
    full_gpu = table([Result("e.ipynb", "image", 901.0, None), Result("f.ipynb", "image", 899.0, None)], "full", "cuda")
    assert [line.split()[4] for line in full_gpu.splitlines()[2:4]] == ["OVER", "ok"]


def test_the_workload_is_read_from_the_setup_cell(tmp_path):
    from course_utils.cli.run_notebooks import workload

    image = nbformat.read(write(tmp_path / "i.ipynb", ["x = 1", "config.set_threads('image')  # threads"]), as_version=4)
    two_d = nbformat.read(write(tmp_path / "t.ipynb", ['config.set_threads("2d")']), as_version=4)
    none = nbformat.read(write(tmp_path / "n.ipynb", ["x = 1"]), as_version=4)
    keyword = nbformat.read(write(tmp_path / "k.ipynb", ['config.set_threads(workload="Image")']), as_version=4)
    comment = nbformat.read(write(tmp_path / "c.ipynb", ["x = 1  # config.set_threads('image')"]), as_version=4)
    unknown = nbformat.read(write(tmp_path / "u.ipynb", ["config.set_threads('images')"]), as_version=4)
    assert [workload(nb) for nb in (image, two_d, none, keyword, comment, unknown)] == [
        "image", "2d", "2d", "image", "2d", "2d"]


def test_keep_going_runs_the_rest_and_reports_every_failure(tmp_path):
    bad = write(tmp_path / "a_bad.ipynb", ["raise ValueError('first')"])
    bad2 = write(tmp_path / "b_bad.ipynb", ["raise ValueError('second')"])
    ok = write(tmp_path / "c_ok.ipynb", ["x = 1"])
    proc = run_notebooks(tmp_path, "--keep-going", bad, bad2, ok)
    assert proc.returncode == 1
    rows = {line.split()[0]: line.split()[4] for line in proc.stdout.splitlines() if line.split()[:1] != []
            and line.split()[0].endswith(".ipynb")}
    assert rows.get("a_bad.ipynb") == "FAILED" and rows.get("b_bad.ipynb") == "FAILED" and rows.get("c_ok.ipynb") == "ok"
    lines = proc.stderr.rstrip().splitlines()
    assert lines[-2].endswith("ValueError: first") and lines[-1].endswith("ValueError: second")
    proc = run_notebooks(tmp_path, bad, ok)  # without it: stops at the first failure
    assert proc.returncode == 1 and "a_bad.ipynb" in proc.stdout and "FAILED" in proc.stdout
    assert "c_ok.ipynb" not in proc.stdout


def test_the_slowest_cell_counts_a_cell_that_timed_out(tmp_path):
    slow = write(tmp_path / "slow.ipynb", ["import time\ntime.sleep(0.2)", "import time\ntime.sleep(30)"])
    proc = run_notebooks(tmp_path, "--timeout", "3", slow)
    row = next(line for line in proc.stdout.splitlines() if line.startswith("slow.ipynb"))
    assert "FAILED" in row and "in cell 2 `import time`" in row and float(row.split(" s in cell")[0].split()[-1]) >= 2.9


def test_bad_arguments_are_one_line(tmp_path):
    ok = write(tmp_path / "ok.ipynb", ["x = 1"])
    (tmp_path / "a_file").write_text("")
    proc = run_notebooks(tmp_path, "--out", tmp_path / "a_file", ok)  # the last --out wins
    assert proc.returncode == 2 and "--out" in proc.stderr and "is a file" in proc.stderr and "Traceback" not in proc.stderr
    env = {**__import__("os").environ, "COURSE_MODE": "bogus"}
    proc = subprocess.run([sys.executable, "-m", "course_utils", "run-notebooks", "--out", str(tmp_path / "o"), str(ok)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 2 and "COURSE_MODE='bogus' is not a mode" in proc.stderr
    not_json = tmp_path / "broken.ipynb"
    not_json.write_text("{not json")
    proc = run_notebooks(tmp_path, not_json)
    assert proc.returncode == 2 and f"{not_json} is not a notebook" in proc.stderr and "Traceback" not in proc.stderr
