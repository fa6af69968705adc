"""Run the course headless, in order, and report how long each notebook took.

    python -m course_utils run-notebooks [--mode fast|full] [--out build/executed] [--keep-going] [NOTEBOOK ...]

Executes each notebook top to bottom in a fresh kernel (its own folder as working
directory), writes the executed copy to `--out` (git ignores `build/`; its metadata `course_run`
records the mode and whether it ran to the end, which `site` reads), and prints a table: the
machine, then per notebook its workload (2D models or images), seconds, the course's budget for
it, status and slowest cell. Budgets: fast mode 90 s per notebook; full mode 10 minutes for a
2D notebook on 2 CPU cores and 15 minutes for an image notebook on one GPU (none is stated for
other pairings: an image notebook on a CPU or MPS, a 2D notebook on a GPU). Stops at the first failing notebook (or, with
`--keep-going`, runs the rest) with one line naming the notebook, the code cell (its number and
first line) and the reason: the exception's type and message, the per-cell time limit that it
ran past, or the kernel's death. The kernel's own log (its stderr) goes to a temporary file,
not to the terminal; the last line of it is quoted when the kernel dies.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from tqdm.auto import tqdm

import torch

from ..config import MODES, WORKLOADS, get_device, physical_cores, usable_cpus
from ._config import ROOT, Parser, run


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


FAST_BUDGET_S = 90  # each notebook, fast mode, 2 CPU cores
FULL_BUDGET_S = {"2d": (600, "cpu"), "image": (900, "cuda")}  # full mode: seconds, on what


def workload(nb) -> str:
    """`"2d"` or `"image"`: what the notebook's setup cell passes to `config.set_threads`."""
    call = re.compile(r"^[^#\n]*set_threads\(\s*(?:workload\s*=\s*)?[\"'](\w+)[\"']", re.M)  # not in a comment
    for cell in nb.cells:
        found = call.search(cell.source) if cell.cell_type == "code" else None
        if found and found.group(1).lower() in WORKLOADS:
            return found.group(1).lower()
    return "2d"


def budget(mode: str, kind: str, device: str) -> int | None:
    """The course's time budget in seconds for a notebook of this workload, or None where none is stated."""
    if mode == "fast":
        return FAST_BUDGET_S
    seconds, on = FULL_BUDGET_S.get(kind, (None, None))
    return seconds if device == on else None


def machine() -> str:
    """One line: the CPU cores, the GPU if any, torch's version and the thread setting."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU"
    threads = os.environ.get("COURSE_THREADS", "").strip()
    return (f"machine: {physical_cores()} CPU cores ({usable_cpus()} logical, {platform.machine()}), {gpu}, "
            f"torch {torch.__version__}, threads {'COURSE_THREADS=' + threads if threads else 'per workload'}")


@dataclass
class Result:
    """One notebook's run: seconds to the end (or to the failure), its slowest code cell, the failure."""
    name: str
    kind: str
    seconds: float
    slowest: tuple[int, str, float] | None  # (code cell number, first line, seconds)
    failure: str | None = None


