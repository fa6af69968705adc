"""Notebooks are committed clean, in order, and each starts the way CONTRIBUTING.md says."""

import importlib.util
import re
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import links  # noqa: E402

_FIND_SPEC = importlib.util.find_spec
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_course_notebooks_exist_in_order():
    names = [p.stem for p in NOTEBOOKS]
    assert names[:1] == ["00_welcome"]
    numbers = [re.match(r"(\d\d)", n).group(1) for n in names]
    assert numbers == sorted(numbers)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name} cell {i} has stored outputs"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_setup_cell_and_references(path):
    nb = nbformat.read(path, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code[0].startswith(links.INSTALL_MARK), "the first code cell installs the course on Colab"
    setup = code[1]
    assert "config.sizes()" in setup and "seed_everything" in setup
    assert re.search(r'config\.set_threads\("(2d|image)"\)', setup), "the setup cell chooses its threads"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert not re.search(r"\bif\s+(S\.)?fast\b|COURSE_MODE", "\n".join(
        c.source for c in nb.cells if c.cell_type == "code")), "sizes must come from config.sizes()"


def test_links_and_install_cell_are_current():
    assert links.main(["--check"]) == 0, "run `python tools/links.py`"
    nb = nbformat.read(NOTEBOOKS[1], as_version=4)
    title = nb.cells[0].source
    assert f"blob/main/notebooks/{NOTEBOOKS[1].name})" in title
    assert f"labpath=notebooks%2F{NOTEBOOKS[1].name})" in title


def _run_install_cell(monkeypatch, *, colab: bool, installed: bool):
    """Execute the install cell with Colab and the package simulated; return the commands it ran."""
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append(cmd))
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (_FIND_SPEC(name, *a) if installed or name != "course_utils" else None))
    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(links.install_cell(links.repository()), {})
    return calls


def test_install_cell_installs_only_on_colab_without_the_course(monkeypatch):
    calls = _run_install_cell(monkeypatch, colab=True, installed=False)
    repo = links.repository()
    assert calls[0][:2] == ["git", "clone"] and f"{repo}.git" in calls[0] and calls[0][-1] == "/content/course"
    assert calls[1][1:4] == ["-m", "pip", "install"] and calls[1][-2:] == ["-e", "/content/course"]
    assert sys.path[0] == "/content/course"
    # negative controls: installed already, or not on Colab: nothing runs
    assert _run_install_cell(monkeypatch, colab=True, installed=True) == []
    assert _run_install_cell(monkeypatch, colab=False, installed=False) == []
