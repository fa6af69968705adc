"""The course as a static website: every notebook as a page, with its figures and printed numbers.

    python -m course_utils site [--out build/site] [--executed build/executed] [--rerun | --no-run] [--force]

Runs every notebook in fast mode with `run-notebooks` (reusing an executed copy in `--executed`
that is newer than its notebook and ran to the end in fast mode; `--rerun` runs them all;
`--no-run` runs none, for a quick preview of the text: a notebook without such a copy appears
without outputs, and the home page names it), then
builds the site with Sphinx, MyST-NB and sphinx-book-theme from a staging folder under build/
(the configuration is `site/conf.py`): the README's course map as the home page, the notebooks
in course order in the sidebar, math by a MathJax served from the site itself. Nothing is run
while building, and the pages load nothing from the network. Open it with
`python -m http.server -d build/site` (or its index.html as a file).

`--out` must be a new or empty folder, or a site this command built (it is replaced); another
existing folder only with `--force`, and never notebooks/, data/ or the repository itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._config import ROOT, Parser, repository_url

MARKER = ".course-site"  # in every site this command builds: an --out it may replace
STAGING = ROOT / "build"  # the staging folder is made under it, and removed afterwards
NEEDS = {"sphinx": "sphinx", "myst_nb": "myst-nb", "sphinx_book_theme": "sphinx-book-theme",
         "jupyter_server_mathjax": "jupyter-server-mathjax"}


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_out(out: Path, executed: Path, force: bool) -> None:
    """Refuse an --out the command must not write (one-line ValueError)."""
    for name in ("notebooks", "data"):
        folder = (ROOT / name).resolve()
        if _inside(out, folder) or _inside(folder, out):
            raise ValueError(f"--out {out} would write over the course's {name}/: pass another folder, e.g. build/site.")
    if _inside(ROOT.resolve(), out):
        raise ValueError(f"--out {out} holds the repository: pass a folder for the site alone, e.g. build/site.")
    if _inside(out, executed) or _inside(executed, out):
        raise ValueError(f"--out {out} and --executed {executed} overlap: pass two separate folders.")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder: pass a folder for the site.")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists() and not force:
        raise ValueError(f"--out {out} exists and is not a site this command built: pass --force to replace it, "
                         "or another --out.")


def check_executed(executed: Path) -> None:
    for name in ("notebooks", "data"):
        folder = (ROOT / name).resolve()
        if _inside(executed, folder) or _inside(folder, executed):
            raise ValueError(f"--executed {executed} would write into the course's {name}/: pass another folder, "
                             "e.g. build/executed.")
    if executed.exists() and not executed.is_dir():
        raise ValueError(f"--executed {executed} is a file, not a folder.")


def check_tools() -> None:
    """Raise a one-line ValueError naming the packages of the `site` extra that are missing."""
    import importlib.util

    missing = [pkg for module, pkg in NEEDS.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ValueError(f"building the site needs {', '.join(missing)}: pip install -e \".[site]\"")


def fresh(executed_copy: Path, source: Path) -> bool:
    """Whether `executed_copy` can stand for `source`: newer than it, run to the end in fast mode."""
    import nbformat

    if not executed_copy.is_file() or executed_copy.stat().st_mtime <= source.stat().st_mtime:
        return False
    try:
        run = nbformat.read(executed_copy, as_version=4).metadata.get("course_run", {})
    except Exception:  # an unreadable copy is run again
        return False
    return run.get("mode") == "fast" and run.get("complete") is True


def image_outputs(nb) -> int:
    """The number of image outputs (png, jpeg, svg) of an executed notebook: the figures its page shows."""
    kinds = ("image/png", "image/jpeg", "image/svg+xml")
    return sum(any(k in out.get("data", {}) for k in kinds)
               for cell in nb.cells for out in cell.get("outputs", []))


# -- the home page: the README's course map, its notebook names made links to their pages
def course_map(readme: str) -> tuple[str, str]:
    """(title, the text between the title and the README's first section: the introduction and the map)."""
    m = re.search(r"^# ([^\n]+)\n(.*?)^## ", readme, re.M | re.S)
    if m is None or "|" not in m.group(2):
        raise ValueError("README.md has no course map (a table between its title and its first `## ` section)")
    return m.group(1).strip(), m.group(2).strip()


def home_page(readme: str, names: list[str], repository: str = "", unrun: list[str] = ()) -> str:
    """The MyST markdown of the site's index page, with the toctree of the notebooks `names` (stems);
    `unrun`: the notebooks shown without outputs (a `--no-run` preview)."""
    title, text = course_map(readme)
    known = set(names)

    def link(m):
        name = m.group(1)
        return f"[`{name}`](notebooks/{name}.ipynb)" if name in known else m.group(0)

    lines = [re.sub(r"`([0-9][0-9a-z]*_[A-Za-z0-9_]+)`", link, ln) if ln.startswith("|") else ln
             for ln in text.splitlines()]
    where = f" ([the repository]({repository}))" if repository else ""
    return "\n".join([
        f"# {title}", "", *lines, "",
        ("Each page run for this build" if unrun else "Each page") + " is a notebook as it ran in fast mode "
        "(`COURSE_MODE=fast`: small models, short training), with its figures and printed numbers. The buttons "
        f"at the top of a page download the notebook or open it in the repository; to run it yourself, follow "
        f"the README{where}.",
        *(["", f"**A preview:** {len(unrun)} of {len(names)} notebooks were not run for this build; their pages "
           "show the text and code without outputs: "
           + ", ".join(f"[`{name}`](notebooks/{name}.ipynb)" for name in unrun) + "."] if unrun else []),
        "", "```{toctree}", ":hidden:", ":caption: Notebooks", ":maxdepth: 1", "",
        *[f"notebooks/{name}" for name in names], "```", "",
    ])


def stage(folder: Path, sources: list[Path], executed: Path, unrun: list[Path] = ()) -> None:
    """The Sphinx source folder: index.md and the executed notebooks (their widget state dropped);
    the notebooks `unrun` as they are in the course, without outputs."""
    import nbformat

    (folder / "notebooks").mkdir(parents=True)
    names = [p.stem for p in sources]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (folder / "index.md").write_text(home_page(readme, names, repository_url(), [p.stem for p in unrun]),
                                     encoding="utf-8")
    for path in sources:
        nb = nbformat.read(path if path in unrun else executed / path.name, as_version=4)
        nb.metadata.pop("widgets", None)  # no widget manager on a static page
        nbformat.write(nb, folder / "notebooks" / path.name)


def build(staging: Path, html: Path) -> tuple[float, list[str]]:
    """Run Sphinx on `staging` into `html`; return (seconds, its warnings). A failed build is a ValueError."""
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-c", str(ROOT / "site"),
           "-d", str(staging / ".doctrees"), str(staging / "src"), str(html)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    warnings = [ln for ln in proc.stderr.splitlines() if "WARNING" in ln or "ERROR" in ln]
    if proc.returncode != 0:
        last = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise ValueError(f"Sphinx failed (exit {proc.returncode}): {last[-1] if last else 'no message'}")
    return seconds, warnings


def size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv=None) -> int:
    parser = Parser(prog="python -m course_utils site", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "build" / "site"), help="folder for the site (default: build/site)")
    parser.add_argument("--executed", default=str(ROOT / "build" / "executed"),
                        help="folder of executed notebooks to reuse and to write (default: build/executed)")
    runs = parser.add_mutually_exclusive_group()
    runs.add_argument("--rerun", action="store_true", help="run every notebook again, reusing no executed copy")
    runs.add_argument("--no-run", action="store_true",
                      help="run no notebook: one without a fresh executed copy appears without outputs (a preview)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out that is not a site built here")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell (default: 1800)")
    args = parser.parse_args(argv)

    out, executed = Path(args.out).expanduser().resolve(), Path(args.executed).expanduser().resolve()
    check_executed(executed)
    check_out(out, executed, args.force)
    check_tools()
    sources = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"no notebooks in {ROOT / 'notebooks'}")

    # 1. the executed notebooks, in fast mode
    stale = [p for p in sources if args.rerun or not fresh(executed / p.name, p)]
    unrun = stale if args.no_run else []
    if args.no_run and not executed.is_dir():
        print(f"--no-run: {executed} does not exist, so no notebook has outputs (run `python -m course_utils "
              f"run-notebooks --out {executed}` first, or pass the right --executed)", file=sys.stderr)
    if unrun:
        print(f"--no-run: {len(unrun)} of {len(sources)} notebooks appear without outputs (no complete fast-mode "
              f"copy newer than the notebook in {executed}): " + ", ".join(p.stem.split("_")[0] for p in unrun))
    elif stale:
        print(f"running {len(stale)} of {len(sources)} notebooks in fast mode into {executed} "
              f"({'--rerun' if args.rerun else 'no complete fast-mode copy newer than the notebook'}): "
              + ", ".join(p.stem.split("_")[0] for p in stale), flush=True)
        from .run_notebooks import main as run_notebooks

        # The kernels inherit this environment: a non-interactive MPLBACKEND (Agg, as under pytest)
        # would leave every figure out of the executed notebooks; Jupyter's own inline backend keeps them.
        os.environ.pop("MPLBACKEND", None)
        status = run_notebooks(["--mode", "fast", "--out", str(executed), "--timeout", str(args.timeout),
                                *map(str, stale)])
        if status != 0:
            print("the site was not built: a notebook failed (above)", file=sys.stderr)
            return 1
    if len(stale) < len(sources):
        print(f"reusing {len(sources) - len(stale)} executed copies from {executed} (newer than their notebooks, "
              "run in fast mode; --rerun runs them again)")

    # 2. the site, from a staging folder under build/
    STAGING.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="site-staging-", dir=STAGING))
    try:
        stage(staging / "src", sources, executed, unrun)
        seconds, warnings = build(staging, staging / "html")
        (staging / "html" / MARKER).write_text("built by `python -m course_utils site`; it replaces this folder\n")
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging / "html"), str(out))
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    mathjax = out / "_static" / "mathjax"
    print(f"Sphinx built {len(sources)} notebook pages in {seconds:.0f} s: {out} "
          f"({size(out) / 1e6:.1f} MB, of which MathJax {size(mathjax) / 1e6:.1f} MB)")
    for line in warnings:
        print(f"  {line}")
    print(f"open it: python -m http.server -d {out}  (then http://127.0.0.1:8000/), or {(out / 'index.html').as_uri()}")
    return 0


if __name__ == "__main__":
    from ._config import run

    sys.exit(run(main))
