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
    assert "b_bad.ipynb failed in code cell 2" in proc.stderr and "`y = 2`" in proc.stderr
    assert "ValueError: the W2 is too large" in proc.stderr
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


def test_the_default_is_every_notebook_of_the_course():
    from course_utils.cli import run_notebooks

    assert sorted(run_notebooks.ROOT.joinpath("notebooks").glob("*.ipynb")), run_notebooks.ROOT


def test_the_reason_is_the_last_line_that_says_something():
    from course_utils.cli.run_notebooks import _reason

    text = "Traceback\n\x1b[31mValueError\x1b[0m: the W2 is too large\n-------------------\n\n"
    assert _reason(text) == "ValueError: the W2 is too large"
    assert _reason("-----\n") == ""
