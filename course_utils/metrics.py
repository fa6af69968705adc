"""Sample-based and likelihood metrics.

- `wasserstein2(x, y)`: the exact 2-Wasserstein distance between two empirical
  distributions, W2² = min_π Σ π_ij ||x_i − y_j||², solved by POT's network simplex.
- `mmd_rbf(x, y)`: unbiased squared maximum mean discrepancy with a sum of RBF kernels.
- `nll_nats(log_prob, x)`: mean negative log-likelihood in nats; `bits_per_dim`.
- `frechet_distance(feats_a, feats_b)`: ||μ_a − μ_b||² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2}) between
  Gaussians fitted to two feature sets (FID's formula).

Metrics of generated images judged by a classifier passed in as an argument (the course's
MNIST CNN, `classifier.load_classifier()`, or any module with `forward -> logits (B, K)` and
`features -> (B, F)`):

- `class_accuracy(clf, images, labels)`: the fraction of `images` that `clf` reads as `labels`
  (for class-conditional samples: as the label they were asked for);
- `image_fd(clf, images_a, images_b)`: `frechet_distance` on `clf.features` (the FID recipe with
  the course's classifier in place of Inception, so its values compare only within the course).
  It is biased upwards for small sets: compare it only between sets of the same size.
"""

from __future__ import annotations

import math

import numpy as np
import ot
import scipy.linalg
import torch


def _flat_pair(x: torch.Tensor, y: torch.Tensor):
    if x.ndim < 2 or y.ndim < 2 or x.shape[1:] != y.shape[1:]:
        raise ValueError(
            f"Sample sets must be (N, *D) and (M, *D) with the same D, got {tuple(x.shape)} and {tuple(y.shape)}."
        )
    x, y = x.detach().flatten(1).double().cpu(), y.detach().flatten(1).double().cpu()
    for name, v in (("first", x), ("second", y)):
        bad = (~torch.isfinite(v).all(1)).sum().item()
        if bad:  # POT would silently return 0 for a NaN cost matrix
            raise ValueError(f"The {name} sample set has {bad} point(s) with NaN or infinite coordinates.")
    return x, y


def wasserstein2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Exact W2 between the uniform empirical measures on `x: (N, *D)` and `y: (M, *D)`."""
    x, y = _flat_pair(x, y)
    cost = torch.cdist(x, y).pow(2).numpy()
    a = np.full(x.shape[0], 1.0 / x.shape[0])
    b = np.full(y.shape[0], 1.0 / y.shape[0])
    w2_squared = ot.emd2(a, b, cost, numItermax=10_000_000)
    return math.sqrt(max(float(w2_squared), 0.0))


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidths=(0.1, 0.2, 0.5, 1.0, 2.0, 5.0)) -> float:
    """Unbiased MMD² with k(a, b) = Σ_h exp(−||a − b||² / (2h²)) (off-diagonal terms only)."""
    x, y = _flat_pair(x, y)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("MMD needs at least two samples in each set.")

    def kernel(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(term_x + term_y - 2 * kxy.mean())


def nll_nats(log_prob, x: torch.Tensor, batch_size: int = 4096) -> float:
    """Mean −log p(x) in nats, for a callable `log_prob(x) -> (B,)`, evaluated in batches.

    No `no_grad` here: a CNF's log-density needs autograd for its trace; wrap the call if
    your model does not.
    """
    total = 0.0
    for chunk in torch.split(x, batch_size):
        lp = log_prob(chunk)
        if lp.shape != (chunk.shape[0],):
            raise ValueError(f"log_prob must return shape (B,) = ({chunk.shape[0]},), got {tuple(lp.shape)}.")
        total += -lp.detach().double().sum().item()
    return total / x.shape[0]


def bits_per_dim(nll: float, dim: int) -> float:
    """Convert an NLL in nats per example to bits per dimension."""
    return nll / (dim * math.log(2.0))


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, F) and (M, F)."""
    a, b = feats_a.detach().double().cpu().numpy(), feats_b.detach().double().cpu().numpy()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"Feature sets must be (N, F) and (M, F) with N, M >= 2, got {a.shape} and {b.shape}.")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def _classifier_device(clf: torch.nn.Module) -> torch.device:
    param = next(clf.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def _batched(fn, images: torch.Tensor, device, batch_size: int) -> torch.Tensor:
    """fn over `images` in chunks moved to `device`; the results concatenated on the CPU."""
    return torch.cat([fn(chunk.to(device)).cpu() for chunk in torch.split(images, batch_size)])


def class_accuracy(clf: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   batch_size: int = 500) -> float:
    """(1/N) Σ_i 1[argmax_k clf(x_i)_k = y_i] for `images: (N, *D)` and `labels: (N,)`.

    Evaluated in batches on the classifier's device, without gradients and without changing
    its train/eval mode (call `clf.eval()` first if it has dropout or batch norm).
    """
    if labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels: class_accuracy needs "
                         f"images (N, *D) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}.")
    if images.shape[0] == 0:
        raise ValueError("class_accuracy needs at least one image.")
    logits = _batched(clf, images, _classifier_device(clf), batch_size)
    if logits.ndim != 2:
        raise ValueError(f"The classifier must return logits (B, K), got shape {tuple(logits.shape)}.")
    return (logits.argmax(1) == labels.cpu()).double().mean().item()


def image_fd(clf: torch.nn.Module, images_a: torch.Tensor, images_b: torch.Tensor,
             batch_size: int = 500) -> float:
    """`frechet_distance(clf.features(images_a), clf.features(images_b))`, features in batches."""
    if not callable(getattr(clf, "features", None)):
        raise ValueError(f"image_fd needs a classifier with a `features(x) -> (B, F)` method; "
                         f"{type(clf).__name__} has none.")
    device = _classifier_device(clf)
    return frechet_distance(_batched(clf.features, images_a, device, batch_size),
                            _batched(clf.features, images_b, device, batch_size))
