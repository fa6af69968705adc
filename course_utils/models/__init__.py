"""The course's networks. Every one is called `model(x, t, **cond)` with `x: (B, *D)` and
`t: (B,)` in [0, 1]; conditional ones take `y: (B,)` labels and have a `null_label` (∅).

- `embeddings`: `SinusoidalTimeEmbedding`, `LabelEmbedding` (with label dropout), `mlp`.
- `mlp`: `TimeMLP` (2D fields, scores, ε), `TimeClassifier` (noise-aware, for guidance).
- `unet`: the MNIST U-Net (07b). `dit`: the diffusion transformer (10).
- `conv_score`: the small MNIST score network (06). `classifier`: the MNIST classifier that judges samples.
"""

from .embeddings import LabelEmbedding, SinusoidalTimeEmbedding, mlp  # noqa: F401
from .time_mlp import TimeClassifier, TimeMLP  # noqa: F401
