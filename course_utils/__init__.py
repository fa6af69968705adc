"""course_utils: reference implementations behind the course notebooks.

Core: `config`, `data` (+ `mnist`), `nn`, `solvers`, `schedules`, `train`, `metrics`,
`plotting`, `widgets`, `exercises`. One module per topic after that, in course order.
"""

__version__ = "0.1.0"
