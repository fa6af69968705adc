"""Give every notebook its Colab and Binder links and the cell that installs the course on Colab.

    python tools/links.py            # rewrite notebooks/*.ipynb in place (idempotent)
    python tools/links.py --check    # exit 1 if a notebook is not up to date

The repository's address is read from `[project.urls] Repository` in pyproject.toml, so a
fork changes it in one place and runs this script again. Each notebook gets:

- under its title, one line of links: open in Colab, launch on Binder;
- as its first code cell, `INSTALL_CELL`: on Colab, where `course_utils` is missing, it
  clones the repository into /content/course and installs it (with the shipped checkpoints
  in `data/`); anywhere else it does nothing. The setup cell follows it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from course_utils.cli._config import repository_url

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
LINKS_MARK = "[Open in Colab]"
INSTALL_MARK = "# Colab: install the course on first use"

INSTALL_CELL = '''\
# Colab: install the course on first use (this cell does nothing where course_utils is installed).
import importlib.util
import sys

if importlib.util.find_spec("course_utils") is None and "google.colab" in sys.modules:
    import subprocess
    subprocess.run(["git", "clone", "--quiet", "--depth", "1", "{repo}.git", "/content/course"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", "/content/course"], check=True)
    sys.path.insert(0, "/content/course")  # an editable install is seen by new kernels; this one needs the path'''


def repository() -> str:
    url = repository_url()
    if not url:
        sys.exit("pyproject.toml has no `Repository = \"https://github.com/OWNER/NAME\"` under [project.urls].")
    return url


def links_line(repo: str, name: str, branch: str = "main") -> str:
    owner_repo = repo.removeprefix("https://github.com/")
    colab = f"https://colab.research.google.com/github/{owner_repo}/blob/{branch}/notebooks/{name}"
    binder = f"https://mybinder.org/v2/gh/{owner_repo}/{branch}?labpath=notebooks%2F{name}"
    return (f"{LINKS_MARK}({colab}) · [Launch on Binder]({binder}) · "
            "(on your own machine, see the README)")


def install_cell(repo: str) -> str:
    return INSTALL_CELL.format(repo=repo)


def update(nb: nbformat.NotebookNode, name: str, repo: str) -> nbformat.NotebookNode:
    """`nb` with its links line and install cell present and current."""
    title = nb.cells[0]
    lines = [ln for ln in title.source.splitlines() if not ln.startswith(LINKS_MARK)]
    # the links go right under the title line, followed by a blank line
    head, rest = lines[0], lines[1:]
    while rest and rest[0].strip() == "":
        rest = rest[1:]
    title.source = "\n".join([head, "", links_line(repo, name), "", *rest]).rstrip("\n")

    code = [c for c in nb.cells if c.cell_type == "code"]
    if code and code[0].source.startswith(INSTALL_MARK):
        code[0].source = install_cell(repo)
    else:
        index = nb.cells.index(code[0]) if code else len(nb.cells)
        nb.cells.insert(index, nbformat.v4.new_code_cell(install_cell(repo)))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
    return nb


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    check = argv == ["--check"]
    if argv and not check:
        sys.exit(__doc__)
    repo = repository()
    stale = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        before = path.read_text()
        nb = update(nbformat.read(path, as_version=4), path.name, repo)
        nbformat.validate(nb)
        after = nbformat.writes(nb) + "\n"
        if after != before:
            stale.append(path.name)
            if not check:
                path.write_text(after)
    if check and stale:
        print(f"not up to date: {', '.join(stale)} (run `python tools/links.py`)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
