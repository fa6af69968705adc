"""The student release, in both directions, for every notebook.

For each notebook only its setup cell (the first code cell with `config.sizes()`), its solution cells and its
check cells run here, in order (CONTRIBUTING.md): with the solutions every check passes;
in the release every check fails on the stub with its helpful message. Then each released
notebook runs top to bottom in a kernel, as a student would run it before doing any
exercise: every cell either works on the stubs or stops with the exercise's own message.
"""

import copy
import io
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

from course_utils import exercises
from course_utils.cli import release

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
CHECK_CALL = "exercises.check_"


def exercise_cells(nb):
    """(setup cell, [(solution cell, check cell), ...])."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    pairs = []
    for i, cell in enumerate(code):
        if release.BEGIN in cell.source:
            assert i + 1 < len(code) and CHECK_CALL in code[i + 1].source, (
                f"the solution cell `{cell.source.splitlines()[0]}` must be followed by its check cell")
            pairs.append((cell, code[i + 1]))
    return next(c for c in code if "config.sizes()" in c.source), pairs


def run_cells(cells, namespace):
    transform = TransformerManager().transform_cell
    with contextlib.redirect_stdout(io.StringIO()):
        for cell in cells:
            exec(compile(transform(cell.source), "<cell>", "exec"), namespace)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_solutions_pass_and_release_stubs_fail_helpfully(path, monkeypatch):
    monkeypatch.chdir(path.parent)
    nb = nbformat.read(path, as_version=4)
    setup, pairs = exercise_cells(nb)
    if not pairs:
        pytest.skip("no exercises")
    ns = {}
    run_cells([setup], ns)
    for solution, check in pairs:
        run_cells([solution, check], ns)  # raises ExerciseError if a solution is wrong

    released = release.release_notebook(copy.deepcopy(nb), path.name)
    setup_r, pairs_r = exercise_cells(released)
    ns = {}
    run_cells([setup_r], ns)
    for solution, check in pairs_r:
        assert release.BEGIN not in solution.source and "NotImplementedError" in solution.source
        run_cells([solution], ns)
        with pytest.raises(exercises.ExerciseError, match="not implemented yet"):
            run_cells([check], ns)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_solution_text_survives_the_release(path):
    nb = nbformat.read(path, as_version=4)
    released = release.release_notebook(copy.deepcopy(nb), path.name)
    text = "\n".join(c.source for c in released.cells)
    for cell in nb.cells:
        inside = False
        for line in cell.source.splitlines():
            if line.strip() == release.BEGIN:
                inside = True
            elif line.strip() == release.END:
                inside = False
            elif inside and line.strip() and not line.strip().startswith("#"):
                assert line not in text.splitlines(), f"solution line survived: {line!r}"
    assert [c.source for c in nb.cells if release.BEGIN not in c.source or c.cell_type != "code"] == \
        [c.source for c in released.cells if c.cell_type != "code" or "NotImplementedError(\"Exercise" not in c.source]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_nbgrader_accepts_the_solution_cells(path):
    from nbgrader.preprocessors import CheckCellMetadata, ClearSolutions

    nb = nbformat.read(path, as_version=4)
    CheckCellMetadata().preprocess(copy.deepcopy(nb), {})
    cleared, _ = ClearSolutions(enforce_metadata=True).preprocess(copy.deepcopy(nb), {})
    assert all(release.BEGIN not in c.source for c in cleared.cells)


def test_release_command_writes_every_notebook(tmp_path):
    written = release.release(NOTEBOOKS[0].parent, tmp_path / "student")
    assert sorted(p.name for p in written) == [p.name for p in NOTEBOOKS]
    with pytest.raises(ValueError, match="must differ"):
        release.release(NOTEBOOKS[0].parent, NOTEBOOKS[0].parent)
    release.main([str(tmp_path / "default_source")])  # the default source is the course's notebooks/
    assert sorted(p.name for p in (tmp_path / "default_source").iterdir()) == [p.name for p in NOTEBOOKS]


def test_release_errors_name_the_cell():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1\n### BEGIN SOLUTION\ny = 2")])
    nb.cells[0].metadata["nbgrader"] = {"solution": True, "grade_id": "y"}
    with pytest.raises(release.ReleaseError, match="demo, cell 0: ### BEGIN SOLUTION is never closed"):
        release.release_notebook(nb, "demo")
    nb.cells[0].source += "\n### END SOLUTION"
    nb.cells[0].metadata = {}
    with pytest.raises(release.ReleaseError, match="no nbgrader solution metadata"):
        release.release_notebook(nb, "demo")


def test_stub_keeps_indentation_and_names_the_exercise():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n"
    out = release.strip_solutions(src, "f", "here")
    assert out == 'def f(x):\n    raise NotImplementedError("Exercise: complete `f`, then run the check below.")'


# -- the command's refusals
def test_release_refuses_a_non_empty_folder_without_force(tmp_path):
    out = tmp_path / "student"
    release.release(NOTEBOOKS[0].parent, out)
    mine = out / "my_notes.txt"
    mine.write_text("a student's own work")
    with pytest.raises(ValueError, match=r"is not empty; pass --force to write into it"):
        release.release(NOTEBOOKS[0].parent, out)
    (out / NOTEBOOKS[0].name).write_text("edited")
    written = release.release(NOTEBOOKS[0].parent, out, force=True)
    assert len(written) == len(NOTEBOOKS) and (out / NOTEBOOKS[0].name).read_text() != "edited"
    assert mine.read_text() == "a student's own work"
    (tmp_path / "empty").mkdir()
    assert len(release.release(NOTEBOOKS[0].parent, tmp_path / "empty")) == len(NOTEBOOKS)  # empty is fine


@pytest.mark.parametrize("where", ["notebooks/student", "notebooks/a/b", "tests/student"])
def test_release_refuses_a_folder_that_pytest_would_collect_even_with_force(where):
    out = release.ROOT / where
    existed = out.exists()
    for force in (False, True):
        with pytest.raises(ValueError, match="where pytest would collect the stubs"):
            release.release(NOTEBOOKS[0].parent, out, force=force)
    assert out.exists() == existed  # nothing was created


def test_release_refuses_a_folder_inside_another_source(tmp_path):
    source = tmp_path / "course"
    source.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), source / "a.ipynb")
    with pytest.raises(ValueError, match="where pytest would collect"):
        release.release(source, source / "student", force=True)
    assert release.release(source, tmp_path / "student")[0].name == "a.ipynb"


def run_release(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "course_utils", "release", *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def test_release_command_refusals_are_one_line_with_exit_status_2(tmp_path):
    out = tmp_path / "student"
    assert run_release(out).returncode == 0
    proc = run_release(out)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"error: The release folder {out} is not empty; pass --force to write into it "
                           "(replacing notebooks of the same name), or choose a new folder.\n")
    assert run_release(out, "--force").returncode == 0
    inside = release.ROOT / "notebooks" / "student"
    proc = run_release("--force", "notebooks/student", cwd=release.ROOT)
    assert proc.returncode == 2 and not inside.exists()
    assert proc.stderr == (f"error: The release folder notebooks/student is inside {release.ROOT / 'notebooks'}, "
                           "where pytest would collect the stubs as notebooks to test; "
                           "choose a folder outside it, e.g. build/student.\n")


# -- the released notebooks, run top to bottom
def allowed_error(output) -> bool:
    """The exercise's stub (`raise NotImplementedError("Exercise: ...")`), its check's message
    (`ExerciseError`), or a guard that stops a cell needing the exercise's result (`ExerciseError`)."""
    return ((output.ename == "NotImplementedError" and "Exercise" in output.evalue)
            or output.ename == "ExerciseError")


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    out = tmp_path_factory.mktemp("release") / "student"
    release.release(NOTEBOOKS[0].parent, out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_released_notebook_runs_top_to_bottom_on_the_stubs(path, released, monkeypatch):
    from nbclient import NotebookClient

    for name, value in {"COURSE_MODE": "fast", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                        "MPLBACKEND": "Agg", "COURSE_DEVICE": "cpu"}.items():
        monkeypatch.setenv(name, value)  # the kernel inherits them
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    nb = nbformat.read(released / path.name, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(released)}}).execute()
    seconds = time.perf_counter() - start
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [(number, cell, out) for number, cell in enumerate(code, 1)
              for out in cell.outputs if out.output_type == "error"]
    bad = [f"code cell {number} `{cell.source.strip().splitlines()[0][:60]}`: {out.ename}: {out.evalue[:200]}"
           for number, cell, out in errors if not allowed_error(out)]
    assert not bad, f"{path.name} (released, {seconds:.0f} s) has cells that fail otherwise than with an " \
        "exercise's message; guard them:\n" + "\n".join(bad)
    if any(release.BEGIN in c.source for c in nbformat.read(path, as_version=4).cells):
        assert errors, f"{path.name}: the released notebook ran without reaching a stub"


