"""Write the student release of the notebooks: solutions out, everything else unchanged.

    python -m course_utils release OUT_DIR [--source notebooks]

In each code cell, every region from `### BEGIN SOLUTION` to `### END SOLUTION` (nbgrader's
markers) becomes one line, at the marker's indentation:

    raise NotImplementedError("Exercise: complete `NAME`, then run the check below.")

Outputs and execution counts are cleared. A marker in a cell without nbgrader's
solution metadata, or a region left open, is an error naming the notebook and cell.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from ._config import ROOT, Parser, run

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


class ReleaseError(ValueError):
    pass


def strip_solutions(source: str, name: str, where: str) -> str:
    """Replace each solution region of a cell's source by a `raise NotImplementedError`."""
    out, inside = [], False
    for line in source.splitlines():
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ReleaseError(f"{where}: a second {BEGIN} before {END}.")
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f'{indent}raise NotImplementedError("Exercise: complete `{name}`, then run the check below.")')
            inside = True
        elif marker == END:
            if not inside:
                raise ReleaseError(f"{where}: {END} without {BEGIN}.")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ReleaseError(f"{where}: {BEGIN} is never closed by {END}.")
    return "\n".join(out)


def release_notebook(nb: nbformat.NotebookNode, label: str = "notebook") -> nbformat.NotebookNode:
    """A copy of `nb` with solutions stripped and outputs cleared."""
    nb = nbformat.from_dict(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        if BEGIN not in cell.source and END not in cell.source:
            continue
        meta = cell.metadata.get("nbgrader", {})
        where = f"{label}, cell {index}"
        if not meta.get("solution"):
            raise ReleaseError(f"{where} has solution markers but no nbgrader solution metadata.")
        cell.source = strip_solutions(cell.source, meta.get("grade_id", f"exercise {index}"), where)
    return nb


def release(source_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Release every notebook of `source_dir` into `out_dir`; return the written paths."""
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    notebooks = sorted(source_dir.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"No notebooks (*.ipynb) in {source_dir}.")
    if out_dir.resolve() == source_dir.resolve():
        raise ValueError("The release folder must differ from the source folder (it would overwrite the solutions).")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        nb = release_notebook(nbformat.read(path, as_version=4), path.name)
        nbformat.write(nb, out_dir / path.name)
        written.append(out_dir / path.name)
    return written


def main(argv=None):
    default = ROOT / "notebooks"
    parser = Parser(prog="python -m course_utils release", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder for the student notebooks")
    parser.add_argument("--source", default=str(default), help=f"solution notebooks (default: {default})")
    args = parser.parse_args(argv)
    for path in release(args.source, args.out_dir):
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(run(main))
