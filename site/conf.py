"""Sphinx configuration of the course as a website, built by `python -m course_utils site`.

The command stages the executed notebooks (run in fast mode) and a home page made from the
README's course map in a folder under build/, then builds it with this configuration:
MyST-NB reads the notebooks without executing them, sphinx-book-theme lays out the pages, and
MathJax 2 is served from the site itself (a copy of the one `jupyter-server-mathjax` ships), so
that the site builds and displays with no network.
"""

import shutil
from pathlib import Path

from course_utils.cli._config import repository_url

ROOT = Path(__file__).resolve().parent.parent


REPOSITORY = repository_url()  # the address the notebooks' Colab links use
BRANCH = "main"  # the branch the notebooks' Colab and Binder links name (tools/links.py)

project = "From change of variables to a DiT on MNIST"
html_title = project
html_show_copyright = False
html_show_sphinx = False

extensions = ["myst_nb", "sphinx.ext.githubpages"]  # githubpages: .nojekyll, so Pages serves _static/
exclude_patterns = ["**.ipynb_checkpoints"]

# -- the notebooks: shown as executed (fast mode), never run here
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
# No widget manager from a CDN: a widget's saved view has no kernel on a static page, so the html
# builder drops the widget mimetypes and shows each output's other form (text/html, image, text).
nb_ipywidgets_js = {}
nb_mime_priority_overrides = [
    ("html", "application/vnd.jupyter.widget-view+json", None),
    ("html", "application/vnd.jupyter.widget-state+json", None),
]

# -- math: MathJax 2 from _static/mathjax (copied there when the build finishes, see setup below)
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"
mathjax_path = f"mathjax/MathJax.js?config={MATHJAX_CONFIG}"
myst_update_mathjax = False  # MyST would write a MathJax 3/4 configuration
mathjax2_config = {
    "tex2jax": {
        "inlineMath": [["\\(", "\\)"]],
        "displayMath": [["\\[", "\\]"]],
        "processEscapes": True,
        "processEnvironments": True,  # amsmath blocks (\begin{align} ...) come without delimiters
        # only MyST's math elements: not the code, its printed output or the rest of the page
        "ignoreClass": "tex2jax_ignore|mathjax_ignore|bd-main",
        "processClass": "tex2jax_process|mathjax_process|math",
    },
    # the bundled fonts: STIX-Web only, no image fonts, no fonts of the reader's machine. MathJax's
    # placeholder font (src about:blank, which Chromium refuses with a console error) and the TeX fonts
    # of its hidden MathML for screen readers (not in the bundle: they would be 404s) become local()
    # fonts, so that no request is made for them.
    "HTML-CSS": {"availableFonts": [], "webFont": "STIX-Web", "imageFont": None, "preferredFont": None,
                 "styles": {"@font-face": {"font-family": "MathJax_Blank", "src": "local('MathJax_Blank')"}}},
    "NativeMML": {"styles": {
        f"@font-face /*{i}*/": {"font-family": family, "src": f"local('{family}')", **({"font-weight": "bold"} if bold else {})}
        for i, (family, bold) in enumerate([("MathJax_Caligraphic-WEB", False), ("MathJax_Caligraphic-WEB", True),
                                            ("MathJax_AMS-WEB", False), ("MathJax_Script-WEB", False),
                                            ("MathJax_Fraktur-WEB", False), ("MathJax_Fraktur-WEB", True)], start=1)}},
    "SVG": {"font": "STIX-Web"},
    "messageStyle": "none",
}

# -- the theme
html_theme = "sphinx_book_theme"
html_context = {"default_mode": "light"}  # readable when projected; the reader can switch to dark
html_static_path = ["_static"]
html_css_files = ["course.css"]
html_theme_options = {
    "repository_url": REPOSITORY,
    "repository_branch": BRANCH,
    "use_repository_button": bool(REPOSITORY),
    "use_download_button": True,  # the page's notebook, with its outputs (.ipynb)
    "use_source_button": False,  # replaced by a link to the notebook in the repository, below
    "home_page_in_toc": True,
    "show_toc_level": 2,
}


def _mathjax_static() -> Path:
    import jupyter_server_mathjax

    return Path(jupyter_server_mathjax.__file__).resolve().parent / "static"


def _copy_mathjax(app, exception):
    """MathJax 2.7 into the site's _static/mathjax (without its translations of the menus)."""
    if exception is None and app.builder.format == "html":
        shutil.copytree(_mathjax_static(), Path(app.outdir) / "_static" / "mathjax",
                        ignore=shutil.ignore_patterns("localization", "*.py"), dirs_exist_ok=True)


def _notebook_source_button(app, pagename, templatename, context, doctree):
    """On a notebook's page, a header button to that notebook in the repository."""
    if REPOSITORY and pagename.startswith("notebooks/") and "header_buttons" in context:
        context["header_buttons"].append({
            "type": "link",
            "url": f"{REPOSITORY}/blob/{BRANCH}/{pagename}.ipynb",
            "tooltip": "This notebook in the repository",
            "icon": "fas fa-file-code",
            "label": "notebook-source-button",
        })


def setup(app):
    app.connect("build-finished", _copy_mathjax)
    app.connect("html-page-context", _notebook_source_button, priority=502)  # after the theme's buttons