# -- what the notebooks assert
def timing_asserts(nb) -> list[str]:
    """First lines of code cells that time something (time.perf_counter, or a function defined
    with it) and also assert: a measured time depends on the machine and its load."""
    import re

    code = [c.source for c in nb.cells if c.cell_type == "code"]
    timers = {name for src in code if "perf_counter" in src for name in re.findall(r"^def (\w+)", src, re.M)}
    uses_timer = re.compile(r"perf_counter|\b(" + "|".join(map(re.escape, timers)) + r")\(") if timers else \
        re.compile("perf_counter")
    return [src.splitlines()[0] for src in code
            if uses_timer.search(src) and re.search(r"^\s*assert\b", src, re.M)]


def test_notebook_01_asserts_on_counted_operations_not_on_wall_clock_time():
    path = NOTEBOOKS[0].parent / "01_change_of_variables_and_normalizing_flows.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert timing_asserts(nb) == []
    assert any("FlopCounterMode" in c.source and "assert" in c.source for c in nb.cells)


def test_notebook_03_asserts_on_counted_backward_passes_not_on_wall_clock_time():
    path = NOTEBOOKS[0].parent / "03_continuous_normalizing_flows_ffjord.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert timing_asserts(nb) == []
    assert any("backward_passes(" in c.source and "assert (n_exact, n_hutch) == (dim, 1)" in c.source
               for c in nb.cells if c.cell_type == "code")
