"""Test configuration: every test and every notebook kernel runs in fast mode.

The notebooks run under nbval (`--nbval-lax`, see pyproject.toml); their kernels inherit
this process's environment, so setting it here is enough.
"""

import os

os.environ["COURSE_MODE"] = "fast"
os.environ.setdefault("COURSE_DEVICE", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_MININTERVAL", "5")
# One BLAS/OpenMP thread per process: pytest-xdist runs one notebook per core, and two
# processes each spinning several OpenMP threads on the same cores slow each other down
# several-fold (oversubscription). The notebooks call `config.set_threads(...)`, which would
# raise the count again for image models; COURSE_THREADS=1 overrides it in their kernels.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("COURSE_THREADS", "1")
