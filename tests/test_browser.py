"""The reflow widget in a real browser: JupyterLab 4 + ipywidgets 8 in headless Chromium.

Part of the plain `pytest` run; skipped, with the reason, when Chromium or Playwright is
missing. Needs Debian's Chromium and Playwright's Python package (which `.[all]` installs;
not Playwright's own browser download):

    apt-get install -y chromium

The test starts JupyterLab on 127.0.0.1 (a free port, a random token, a temporary root
holding one small notebook), runs the widget cell, moves the sliders the way a person
would (typing into the readout + Enter, ArrowRight on a slider handle), and checks what
the page then shows: the readouts, and the particles in the rendered image (their orange
pixels move as the flow carries them). Screenshots are saved under the test's tmp_path.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 120_000

# Built the way notebook 09 builds its explorer: `rectified_flow.straightness` of each round's
# field, then `ReflowWidget.from_straightness`. Round 1 turns about the origin (curved paths),
# round 2 moves every particle by the same constant velocity (straight paths, S = 0).
WIDGET_CELL = """\
import torch
from course_utils import rectified_flow as rf
from course_utils.widgets import ReflowWidget

g = torch.Generator().manual_seed(0)
x0, x1 = torch.randn(150, 2, generator=g), 0.5 * torch.randn(150, 2, generator=g) + 1.0
turn = lambda x, t: 2.0 * torch.stack([-x[:, 1], x[:, 0]], 1)
shift = lambda x, t: torch.tensor([2.0, 0.0]).expand_as(x)
rounds = [rf.straightness(turn, x0), rf.straightness(shift, x0)]
print(f"S1 = {rounds[0].value:.4f}")
w = ReflowWidget.from_straightness(rounds, data=x1, noise=x0)
w
"""


def _particle_centre(png: Path) -> tuple[float, int]:
    """Mean column of the orange particle pixels (plotting.COLORS['model'] = #ff7f0e) and their count."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    orange = (r > 220) & (g > 100) & (g < 160) & (b < 60)
    cols = np.nonzero(orange)[1]
    return float(cols.mean()) if cols.size else float("nan"), int(cols.size)


@pytest.fixture
def sync_playwright():
    """Playwright's entry point, or a skip saying what is missing (checked before JupyterLab starts)."""
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


@pytest.fixture
def lab(tmp_path, sync_playwright):
    """A JupyterLab server on 127.0.0.1 serving a temp root with `reflow.ipynb`; yields its URL."""
    root, state = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(WIDGET_CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "reflow.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(state / "config"), JUPYTER_RUNTIME_DIR=str(state / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(state / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(state / "ws"),
               IPYTHONDIR=str(state / "ipython"), MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--ServerApp.allow_root=True"]  # containers and CI often run as root
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start; see {tmp_path / 'jupyterlab.log'}") from None
                time.sleep(0.5)
        yield f"{base}/lab/tree/reflow.ipynb?token={token}"
    finally:
        server.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_reflow_widget_in_jupyterlab(sync_playwright, lab, tmp_path):
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(lab)
            page.get_by_text("| Idle").first.wait_for()  # the status bar: the kernel is up
            page.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
            page.keyboard.press("Shift+Enter")

            readout = page.locator(".reflow-readout")
            image = page.locator("img.reflow-image")
            readout.wait_for(state="visible")
            page.wait_for_function("() => { const i = document.querySelector('img.reflow-image');"
                                   " return i && i.complete && i.naturalWidth > 0; }")
            assert "1-rectified flow" in readout.inner_text() and "t = 0.00" in readout.inner_text()
            s1 = page.locator(".jp-OutputArea-output pre").first.inner_text().strip()  # "S1 = ..."
            assert s1.startswith("S1 = ") and f"straightness S = {s1[5:]}" in readout.inner_text()
            src0 = image.get_attribute("src")
            image.screenshot(path=str(tmp_path / "t0.png"))

            # time: type into the slider's readout and press Enter
            time_readout = page.locator(".reflow-time .widget-readout")
            time_readout.click()
            page.keyboard.press("Control+A")
            page.keyboard.type("0.5")
            page.keyboard.press("Enter")
            page.wait_for_function("() => document.querySelector('.reflow-readout').innerText.includes('t = 0.50')")
            page.wait_for_function(f"() => document.querySelector('img.reflow-image').src !== {src0!r}")
            src1 = image.get_attribute("src")
            assert time_readout.inner_text().strip() == "0.50"

            # round: ArrowRight on the slider's handle
            page.locator(".reflow-round .noUi-handle").focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_function("() => document.querySelector('.reflow-readout').innerText.includes('2-rectified flow')")
            page.wait_for_function(f"() => document.querySelector('img.reflow-image').src !== {src1!r}")
            text = readout.inner_text()
            assert "t = 0.50" in text and "straightness S = 0.0000" in text
            assert page.locator(".reflow-round .widget-readout").inner_text().strip() == "2"
            page.wait_for_function("() => { const i = document.querySelector('img.reflow-image');"
                                   " return i.complete && i.naturalWidth > 0; }")
            # the drawn particles moved: by t = 0.5 the straight round has carried them 1.0 to the right
            image.screenshot(path=str(tmp_path / "t05_round2.png"))
            (c0, n0), (c1, n1) = _particle_centre(tmp_path / "t0.png"), _particle_centre(tmp_path / "t05_round2.png")
            assert n0 > 500 and n1 > 500, (n0, n1)
            assert c1 - c0 > 15, (c0, c1)

            shot = tmp_path / "reflow_widget.png"
            page.screenshot(path=str(shot), full_page=True)
            image.screenshot(path=str(tmp_path / "reflow_widget_image.png"))
            print(f"screenshots: {shot} and {tmp_path / 'reflow_widget_image.png'}")
            assert shot.stat().st_size > 10_000

            # play: the frontend ticks, the kernel redraws, t moves on by itself
            page.locator(".reflow-play button").first.click()
            page.wait_for_function("() => !document.querySelector('.reflow-readout').innerText.includes('t = 0.50')")
            assert "2-rectified flow" in readout.inner_text()
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"failure screenshot: {tmp_path / 'failure.png'}")
            raise
        finally:
            browser.close()
