"""The course as a website (`python -m course_utils site`), built once and read in headless Chromium.

The fast tests check the command's refusals, the home page it makes from the README and which
executed copies it reuses. The browser tests (marker `browser`) build the site once for this
module into a temporary folder (notebooks 00, 01 and 09 run in fast mode by `run-notebooks`, then
`site --no-run`, which shows the others without outputs: the notebooks' own runs are
tests/test_notebooks.py's, under nbval, and running them all again here would cost six minutes),
serve it on
127.0.0.1, abort every request to another origin, and check each page: no console errors, its
figures loaded, its internal links resolve, its math rendered, and the reflow explorer of
notebook 09 redraws when its round slider moves. Each check is a function below, and a
negative control feeds it a page that lacks the property (images or MathJax blocked, a
broken link, a script from the network). Skipped, with the reason, without Chromium,
Playwright or the `site` extra (pip install -e ".[site]").

To reuse executed notebooks while working on the site, point COURSE_SITE_EXECUTED at a folder
of them (e.g. build/executed): it is copied, and only those three notebooks run again where a copy
is older than its notebook; every complete copy in it is used.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest

from course_utils.cli import dispatch
from course_utils.cli import site as site_cli
from course_utils.cli._config import ROOT

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 120_000
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
RUN = ("00", "01", "09")  # the notebooks the browser tests see with their outputs (01: math and figures; 09: the explorer)


# -- the command's refusals: one line, exit status 2, no traceback
def refuse(capsys, *args):
    status = dispatch(["site", *map(str, args)])
    err = capsys.readouterr().err.strip()
    return status, err


@pytest.mark.parametrize("where", ["notebooks", "data", "notebooks/site", "."])
def test_refuses_to_write_over_the_course(capsys, where):
    status, err = refuse(capsys, "--out", ROOT / where)
    assert status == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("error: --out ") and ("notebooks/" in err or "data/" in err or "repository" in err), err


def test_refuses_an_existing_folder_it_did_not_build(capsys, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    status, err = refuse(capsys, "--out", mine, "--executed", tmp_path / "executed")
    assert status == 2 and len(err.splitlines()) == 1 and "--force" in err, err
    assert (mine / "notes.txt").read_text() == "keep me"
    (tmp_path / "a_file").write_text("x")
    status, err = refuse(capsys, "--out", tmp_path / "a_file", "--executed", tmp_path / "executed")
    assert status == 2 and "is a file" in err and len(err.splitlines()) == 1, err


def test_refuses_to_run_notebooks_into_the_course(capsys, tmp_path):
    status, err = refuse(capsys, "--out", tmp_path / "site", "--executed", ROOT / "data")
    assert status == 2 and err.startswith("error: --executed ") and len(err.splitlines()) == 1, err
    status, err = refuse(capsys, "--out", tmp_path / "x", "--executed", tmp_path / "x" / "executed")
    assert status == 2 and "overlap" in err, err


def test_a_previous_site_or_an_empty_folder_is_accepted(tmp_path):
    executed = tmp_path / "executed"
    (tmp_path / "empty").mkdir()
    site_cli.check_out((tmp_path / "empty").resolve(), executed, force=False)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / site_cli.MARKER).write_text("")
    (tmp_path / "old" / "index.html").write_text("")
    site_cli.check_out((tmp_path / "old").resolve(), executed, force=False)
    # negative control: the same folder without the marker is refused
    (tmp_path / "old" / site_cli.MARKER).unlink()
    with pytest.raises(ValueError, match="--force"):
        site_cli.check_out((tmp_path / "old").resolve(), executed, force=False)
    site_cli.check_out((tmp_path / "old").resolve(), executed, force=True)


# -- the home page: the README's course map, each notebook a link to its page
def test_home_page_links_every_notebook_of_the_readme_map():
    names = [p.stem for p in NOTEBOOKS]
    page = site_cli.home_page((ROOT / "README.md").read_text(encoding="utf-8"), names, "https://example.org/r")
    title, _ = site_cli.course_map((ROOT / "README.md").read_text(encoding="utf-8"))
    assert page.startswith(f"# {title}\n")
    for name in names:
        assert f"[`{name}`](notebooks/{name}.ipynb)" in page, name
        assert f"\nnotebooks/{name}\n" in page  # the sidebar's toctree, in course order
    order = [page.index(f"\nnotebooks/{name}\n") for name in names]
    assert order == sorted(order)
    assert "preview" not in page.lower()
    preview = site_cli.home_page((ROOT / "README.md").read_text(encoding="utf-8"), names, "", names[2:4])
    assert (f"**A preview:** 2 of {len(names)} notebooks were not run for this build; their pages show the text and "
            f"code without outputs: [`{names[2]}`](notebooks/{names[2]}.ipynb), "
            f"[`{names[3]}`](notebooks/{names[3]}.ipynb).") in preview
    assert "Each page run for this build is a notebook" in preview and "Each page is a notebook" in page
    # negative control: a README without a map is one clear error
    with pytest.raises(ValueError, match="no course map"):
        site_cli.course_map("# Title\n\nNo table here.\n\n## Next\n")


def test_no_run_stages_the_course_notebooks_without_outputs(tmp_path):
    executed = tmp_path / "executed"
    executed.mkdir()
    ran = nbformat.read(NOTEBOOKS[0], as_version=4)
    ran.cells[[c.cell_type for c in ran.cells].index("code")].outputs = [nbformat.v4.new_output("stream", text="ran\n")]
    nbformat.write(ran, executed / NOTEBOOKS[0].name)
    site_cli.stage(tmp_path / "src", NOTEBOOKS, executed, unrun=NOTEBOOKS[1:])
    staged = {p.name: nbformat.read(tmp_path / "src" / "notebooks" / p.name, as_version=4) for p in NOTEBOOKS}
    outputs = {name: sum(len(c.get("outputs", [])) for c in nb.cells) for name, nb in staged.items()}
    assert outputs[NOTEBOOKS[0].name] == 1 and all(outputs[p.name] == 0 for p in NOTEBOOKS[1:])
    index = (tmp_path / "src" / "index.md").read_text(encoding="utf-8")
    assert f"{len(NOTEBOOKS) - 1} of {len(NOTEBOOKS)} notebooks were not run" in index
    preview = index.split("A preview")[1].split("```")[0]  # the preview sentence, up to the toctree
    assert f"[`{NOTEBOOKS[0].stem}`]" not in preview and all(f"[`{p.stem}`]" in preview for p in NOTEBOOKS[1:])


# -- which executed copies are reused
def test_reuses_only_complete_fast_mode_copies_newer_than_their_notebook(tmp_path):
    source = tmp_path / "nb.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), source)
    copy = tmp_path / "executed.ipynb"

    def write_copy(meta):
        nb = nbformat.v4.new_notebook()
        if meta is not None:
            nb.metadata["course_run"] = meta
        nbformat.write(nb, copy)
        later = source.stat().st_mtime + 10
        os.utime(copy, (later, later))

    write_copy({"mode": "fast", "complete": True})
    assert site_cli.fresh(copy, source)
    for meta in (None, {"mode": "full", "complete": True}, {"mode": "fast", "complete": False}):
        write_copy(meta)
        assert not site_cli.fresh(copy, source), meta
    write_copy({"mode": "fast", "complete": True})
    earlier = source.stat().st_mtime - 10
    os.utime(copy, (earlier, earlier))  # older than its notebook
    assert not site_cli.fresh(copy, source)
    assert not site_cli.fresh(tmp_path / "missing.ipynb", source)


def test_run_notebooks_records_the_mode_and_whether_it_ran_to_the_end(tmp_path):
    def write(name, sources):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / name)
        return tmp_path / name

    ok, bad = write("a_ok.ipynb", ["x = 1"]), write("b_bad.ipynb", ["raise ValueError('no')"])
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "course_utils", "run-notebooks", "--mode", "fast", "--out", str(out),
                           str(ok), str(bad)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 1
    assert nbformat.read(out / "a_ok.ipynb", as_version=4).metadata["course_run"] == {"mode": "fast", "complete": True}
    assert nbformat.read(out / "b_bad.ipynb", as_version=4).metadata["course_run"] == {"mode": "fast", "complete": False}


# -- the built site in Chromium
def _needs():
    """The reason the browser tests cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM}: apt-get install -y chromium (or set CHROMIUM=...)."
    if importlib.util.find_spec("playwright") is None:
        return "Playwright's Python package is missing: pip install playwright (no `playwright install`)."
    missing = [pkg for module, pkg in site_cli.NEEDS.items() if importlib.util.find_spec(module) is None]
    if missing:
        return f"building the site needs {', '.join(missing)}: pip install -e \".[site]\""
    return None


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(site folder, executed folder): the site built once; the notebooks RUN with their outputs, the rest without."""
    reason = _needs()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("site")
    executed = tmp / "executed"
    if os.environ.get("COURSE_SITE_EXECUTED"):
        shutil.copytree(os.environ["COURSE_SITE_EXECUTED"], executed)  # copy2: keeps the copies' times
    start = time.perf_counter()
    stale = [p for p in NOTEBOOKS if p.stem[:2] in RUN and not site_cli.fresh(executed / p.name, p)]
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # Agg would leave the figures out
    if stale:
        proc = subprocess.run([sys.executable, "-m", "course_utils", "run-notebooks", "--mode", "fast",
                               "--out", str(executed), *map(str, stale)], capture_output=True, text=True,
                              timeout=1800, env=env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    proc = subprocess.run([sys.executable, "-m", "course_utils", "site", "--out", str(tmp / "site"),
                           "--executed", str(executed), "--no-run"], capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(proc.stdout.strip().splitlines()[-2:], f"({time.perf_counter() - start:.0f} s in all)")
    assert "WARNING" not in proc.stdout, proc.stdout  # Sphinx's warnings are printed after the summary
    return tmp / "site", executed


@pytest.fixture(scope="module")
def server(built):
    """The site served on 127.0.0.1 (a free port); yields its origin."""
    site, _ = built

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def browser(built):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_FLAGS)
        try:
            yield b
        finally:
            b.close()


class Visit:
    """One page opened with every request to another origin aborted, and its console errors recorded."""

    def __init__(self, browser, origin, block=()):
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.offsite, self.errors = [], []

        def route(r):
            url = r.request.url
            if not url.startswith(origin + "/"):
                self.offsite.append(url)
                return r.abort()
            if any(part in url for part in block):  # negative controls: a resource withheld
                return r.abort()
            return r.continue_()

        self.context.route("**/*", route)
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, url):
        self.page.goto(url, wait_until="load")
        return self.page

    def close(self):
        self.context.close()


def wait_for_math(page, timeout_ms=60_000) -> int:
    """Wait until MathJax has typeset the page (if the page has math); return the number of math elements."""
    n = page.locator(".math").count()
    if n:
        try:
            page.wait_for_function("() => window.MathJax && MathJax.Hub && MathJax.isReady", timeout=timeout_ms)
            page.evaluate("() => new Promise(done => MathJax.Hub.Queue(done))")
        except Exception:  # MathJax never came: the math check below says so
            pass
    return n


def math_problems(page) -> list[str]:
    """What is wrong with the page's math: no MathJax output, or TeX left raw in the text outside code."""
    n_math = page.locator(".math").count()
    if n_math == 0:
        return []
    rendered = page.evaluate("() => document.querySelectorAll('.MathJax, .MathJax_Display, .MathJax_SVG').length")
    text = page.evaluate("""() => {
        const a = document.querySelector('article').cloneNode(true);
        a.querySelectorAll('script, pre, code, .cell_input, .cell_output, .MathJax, .MathJax_Display, '
                           + '.MathJax_SVG, .MJX_Assistive_MathML, .MathJax_Preview').forEach(e => e.remove());
        return a.textContent; }""")
    problems = [] if rendered else [f"{n_math} math elements and no MathJax output"]
    raw = re.findall(r"\\\(.{0,40}|\\\[.{0,40}|\$[^$\s][^$\n]{0,80}\$", text)
    if raw:
        problems.append(f"raw TeX in the text: {raw[:3]}")
    return problems


