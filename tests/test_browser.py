"""The reflow explorer in a real browser: live in JupyterLab 4 and Jupyter Notebook 7 (anywidget), and
kernel-free from a file.

Part of the plain `pytest` run; skipped, with the reason, when Chromium or Playwright is
missing. Needs Debian's Chromium and Playwright's Python package (which `.[all]` installs;
not Playwright's own browser download):

    apt-get install -y chromium

The live test runs once per front end, JupyterLab 4 (`/lab/tree/reflow.ipynb`) and Notebook 7
(`/notebooks/reflow.ipynb`): it starts the server on 127.0.0.1 (a free port, a random token, a
temporary root holding one small notebook), waits until the page's kernel is idle, runs the cell that
builds an explorer (Shift+Enter in both), moves the round slider and the Euler-steps select in the
page, checks that the canvas pixels and the readout change, then runs a second cell that prints the
Python side's `round` and `steps` (the values the browser set) and sets `t` from Python (the page
follows). The kernel-free test writes `ReflowExplorer.to_html()` to a file, opens it with every
network request aborted, and drives the same controls. Screenshots are saved under the test's tmp_path.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 120_000

# Built the way notebook 09 builds its explorer, from closed-form fields instead of trained ones:
# round 1 turns about the origin (curved paths), round 2 moves every particle by the same constant
# velocity (straight paths, S = 0, one Euler step exact).
BUILD_CELL = """\
import torch
from course_utils.widgets import ReflowExplorer, reflow_rounds

g = torch.Generator().manual_seed(0)
x0, x1 = torch.randn(150, 2, generator=g), 0.5 * torch.randn(150, 2, generator=g) + 1.0
turn = lambda x, t: 2.0 * torch.stack([-x[:, 1], x[:, 0]], 1)
shift = lambda x, t: torch.tensor([2.0, 0.0]).expand_as(x)
w = ReflowExplorer(reflow_rounds({1: turn, 2: shift}, x0, x1, name="test"))
w
"""
READ_CELL = """\
print(f"python side: round={w.round} steps={w.steps}")
w.t = 0.5
"""


def _explorer():
    """The explorer of BUILD_CELL, in this process (for the kernel-free page)."""
    import torch

    from course_utils.widgets import ReflowExplorer, reflow_rounds

    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(150, 2, generator=g), 0.5 * torch.randn(150, 2, generator=g) + 1.0
    turn = lambda x, t: 2.0 * torch.stack([-x[:, 1], x[:, 0]], 1)  # noqa: E731
    shift = lambda x, t: torch.tensor([2.0, 0.0]).expand_as(x)  # noqa: E731
    return ReflowExplorer(reflow_rounds({1: turn, 2: shift}, x0, x1, name="test"))


@pytest.fixture
def sync_playwright():
    """Playwright's entry point, or a skip saying what is missing (checked before any server starts)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium (or set CHROMIUM=...).")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright's Python package is missing: pip install playwright (no `playwright install`).")
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The two front ends differ in the server module and the notebook's page; the rest is shared: both take
# the same server options, both are built from JupyterLab's components (same cell, output and toolbar
# classes, same Shift+Enter), and both render the explorer through the same anywidget front end.
# Notebook 7 has no status bar, so the kernel's state is read from the toolbar's execution indicator.
FRONT_ENDS = {
    # id: (server module, notebook page, page config's appName)
    "jupyterlab": ("jupyterlab", "lab/tree/reflow.ipynb", "JupyterLab"),
    "notebook7": ("notebook", "notebooks/reflow.ipynb", "Jupyter Notebook"),
}


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=2) as r:
        return json.load(r)


def _kernel_idle(base: str, token: str) -> bool:
    """Whether the server holds a session for reflow.ipynb whose kernel has started and is idle."""
    sessions = _get_json(f"{base}/api/sessions?token={token}")
    return any(s["path"].endswith("reflow.ipynb") and (s.get("kernel") or {}).get("execution_state") == "idle"
               for s in sessions)