def run_notebook(path: Path, out_dir: Path, timeout: int) -> Result:
    """Execute one notebook; write the executed copy (also when it fails); return its Result.

    A failure is one line: notebook, code cell number, its first line, reason."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # not JSON, not a notebook: one line that names the file
        raise ValueError(f"{path} is not a notebook that nbformat can read: {_one_line(str(err))[:200]}") from None
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    bar = tqdm(total=len(code_cells), desc=path.stem, leave=False, unit="cell")
    current, cell_seconds = {"index": None, "start": 0.0}, {}

    def on_start(cell, cell_index):
        current["index"], current["start"] = cell_index, time.perf_counter()

    def on_done(cell, cell_index, execute_reply=None):
        cell_seconds[cell_index] = time.perf_counter() - current["start"]
        bar.update(1)

    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        on_cell_start=on_start, on_cell_executed=on_done,  # (on_cell_complete fires when a cell is sent)
        # no saved widget state: an HTML export then shows each widget's own text/html form (the reflow
        # explorer's kernel-free page) instead of a widget view that needs JavaScript from a CDN
        store_widget_state=False,
    )
    mode, complete, failure = os.environ.get("COURSE_MODE", "fast"), False, None
    start = time.perf_counter()
    # The kernel's stderr (its log: transport warnings, zmq errors after an interrupt) goes here.
    with tempfile.TemporaryFile("w+", prefix="kernel-", suffix=".log") as kernel_log:
        try:
            client.execute(stderr=kernel_log)
            complete = True
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
            index = current["index"]
            if index is not None and index not in cell_seconds:  # timed out or killed the kernel: no on_done
                cell_seconds[index] = time.perf_counter() - current["start"]
            cell = nb.cells[index] if index is not None else None
            number = code_cells.index(index) + 1 if index in code_cells else "?"
            first = _first_line(cell.source) if cell is not None else ""
            kernel_log.seek(0)
            why = _why(err, timeout, kernel_log.read())
            verb = "timed out" if isinstance(err, CellTimeoutError) else "failed"
            failure = f"{path.name} {verb} in code cell {number} (cell index {index}), which starts `{first}`: {why}"
        finally:
            bar.close()
            out_dir.mkdir(parents=True, exist_ok=True)
            # the mode it ran in and whether it ran to the end (`site` reuses complete fast-mode copies)
            nb.metadata["course_run"] = {"mode": mode, "complete": complete}
            nbformat.write(nb, out_dir / path.name)
    seconds = time.perf_counter() - start
    slowest = None
    if cell_seconds:
        index = max(cell_seconds, key=cell_seconds.get)
        slowest = (code_cells.index(index) + 1, _first_line(nb.cells[index].source)[:40], cell_seconds[index])
    return Result(path.name, workload(nb), seconds, slowest, failure)


def table(results: list[Result], mode: str, device: str) -> str:
    """The report: the machine, then one row per notebook (workload, seconds, budget, status, slowest cell)."""
    width = max(len("notebook"), *(len(r.name) for r in results))
    lines = [machine() + f"; mode {mode}; notebooks on {device}",
             f"{'notebook':<{width}}  {'workload':<8}  {'seconds':>8}  {'budget':>7}  {'status':<14}  slowest code cell"]
    limits = [budget(mode, r.kind, device) for r in results]
    for r, limit in zip(results, limits):
        if r.failure is not None:
            status = "FAILED"
        elif limit is None:
            status = "ok (no budget)"
        else:
            status = "ok" if r.seconds <= limit else "OVER BUDGET"
        slow = f"{r.slowest[2]:.1f} s in cell {r.slowest[0]} `{r.slowest[1]}`" if r.slowest else ""
        lines.append(f"{r.name:<{width}}  {r.kind:<8}  {r.seconds:8.1f}  {limit if limit else '-':>7}  {status:<14}  {slow}")
    if None in limits:
        lines.append("(full-mode budgets: 2d 600 s on a CPU, image 900 s on one CUDA GPU; '-': none for this device)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = Parser(prog="python -m course_utils run-notebooks", description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: all, in order)")
    parser.add_argument("--mode", choices=MODES, default=os.environ.get("COURSE_MODE", "fast"))
    parser.add_argument("--out", default=str(ROOT / "build" / "executed"), help="folder for executed copies")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    parser.add_argument("--keep-going", action="store_true", help="run the rest after a notebook fails")
    args = parser.parse_args(argv)

    paths = [Path(p) for p in args.notebooks] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    if args.mode not in MODES:  # a default from COURSE_MODE is not checked by argparse
        parser.error(f"COURSE_MODE={args.mode!r} is not a mode: use --mode fast or --mode full")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out} is a file, not a folder: pass a folder for the executed copies")
    device = get_device().type  # where the kernels will run (COURSE_DEVICE, else CUDA, MPS, CPU)
    # Kernels inherit this environment: the mode, and this Python first on PATH.
    os.environ["COURSE_MODE"] = args.mode
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

    results = []
    for path in tqdm(paths, desc=f"course ({args.mode} mode)", unit="notebook"):
        results.append(run_notebook(path, Path(args.out), args.timeout))
        if results[-1].failure is not None and not args.keep_going:
            break
    print("\n" + table(results, args.mode, device))
    print(f"executed copies in {args.out}")
    failures = [r.failure for r in results if r.failure is not None]
    if failures:
        print("\n" + "\n".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
