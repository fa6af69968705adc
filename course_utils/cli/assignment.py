"""Make an nbgrader assignment from any notebooks of the course.

    python -m course_utils assignment NAME NOTEBOOK... [--course DIR] [--force]

NOTEBOOK is a file or a prefix of one in `notebooks/` (`01`, `05`, `07a`). This writes
DIR/source/NAME/ (the solution notebooks, nbgrader's source) and, if DIR has none yet,
DIR/nbgrader_config.py with the course's grading settings (fast mode, a cell timeout that
fast mode fits). Then, in DIR, nbgrader does the rest:

    nbgrader generate_assignment NAME        # release/NAME: the students' version
    nbgrader autograde NAME                  # after collecting submitted/<student>/NAME/
    nbgrader export                          # grades.csv

Each exercise's check cell is a locked autograder test worth one point; the solution cells
carry nbgrader's solution metadata. Existing files are replaced only with --force.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from ._config import ROOT, Parser, run
from .release import _inside

DEFAULT_COURSE = ROOT / "classroom"

CONFIG = '''\
"""nbgrader settings for the course (written by `python -m course_utils assignment`)."""

import os

# grade in fast mode, the mode every notebook's checks are written for
os.environ.setdefault("COURSE_MODE", "fast")
# one thread per kernel: autograding runs beside other work (COURSE_THREADS overrides)
os.environ.setdefault("COURSE_THREADS", "1")

c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = "gen-course"
# a fast-mode cell takes well under a minute; nbgrader's default of 30 s is too short for
# the training cells of some notebooks
c.Execute.timeout = 600
c.ExecutePreprocessor.timeout = 600
'''


def find_notebooks(names, folder: Path = ROOT / "notebooks") -> list[Path]:
    """The notebooks named by path or by prefix (`05` -> notebooks/05_score_matching.ipynb)."""
    found = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb" and path.is_file():
            found.append(path)
            continue
        matches = sorted(p for p in folder.glob("*.ipynb") if re.match(re.escape(name) + r"(_|\.ipynb$)", p.name))
        if len(matches) != 1:
            choices = ", ".join(p.stem.split("_")[0] for p in sorted(folder.glob("*.ipynb")))
            raise ValueError(f"No single notebook matches {name!r}: give a file or one of {choices}.")
        found.append(matches[0])
    return found


def make_assignment(name: str, notebooks, course: str | Path = DEFAULT_COURSE, force: bool = False) -> list[Path]:
    """Write `course`/source/`name`/ and, if missing, `course`/nbgrader_config.py; return the paths written."""
    if not re.fullmatch(r"[A-Za-z0-9][\w-]*", name):
        raise ValueError(f"Assignment name {name!r}: use letters, digits, '-' and '_' (e.g. ps1).")
    paths = find_notebooks(notebooks)
    course = Path(course)
    target = course / "source" / name
    clashes = [target / p.name for p in paths if (target / p.name).exists()]
    if clashes and not force:
        raise ValueError(f"{clashes[0]} exists; pass --force to replace the assignment's notebooks.")
    if course.resolve() == ROOT.resolve():
        raise ValueError("Choose a course folder of its own (e.g. classroom/), not the repository itself.")
    for folder in (ROOT / "notebooks", ROOT / "tests"):
        if _inside(course.resolve(), folder.resolve()):
            raise ValueError(f"The course folder {course} is inside {folder}, where pytest would collect its "
                             "notebooks; choose a folder outside it, e.g. classroom/.")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for p in paths:
        shutil.copyfile(p, target / p.name)
        written.append(target / p.name)
    config = course / "nbgrader_config.py"
    if not config.exists():
        config.write_text(CONFIG)
        written.append(config)
    return written


def main(argv=None):
    parser = Parser(prog="python -m course_utils assignment", description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the assignment's name, e.g. ps1")
    parser.add_argument("notebooks", nargs="+", help="notebooks: files or prefixes such as 01 05 07a")
    parser.add_argument("--course", default=str(DEFAULT_COURSE),
                        help=f"the nbgrader course folder (default: {DEFAULT_COURSE})")
    parser.add_argument("--force", action="store_true", help="replace notebooks already in source/NAME/")
    args = parser.parse_args(argv)
    for path in make_assignment(args.name, args.notebooks, args.course, args.force):
        print(f"wrote {path}")
    print(f"next: cd {args.course} && nbgrader generate_assignment {args.name}")


if __name__ == "__main__":
    sys.exit(run(main))