@pytest.fixture(params=list(FRONT_ENDS))
def front_end(request, tmp_path, sync_playwright):
    """A JupyterLab 4 or Notebook 7 server on 127.0.0.1 serving a temp root with `reflow.ipynb`
    (BUILD_CELL, READ_CELL); yields (id, page URL, kernel_idle: a no-argument check of the server's session)."""
    name = request.param
    module, page_path, _ = FRONT_ENDS[name]
    root, state = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(BUILD_CELL), nbformat.v4.new_code_cell(READ_CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "reflow.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(state / "config"), JUPYTER_RUNTIME_DIR=str(state / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(state / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(state / "ws"),
               IPYTHONDIR=str(state / "ipython"), MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", module, "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--ServerApp.allow_root=True"]  # containers and CI often run as root
    log_path = tmp_path / f"{name}.log"
    log = open(log_path, "w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                _get_json(f"{base}/api/status?token={token}")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{module} did not start; see {log_path}") from None
                time.sleep(0.5)
        yield name, f"{base}/{page_path}?token={token}", lambda: _kernel_idle(base, token)
    finally:
        server.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


CANVAS_PNG = "c => c.toDataURL('image/png')"
APP_NAME = "() => JSON.parse(document.getElementById('jupyter-config-data').textContent).appName"
# The notebook toolbar's execution indicator, in both front ends. It reads "idle" before the page has
# a session too (its default), so it is trusted only once the server reports the session's kernel idle.
KERNEL_IDLE = ".jp-Notebook-ExecutionIndicator[data-status=idle]"


def _wait_for_kernel(page, kernel_idle, timeout_s: float = TIMEOUT_MS / 1000):
    """Wait until the page's kernel is started (server side) and connected and idle (page side)."""
    deadline = time.monotonic() + timeout_s
    while not kernel_idle():
        if time.monotonic() > deadline:
            raise TimeoutError("the notebook's kernel did not become idle")
        page.wait_for_timeout(250)
    page.locator(KERNEL_IDLE).wait_for(state="attached")


@contextmanager
def _browser_page(pw, tmp_path, width: int, height: int, extra_args=()):
    """A page in a fresh headless Chromium; a screenshot of it goes to tmp_path if the test fails."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_FLAGS + list(extra_args))
    try:
        page = browser.new_page(viewport={"width": width, "height": height})
        page.set_default_timeout(TIMEOUT_MS)
        try:
            yield page
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"failure screenshot: {tmp_path / 'failure.png'}")
            raise
    finally:
        browser.close()


def _run_cell(page, index: int):
    """Put the cursor in code cell `index` and run it with Shift+Enter (the same binding in both front ends)."""
    page.locator(".jp-Notebook .jp-Cell .cm-content").nth(index).click()
    page.keyboard.press("Shift+Enter")


def test_reflow_explorer_live(sync_playwright, front_end, tmp_path):
    name, url, kernel_idle = front_end
    with sync_playwright() as pw:
        with _browser_page(pw, tmp_path, 1400, 1000) as page:
            page.goto(url)
            assert page.evaluate(APP_NAME) == FRONT_ENDS[name][2]  # the front end this run is about
            _wait_for_kernel(page, kernel_idle)
            _run_cell(page, 0)

            root = page.locator(".jp-OutputArea-output .reflow-explorer")
            readout, canvas = root.locator(".readout"), root.locator("canvas")
            readout.wait_for(state="visible")
            assert page.locator("iframe.reflow-explorer-frame").count() == 0  # the live view, not the HTML form
            assert readout.inner_text().startswith("independent coupling (no flow)")
            png0 = canvas.evaluate(CANVAS_PNG)
            root.screenshot(path=str(tmp_path / f"{name}_round0.png"))

            # browser -> kernel: move the round slider and choose one Euler step
            root.locator("input[name=round]").fill("2")
            page.wait_for_function("() => document.querySelector('.reflow-explorer .readout')"
                                   ".innerText.startsWith('2-rectified flow')")
            png1 = canvas.evaluate(CANVAS_PNG)
            root.locator("select[name=steps]").select_option("1")
            page.wait_for_function("() => document.querySelector('.reflow-explorer .readout')"
                                   ".innerText.includes('1 Euler step: mean error 0.000')")
            png2 = canvas.evaluate(CANVAS_PNG)
            assert len({png0, png1, png2}) == 3  # each control redrew the canvas
            root.screenshot(path=str(tmp_path / f"{name}_round2_euler1.png"))

            # the kernel saw the browser's values; then kernel -> browser: Python sets t
            _run_cell(page, 1)
            page.locator(".jp-OutputArea-output").get_by_text("python side: round=2 steps=1").wait_for()
            page.wait_for_function("() => document.querySelector('.reflow-explorer .readout')"
                                   ".innerText.endsWith('t = 0.50')")
            assert root.locator("input[name=t]").input_value() == "0.5"
            assert canvas.evaluate(CANVAS_PNG) != png2
            page.screenshot(path=str(tmp_path / f"reflow_explorer_{name}.png"), full_page=True)
            print(f"screenshots under {tmp_path}")


def test_reflow_explorer_without_kernel_or_network(sync_playwright, tmp_path):
    from course_utils.widgets import readout_text

    explorer = _explorer()
    page_file = tmp_path / "explorer.html"
    page_file.write_text(explorer.to_html(), encoding="ascii")
    errors, blocked = [], []

    def only_local(route):
        if route.request.url.startswith(("file:", "data:", "blob:")):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        # a forced scale factor reaches the sandboxed frame (Playwright's emulated one does not)
        with _browser_page(pw, tmp_path, 1100, 800, ["--force-device-scale-factor=2"]) as page:
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("**/*", only_local)
            page.goto(page_file.as_uri())
            frame_el = page.locator("iframe.reflow-explorer-frame")
            frame = page.frame_locator("iframe.reflow-explorer-frame")
            readout, canvas = frame.locator(".reflow-explorer .readout"), frame.locator(".reflow-explorer canvas")
            readout.wait_for(state="visible")
            toy = explorer.toys["test"]
            assert readout.inner_text() == readout_text(toy, 0, 0.0, 0)
            # crisp: the canvas has devicePixelRatio backing pixels
            ratio, dpr = canvas.evaluate("c => [c.width / c.getBoundingClientRect().width, devicePixelRatio]")
            assert dpr == 2 and ratio == pytest.approx(dpr, abs=0.01)
            png0 = canvas.evaluate(CANVAS_PNG)
            frame_el.screenshot(path=str(tmp_path / "page_round0.png"))

            frame.locator("input[name=round]").fill("2")
            assert readout.inner_text() == readout_text(toy, 2, 0.0, 0)
            png1 = canvas.evaluate(CANVAS_PNG)
            frame.locator("select[name=steps]").select_option("1")
            assert readout.inner_text() == readout_text(toy, 2, 0.0, 1)
            png2 = canvas.evaluate(CANVAS_PNG)
            assert len({png0, png1, png2}) == 3
            frame.locator("input[name=round]").fill("1")
            frame.locator("input[name=t]").fill("0.5")
            assert readout.inner_text() == readout_text(toy, 1, 0.5, 1)
            frame_el.screenshot(path=str(tmp_path / "page_round1_euler1.png"))
            frame.locator("input[name=chords]").uncheck()
            frame.locator("input[name=paths]").uncheck()
            assert canvas.evaluate(CANVAS_PNG) != png2

            # play runs in the page (requestAnimationFrame) and stops at t = 1
            frame.locator("input[name=t]").fill("0")
            frame.locator("button[name=play]").click()
            frame.locator(".reflow-explorer .readout").filter(has_text="t = 1.00").wait_for()
            assert frame.locator("button[name=play]").inner_text().strip().endswith("play")
            frame_el.screenshot(path=str(tmp_path / "page_played.png"))
            print(f"screenshots under {tmp_path}")
    assert not errors, errors
    assert not blocked, blocked


@pytest.mark.parametrize("width", [900, 640])
def test_reflow_explorer_fits_a_notebook_column(sync_playwright, tmp_path, width):
    """At a notebook's width (900 px) the drawing keeps its size; in a narrower column it scales down
    with its aspect ratio instead of scrolling sideways, and the controls wrap."""
    page_file = tmp_path / "explorer.html"
    page_file.write_text(_explorer().to_html(), encoding="ascii")
    with sync_playwright() as pw:
        with _browser_page(pw, tmp_path, width, 700) as page:
            page.goto(page_file.as_uri())
            frame = page.frame_locator("iframe.reflow-explorer-frame")
            frame.locator(".reflow-explorer .readout").wait_for(state="visible")
            scroll_w, inner_w, canvas_w, canvas_h, bottom = frame.locator(".reflow-explorer").evaluate(
                "e => { const c = e.querySelector('canvas').getBoundingClientRect();"
                " return [document.documentElement.scrollWidth, innerWidth, c.width, c.height,"
                " e.querySelector('.readout').getBoundingClientRect().bottom]; }")
            assert scroll_w <= inner_w  # no horizontal scrolling
            assert canvas_w == pytest.approx(min(720, inner_w), abs=1)
            assert canvas_w / canvas_h == pytest.approx(720 / 440, rel=0.01)
            assert bottom <= page.locator("iframe.reflow-explorer-frame").bounding_box()["height"]  # readout not cut
            page.locator("iframe.reflow-explorer-frame").screenshot(path=str(tmp_path / f"width_{width}.png"))
