"""Write the student release of the notebooks: solutions out, everything else unchanged.

    python -m course_utils release OUT_DIR [--source notebooks] [--force]

In each code cell, every region from `### BEGIN SOLUTION` to `### END SOLUTION` (nbgrader's
markers) becomes one line, at the marker's indentation:

    raise NotImplementedError("Exercise: complete `NAME`, then run the check below.")

Outputs and execution counts are cleared. A marker in a cell without nbgrader's
solution metadata, or a region left open, is an error naming the notebook and cell.

OUT_DIR must be new or empty (`--force` writes into a non-empty one, replacing notebooks of
the same name), and never inside the source folder, `notebooks/` or `tests/`, where pytest
would collect the stubs as notebooks to test.
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


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_out_dir(source_dir: Path, out_dir: Path, force: bool = False, noun: str = "release folder",
                  example: str = "build/student") -> None:
    """Refuse a release folder that would overwrite solutions, be collected by pytest, or
    (without `force`) replace files already there. Each refusal is one ValueError line."""
    out, source = out_dir.resolve(), source_dir.resolve()
    if out == source:
        raise ValueError(f"The {noun} must differ from the source folder (it would overwrite the solutions).")
    for folder in (source, ROOT / "notebooks", ROOT / "tests"):
        if _inside(out, folder.resolve()):
            raise ValueError(f"The {noun} {out_dir} is inside {folder}, where pytest would collect the "
                             f"stubs as notebooks to test; choose a folder outside it, e.g. {example}.")
    if out.exists() and not out.is_dir():
        raise ValueError(f"The {noun} {out_dir} exists and is not a folder.")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ValueError(f"The release folder {out_dir} is not empty; pass --force to write into it "
                         "(replacing notebooks of the same name), or choose a new folder.")


def release(source_dir: str | Path, out_dir: str | Path, force: bool = False) -> list[Path]:
    """Release every notebook of `source_dir` into `out_dir`; return the written paths.

    `out_dir` must be new or empty unless `force`, and never inside `source_dir`,
    `notebooks/` or `tests/` (ValueError)."""
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    notebooks = sorted(source_dir.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"No notebooks (*.ipynb) in {source_dir}.")
    check_out_dir(source_dir, out_dir, force)
    released = [(path, release_notebook(nbformat.read(path, as_version=4), path.name)) for path in notebooks]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, nb in released:
        nbformat.write(nb, out_dir / path.name)
        written.append(out_dir / path.name)
    return written


def main(argv=None):
    default = ROOT / "notebooks"
    parser = Parser(prog="python -m course_utils release", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder for the student notebooks")
    parser.add_argument("--source", default=str(default), help=f"solution notebooks (default: {default})")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty OUT_DIR, replacing notebooks of the same name")
    args = parser.parse_args(argv)
    for path in release(args.source, args.out_dir, force=args.force):
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(run(main))
