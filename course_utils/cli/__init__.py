"""The course's command-line programs, each run as `python -m course_utils <command>`.

Each program is a module here with a `main(argv=None)`, and also runs as
`python -m course_utils.cli.<module>`. `COMMANDS` maps a command to (module, function,
one-line description); `dispatch` runs one.
"""

from __future__ import annotations

import importlib
import sys

from ._config import runs_dir  # noqa: F401  (runs/: where resumable runs and full-mode retraining go)

COMMANDS = {
    "train-classifier": ("train_classifier", "main", "train (or resume) the MNIST classifier that judges generated digits"),
    "evaluate-classifier": ("train_classifier", "evaluate", "test accuracy of a classifier checkpoint (default: the shipped one)"),
    "train-unet": ("train_unet", "main", "train (or resume) the class-conditional U-Net diffusion model on MNIST"),
    "train-ffjord": ("train_ffjord", "main", "train (or resume) FFJORD, the continuous normalizing flow of notebook 03, on the checkerboard"),
    "train-dit": ("train_dit", "main", "train (or resume) the DiT on MNIST with rectified flow, on one device or many"),
    "dit-ablation": ("dit_ablation", "main", "training curves of a small DiT under three settings (notebook 10)"),
    "start": ("start", "main", "your own copy of the course with the exercises to do, opened in JupyterLab"),
    "assignment": ("assignment", "main", "make an nbgrader assignment (source/NAME/ and nbgrader_config.py) from some notebooks"),
    "release": ("release", "main", "write the student notebooks: solutions replaced by stubs"),
    "run-notebooks": ("run_notebooks", "main", "run the course headless, in order, with a timing table"),
    "site": ("site", "main", "the course as a static website (Sphinx): every notebook run in fast mode, as a page"),
    "download-mnist": ("download_mnist", "main", "download full MNIST into data/ and verify its SHA-256 sums (needs internet)"),
    "mnist-info": ("download_mnist", "info", "say which MNIST source the course would use"),
    "bench": ("course_utils.bench", "main", "time the course against peer libraries (diffusers, torchcfm); `bench threads`: 1 thread vs all cores"),
}

USAGE = "usage: python -m course_utils <command> [options]    (python -m course_utils <command> --help)"


def command_list() -> str:
    width = max(map(len, COMMANDS))
    lines = [USAGE, "", "commands:"]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, _, desc) in COMMANDS.items()]
    return "\n".join(lines)


def dispatch(argv=None) -> int:
    """Run `python -m course_utils <command> [args]`; return the exit status."""
    from ._config import run

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(command_list())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(command_list())
        print(f"python -m course_utils: error: unknown command {name!r}: use one of the commands above",
              file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[name]
    main = getattr(importlib.import_module(module if "." in module else f"{__name__}.{module}"), function)
    return run(main, rest)
