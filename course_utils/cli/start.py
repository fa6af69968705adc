"""Start (or continue) the course: your own copy of the notebooks with the exercises to do.

    python -m course_utils start [FOLDER] [--no-lab]

The first time, FOLDER (default `my-course/`, beside `notebooks/`) receives the student
release of every notebook: the same notebooks with each exercise's solution replaced by a
stub for you to complete. After that, `start` only adds notebooks that are new in the course;
a notebook already in FOLDER is your work and is never replaced. Then JupyterLab opens there.
The solutions stay in `notebooks/`, to compare with once you are done.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from . import release
from ._config import ROOT, Parser, run

DEFAULT = ROOT / "my-course"


def start(folder: str | Path = DEFAULT, source: str | Path = ROOT / "notebooks") -> tuple[list[Path], list[Path]]:
    """Write into `folder` the student release of each notebook it lacks; return (written, kept)."""
    folder, source = Path(folder), Path(source)
    notebooks = sorted(source.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"No notebooks (*.ipynb) in {source}.")
    # the same refusals as `release` (not inside notebooks/ or tests/), but an existing folder is
    # fine: it is the student's own copy, and only missing notebooks are added to it
    release.check_out_dir(source, folder, force=True, noun="course folder", example="my-course")
    missing = [p for p in notebooks if not (folder / p.name).exists()]
    kept = [folder / p.name for p in notebooks if (folder / p.name).exists()]
    released = [(p, release.release_notebook(nbformat.read(p, as_version=4), p.name)) for p in missing]
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for path, nb in released:
        target = folder / path.name
        tmp = target.with_suffix(".ipynb.tmp")
        nbformat.write(nb, tmp)
        os.replace(tmp, target)
        written.append(target)
    return written, kept


def _show(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv=None):
    parser = Parser(prog="python -m course_utils start", description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(DEFAULT),
                        help=f"your copy of the course (default: {DEFAULT})")
    parser.add_argument("--no-lab", action="store_true", help="write the copy but do not open JupyterLab")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    written, kept = start(folder)
    if written:
        print(f"wrote {len(written)} notebook(s) with the exercises to do into {_show(folder)}/: "
              + ", ".join(p.name for p in written))
    if kept:
        print(f"kept your {len(kept)} notebook(s) already in {_show(folder)}/ unchanged")
    print(f"solutions: {_show(ROOT / 'notebooks')}/ (compare once your check passes)")
    if args.no_lab:
        return 0
    lab = shutil.which("jupyter")
    if lab is None:
        raise FileNotFoundError("JupyterLab is not installed here: run `pip install -e .` in the course folder, "
                                "or open the notebooks in your own Jupyter.")
    print(f"opening JupyterLab in {_show(folder)}/ (Ctrl-C here stops it)")
    try:
        return subprocess.call([lab, "lab", str(folder)])
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(run(main))