def broken_images(page) -> list[str]:
    """The images of the page's article that did not load (naturalWidth 0)."""
    page.wait_for_function("() => [...document.querySelectorAll('article img')].every(i => i.complete)")
    return page.evaluate("() => [...document.querySelectorAll('article img')]"
                         ".filter(i => !(i.naturalWidth > 0)).map(i => i.getAttribute('src'))")


def _ids(path: Path, cache={}) -> set[str]:
    if path not in cache:
        cache[path] = set(re.findall(r'\bid="([^"]+)"', path.read_text(encoding="utf-8", errors="replace")))
    return cache[path]


def broken_links(page, origin: str, site: Path) -> list[str]:
    """Links of the page to the site itself whose file, or anchor in that file, does not exist."""
    hrefs = page.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)")
    bad = []
    for href in hrefs:
        if not href.startswith(origin + "/"):
            continue
        parts = urlsplit(href)
        rel = unquote(parts.path).lstrip("/")
        target = site / rel
        if rel == "" or target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            bad.append(href)
        elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in _ids(target):
            bad.append(href)
    return bad


def page_urls(site: Path, origin: str) -> list[str]:
    return [f"{origin}/{p.relative_to(site).as_posix()}" for p in sorted(site.rglob("*.html"))
            if "_static" not in p.parts and "_sources" not in p.parts]


