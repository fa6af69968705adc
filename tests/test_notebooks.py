"""Notebooks are committed clean, in order, and each starts the way CONTRIBUTING.md says."""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
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
    first_code = next(c for c in nb.cells if c.cell_type == "code").source
    assert "config.sizes()" in first_code and "seed_everything" in first_code
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert not re.search(r"\bif\s+(S\.)?fast\b|COURSE_MODE", "\n".join(
        c.source for c in nb.cells if c.cell_type == "code")), "sizes must come from config.sizes()"
