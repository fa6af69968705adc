"""course_utils: reference implementations behind the course notebooks.

Core: `config`, `data` (+ `mnist`), `tensors`, `schedules` (the one affine path), `solvers`
(the one sampler), `guidance`, `train`, `metrics`, `plotting`, `widgets`, `exercises`.
Networks live in `models`, command-line programs in `cli` (`python -m course_utils <command>`).
One module per topic after that, in course order.
"""

__version__ = "0.1.0"