@pytest.mark.browser
def test_every_page_loads_offline_with_its_figures_links_and_math(built, server, browser, tmp_path):
    site, executed = built
    urls = page_urls(site, server)
    assert f"{server}/index.html" in urls and len([u for u in urls if "/notebooks/" in u]) == len(NOTEBOOKS)
    visit = Visit(browser, server)
    report = {}
    try:
        for url in urls:
            page = visit.open(url)
            before = len(visit.errors)
            n_math = wait_for_math(page)
            problems = math_problems(page) + [f"image not loaded: {s}" for s in broken_images(page)]
            problems += [f"broken link: {h}" for h in broken_links(page, server, site)]
            if "/notebooks/" in url:
                name = url.rsplit("/", 1)[1].replace(".html", ".ipynb")
                have = page.locator("article .cell_output img").count()
                if name[:2] in RUN:
                    want = site_cli.image_outputs(nbformat.read(executed / name, as_version=4))
                    if want == 0:  # every notebook of the course draws figures: none means a backend without them
                        problems.append("the executed notebook has no image outputs")
                    if have < want:
                        problems.append(f"{have} figures on the page, {want} image outputs in the executed notebook")
                else:  # shown as it is in the course (--no-run): no outputs, and the home page says so
                    want = 0
                    if page.locator("article .cell_output").count():
                        problems.append("a notebook that was not run shows outputs")
                report[name] = (have, want, n_math)
            problems += [f"console error: {e}" for e in visit.errors[before:]]
            if url.endswith("/index.html") and url.count("/") == 3:
                page.screenshot(path=str(tmp_path / "home.png"))
                assert page.locator("article a[href*='notebooks/']").count() >= len(NOTEBOOKS)
                sidebar = page.locator(".bd-sidebar-primary a[href*='notebooks/']").all_inner_texts()
                assert len(sidebar) == len(NOTEBOOKS), sidebar  # in course order: checked on the home page's map
                text = page.locator("article").inner_text()
                line = next((ln for ln in text.splitlines() if ln.startswith("A preview")), "")
                assert sorted(re.findall(r"\b\d\d[ab]?_\w+", line)) == [p.stem for p in NOTEBOOKS if p.stem[:2] not in RUN]
            assert not problems, (url, problems)
        page = visit.open(f"{server}/notebooks/{NOTEBOOKS[1].stem}.html")
        wait_for_math(page)
        page.screenshot(path=str(tmp_path / "notebook.png"))
        buttons = page.evaluate("() => [...document.querySelectorAll('a')].map(a => a.getAttribute('href') || '')")
        assert any(b.endswith(f"_sources/notebooks/{NOTEBOOKS[1].name}") for b in buttons)  # download the .ipynb
        assert any(b.endswith(f"/notebooks/{NOTEBOOKS[1].name}") and b.startswith("https://") for b in buttons)
    finally:
        visit.close()
    print({k: v for k, v in report.items()}, f"screenshots in {tmp_path}")
    assert visit.offsite == [], visit.offsite  # nothing asked of the network


