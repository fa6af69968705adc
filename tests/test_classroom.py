"""Classroom and self-study, end to end: nbgrader grades a blank submission 0/N and a solved one
N/N; `nbgrader validate` fails an unfinished notebook and passes a solved one; a self-learner's
`start` writes their stub copy once and never overwrites their work."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_utils.cli import assignment, start
from course_utils.cli._config import ROOT

NOTEBOOKS = ROOT / "notebooks"
NBGRADER = shutil.which("nbgrader")


def checks_in(path: Path) -> int:
    nb = nbformat.read(path, as_version=4)
    return sum(1 for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade"))


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_check_cell_is_a_locked_graded_test(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    ids = []
    for i, cell in enumerate(code):
        meta = cell.metadata.get("nbgrader", {})
        if cell.source.startswith("exercises.check_"):
            assert meta.get("grade") and meta.get("locked") and meta.get("points") == 1 and not meta.get("solution"), (
                f"{path.name}: the check `{cell.source.splitlines()[0]}` is not a locked nbgrader test cell")
            assert "BEGIN SOLUTION" in code[i - 1].source, f"{path.name}: a check without its solution cell above"
        if meta:
            ids.append(meta["grade_id"])
    assert len(ids) == len(set(ids)), f"{path.name}: nbgrader grade_ids repeat: {ids}"
    assert checks_in(path) >= 1


def test_assignment_command_writes_source_and_config_and_refuses_clashes(tmp_path):
    written = assignment.make_assignment("ps1", ["00", "05"], tmp_path)
    assert sorted(p.name for p in written) == ["00_welcome.ipynb", "05_score_matching.ipynb", "nbgrader_config.py"]
    config = (tmp_path / "nbgrader_config.py").read_text()
    assert "c.Execute.timeout = 600" in config and '"COURSE_MODE", "fast"' in config
    with pytest.raises(ValueError, match="pass --force"):
        assignment.make_assignment("ps1", ["00"], tmp_path)
    (tmp_path / "nbgrader_config.py").write_text("# mine\n")
    assignment.make_assignment("ps1", ["00"], tmp_path, force=True)
    assert (tmp_path / "nbgrader_config.py").read_text() == "# mine\n", "an instructor's config is never replaced"
    with pytest.raises(ValueError, match="No single notebook matches '07'"):
        assignment.find_notebooks(["07"])
    with pytest.raises(ValueError, match="where pytest would collect"):
        assignment.make_assignment("ps1", ["00"], ROOT / "notebooks" / "cls")
    proc = subprocess.run([sys.executable, "-m", "course_utils", "assignment", "bad name", "00",
                           "--course", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Assignment name" in proc.stderr


def nbgrader(*args, cwd):
    proc = subprocess.run([NBGRADER, *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "COURSE_THREADS": "1"})
    return proc


@pytest.mark.slow
@pytest.mark.skipif(NBGRADER is None, reason="nbgrader is not installed (pip install -e '.[instructor]')")
def test_instructor_path_scores_blank_zero_and_solved_full(tmp_path):
    """generate_assignment → a blank and a solved submission → autograde → export: 0/N and N/N."""
    course = tmp_path / "classroom"
    assignment.make_assignment("ps1", ["00", "05"], course)
    n_points = sum(checks_in(p) for p in (course / "source" / "ps1").glob("*.ipynb"))
    assert n_points >= 3
    proc = nbgrader("generate_assignment", "ps1", cwd=course)
    assert proc.returncode == 0, proc.stderr[-2000:]
    released = sorted((course / "release" / "ps1").glob("*.ipynb"))
    assert [p.name for p in released] == ["00_welcome.ipynb", "05_score_matching.ipynb"]
    for student, folder in (("blank", course / "release" / "ps1"), ("solved", course / "source" / "ps1")):
        assert nbgrader("db", "student", "add", student, cwd=course).returncode == 0
        target = course / "submitted" / student / "ps1"
        target.mkdir(parents=True)
        for p in folder.glob("*.ipynb"):
            shutil.copyfile(p, target / p.name)
    proc = nbgrader("autograde", "ps1", cwd=course)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert nbgrader("export", cwd=course).returncode == 0
    rows = {r["student_id"]: r for r in csv.DictReader(open(course / "grades.csv"))}
    assert float(rows["blank"]["max_score"]) == n_points == float(rows["solved"]["max_score"])
    assert float(rows["blank"]["score"]) == 0.0
    assert float(rows["solved"]["score"]) == n_points

    # the students' Validate button: fails the unfinished notebook, passes the solved one
    blank = nbgrader("validate", str(course / "release" / "ps1" / "00_welcome.ipynb"), cwd=course)
    assert "VALIDATION FAILED" in blank.stdout + blank.stderr
    solved = nbgrader("validate", str(course / "source" / "ps1" / "00_welcome.ipynb"), cwd=course)
    assert "Success! Your notebook passes all the tests." in solved.stdout + solved.stderr


def test_start_writes_the_stub_copy_once_and_keeps_the_students_work(tmp_path):
    folder = tmp_path / "my-course"
    written, kept = start.start(folder)
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert sorted(p.name for p in written) == names and kept == []
    nb = nbformat.read(folder / "00_welcome.ipynb", as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    assert "BEGIN SOLUTION" not in text and 'raise NotImplementedError("Exercise: complete `gaussian_log_prob`' in text
    # the student works, a notebook is deleted and the command runs again: only the missing one returns
    mine = folder / "00_welcome.ipynb"
    mine.write_text(mine.read_text().replace("raise NotImplementedError", "return None  # my attempt"))
    before = mine.read_text()
    (folder / "05_score_matching.ipynb").unlink()
    written, kept = start.start(folder)
    assert [p.name for p in written] == ["05_score_matching.ipynb"] and len(kept) == len(names) - 1
    assert mine.read_text() == before


def test_start_command_says_where_the_copy_and_solutions_are(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "course_utils", "start", str(tmp_path / "mine"), "--no-lab"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 12 notebook(s)" in proc.stdout or "notebook(s) with the exercises to do" in proc.stdout
    assert "solutions:" in proc.stdout and "notebooks" in proc.stdout
    inside = subprocess.run([sys.executable, "-m", "course_utils", "start", "notebooks/mine", "--no-lab"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert inside.returncode == 2 and inside.stderr.startswith("error: The course folder")
    assert not (NOTEBOOKS / "mine").exists()
