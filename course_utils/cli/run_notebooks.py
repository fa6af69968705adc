"""Run the course headless, in order, and report how long each notebook took.

    python -m course_utils run-notebooks [--mode fast|full] [--out build/executed] [NOTEBOOK ...]

Executes each notebook top to bottom in a fresh kernel (its own folder as working
directory), writes the executed copy to `--out` (git ignores `build/`; its metadata `course_run`
records the mode and whether it ran to the end, which `site` reads), and prints a table
of notebook, seconds and status. Stops at the first failing notebook with one line naming
the notebook, the code cell (its number and first line) and the reason: the exception's type
and message, the per-cell time limit that it ran past, or the kernel's death. The kernel's own
log (its stderr) goes to a temporary file, not to the terminal; the last line of it is quoted
when the kernel dies.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from tqdm.auto import tqdm

from ..config import MODES
from ._config import ROOT, Parser, run


class NotebookFailed(RuntimeError):
    pass


def _first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip():
            return line.strip()[:70]
    return "(empty cell)"


TCP_WARNING = "Kernel is running over TCP without encryption"  # every kernel's first log line: not a reason


def _one_line(text: str) -> str:
    """`text` with colours removed and all whitespace (newlines too) collapsed to single spaces."""
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())


def _reason(error_text: str) -> str:
    """The last line of an error's text that says something (not a rule of dashes), colours removed."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", error_text)
    lines = [ln.strip() for ln in text.splitlines() if re.search(r"\w", ln)]
    return lines[-1] if lines else ""


def _why(err: Exception, timeout: int, kernel_log: str) -> str:
    """One line: why the cell failed."""
    if isinstance(err, CellTimeoutError):
        return f"still running after the limit of {timeout} s per cell (raise it with --timeout)"
    if isinstance(err, DeadKernelError):
        last = _reason("\n".join(ln for ln in kernel_log.splitlines() if TCP_WARNING not in ln))
        return ("the kernel died while running it (out of memory, or a crash in native code)"
                + (f"; its last words: {last}" if last else ""))
    ename, evalue = getattr(err, "ename", ""), getattr(err, "evalue", "")
    if ename:
        return _one_line(f"{ename}: {evalue}" if evalue.strip() else ename)
    return _one_line(_reason(str(err)) or type(err).__name__)


def run_notebook(path: Path, out_dir: Path, timeout: int) -> float:
    """Execute one notebook; write the executed copy; return seconds.

    Raises NotebookFailed with one line: notebook, code cell number, its first line, reason."""
    nb = nbformat.read(path, as_version=4)
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    bar = tqdm(total=len(code_cells), desc=path.stem, leave=False, unit="cell")
    current = {"index": None}

    def on_start(cell, cell_index):
        current["index"] = cell_index

    def on_done(cell, cell_index):
        bar.update(1)

    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        on_cell_start=on_start, on_cell_complete=on_done,
        # no saved widget state: an HTML export then shows each widget's own text/html form (the reflow
        # explorer's kernel-free page) instead of a widget view that needs JavaScript from a CDN
        store_widget_state=False,
    )
    mode, complete = os.environ.get("COURSE_MODE", "fast"), False
    start = time.perf_counter()
    # The kernel's stderr (its log: transport warnings, zmq errors after an interrupt) goes here.
    with tempfile.TemporaryFile("w+", prefix="kernel-", suffix=".log") as kernel_log:
        try:
            client.execute(stderr=kernel_log)
            complete = True
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
            index = current["index"]
            cell = nb.cells[index] if index is not None else None
            number = code_cells.index(index) + 1 if index in code_cells else "?"
            first = _first_line(cell.source) if cell is not None else ""
            kernel_log.seek(0)
            why = _why(err, timeout, kernel_log.read())
            verb = "timed out" if isinstance(err, CellTimeoutError) else "failed"
            raise NotebookFailed(
                f"{path.name} {verb} in code cell {number} (cell index {index}), which starts `{first}`: {why}"
            ) from None
        finally:
            bar.close()
            out_dir.mkdir(parents=True, exist_ok=True)
            # the mode it ran in and whether it ran to the end (`site` reuses complete fast-mode copies)
            nb.metadata["course_run"] = {"mode": mode, "complete": complete}
            nbformat.write(nb, out_dir / path.name)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = Parser(prog="python -m course_utils run-notebooks", description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: all, in order)")
    parser.add_argument("--mode", choices=MODES, default=os.environ.get("COURSE_MODE", "fast"))
    parser.add_argument("--out", default=str(ROOT / "build" / "executed"), help="folder for executed copies")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    args = parser.parse_args(argv)

    paths = [Path(p) for p in args.notebooks] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    # Kernels inherit this environment: the mode, and this Python first on PATH.
    os.environ["COURSE_MODE"] = args.mode
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

    rows, failure = [], None
    for path in tqdm(paths, desc=f"course ({args.mode} mode)", unit="notebook"):
        try:
            rows.append((path.name, run_notebook(path, Path(args.out), args.timeout), "ok"))
        except NotebookFailed as err:
            rows.append((path.name, float("nan"), "FAILED"))
            failure = err
            break
    width = max(len(name) for name, _, _ in rows)
    print(f"\n{'notebook':<{width}}  {'seconds':>8}  status")
    for name, seconds, status in rows:
        print(f"{name:<{width}}  {seconds:8.1f}  {status}")
    print(f"executed copies in {args.out}")
    if failure is not None:
        print(f"\n{failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