@pytest.mark.browser
def test_the_checks_fail_on_a_page_that_lacks_the_property(built, server, browser):
    """Negative controls: MathJax withheld, images withheld, a broken link, a script from the network."""
    site, _ = built
    page_01 = f"{server}/notebooks/{NOTEBOOKS[1].stem}.html"  # math and figures
    visit = Visit(browser, server, block=("/_static/mathjax/", "/_images/"))
    try:
        page = visit.open(page_01)
        wait_for_math(page, timeout_ms=3000)
        assert any("no MathJax output" in p for p in math_problems(page))
        assert any("raw TeX" in p for p in math_problems(page))
        assert broken_images(page)
        page.evaluate("() => { const a = document.createElement('a'); a.href = '../notebooks/nowhere.html';"
                      " document.body.append(a); const b = document.createElement('a');"
                      " b.href = 'index.html#no-such-anchor'; document.body.append(b); }")
        assert len(broken_links(page, server, site)) == 2
        page.evaluate("() => { const s = document.createElement('script');"
                      " s.src = 'https://cdn.example.org/x.js'; document.head.append(s); }")
        page.wait_for_timeout(500)
        assert visit.offsite == ["https://cdn.example.org/x.js"]
    finally:
        visit.close()


@pytest.mark.browser
def test_the_reflow_explorer_redraws_when_its_round_slider_moves(built, server, browser, tmp_path):
    name = next(p.stem for p in NOTEBOOKS if p.stem.startswith("09_"))
    visit = Visit(browser, server)
    try:
        page = visit.open(f"{server}/notebooks/{name}.html")
        if page.locator("iframe.reflow-explorer-frame").count() == 0:
            pytest.skip("notebook 09's page has no iframe.reflow-explorer-frame yet (its output is still the "
                        "kernel-backed widget, which a static page cannot show)")
        frame = page.frame_locator("iframe.reflow-explorer-frame").first
        frame.locator(".reflow-explorer canvas").first.wait_for()
        for what in ("input[type=range][name=t]", "select[name=steps]", "button[name=play]", ".readout"):
            assert frame.locator(what).count() >= 1, what
        canvas, slider = frame.locator(".reflow-explorer canvas").first, frame.locator("input[type=range][name=round]")
        page.wait_for_timeout(300)
        pixels0, readout0 = canvas.evaluate("c => c.toDataURL()"), frame.locator(".readout").first.inner_text()
        value, top = slider.evaluate("s => [Number(s.value), Number(s.max)]")
        slider.focus()
        page.keyboard.press("ArrowRight" if value < top else "ArrowLeft")
        assert slider.evaluate("s => Number(s.value)") != value
        deadline = time.monotonic() + 10
        while canvas.evaluate("c => c.toDataURL()") == pixels0 and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        assert canvas.evaluate("c => c.toDataURL()") != pixels0, "the canvas did not change"
        assert frame.locator(".readout").first.inner_text() != readout0
        page.screenshot(path=str(tmp_path / "explorer.png"))
        assert visit.errors == [] and visit.offsite == [], (visit.errors, visit.offsite)
    finally:
        visit.close()
