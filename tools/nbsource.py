"""Author notebooks as percent-format scripts; the committed .ipynb is the one source.

    python tools/nbsource.py to-ipynb draft.py notebooks/NN_name.ipynb
    python tools/nbsource.py to-py notebooks/NN_name.ipynb draft.py   # to edit, then convert back

Format: a line `# %%` starts a code cell, `# %% [markdown]` a Markdown cell whose lines
start with `# ` (or are a bare `#`). A code cell holding `### BEGIN SOLUTION` gets
nbgrader's solution metadata, its grade_id taken from the first `def` (or `NAME =`) in it.
A code cell that begins with `exercises.check_` is the exercise's check: it becomes an
nbgrader autograder test cell (graded, locked, worth one point), its grade_id the check's name.
The notebook is written without outputs.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

SOLUTION = "### BEGIN SOLUTION"


def _grade_id(source: str, index: int) -> str:
    m = re.search(r"^\s*def\s+(\w+)", source, re.M) or re.search(r"^(\w+)\s*=", source, re.M)
    return m.group(1) if m else f"exercise_{index}"


def solution_metadata(source: str, index: int) -> dict:
    return {"grade": False, "grade_id": _grade_id(source, index), "locked": False,
            "schema_version": 3, "solution": True, "task": False}


CHECK = re.compile(r"^exercises\.(check_\w+)\(")


def check_metadata(source: str) -> dict | None:
    """nbgrader's test-cell metadata for a check cell, else None."""
    m = CHECK.match(source)
    if m is None:
        return None
    return {"grade": True, "grade_id": m.group(1), "locked": True, "points": 1,
            "schema_version": 3, "solution": False, "task": False}


def to_notebook(text: str) -> nbformat.NotebookNode:
    chunks = re.split(r"^# %%(.*)$", text, flags=re.M)
    cells = []
    for header, body in zip(chunks[1::2], chunks[2::2]):
        body = body.strip("\n")
        if "[markdown]" in header:
            lines = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in body.splitlines()]
            cells.append(nbformat.v4.new_markdown_cell("\n".join(lines)))
        else:
            cell = nbformat.v4.new_code_cell(body)
            if SOLUTION in body:
                cell.metadata["nbgrader"] = solution_metadata(body, len(cells))
            elif check_metadata(body) is not None:
                cell.metadata["nbgrader"] = check_metadata(body)
            cells.append(cell)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
    return nb


def to_script(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines = ["# " + ln if ln else "#" for ln in cell.source.splitlines()]
            parts.append("# %% [markdown]\n" + "\n".join(lines))
        else:
            parts.append("# %%\n" + cell.source)
    return "\n\n".join(parts) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] not in ("to-ipynb", "to-py"):
        sys.exit(__doc__)
    cmd, src, dst = argv
    if cmd == "to-ipynb":
        nb = to_notebook(Path(src).read_text())
        nbformat.validate(nb)
        nbformat.write(nb, dst)
    else:
        Path(dst).write_text(to_script(nbformat.read(src, as_version=4)))


if __name__ == "__main__":
    main()
