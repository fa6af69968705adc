"""The student release, in both directions, for every notebook.

For each notebook only its setup cell (the first code cell), its solution cells and its
check cells run here, in order (CONTRIBUTING.md): with the solutions every check passes;
in the release every check fails on the stub with its helpful message.
"""

import copy
import io
import contextlib
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
    return code[0], pairs


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
