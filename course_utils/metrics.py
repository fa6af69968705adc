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

No silently wrong numbers: every metric checks its input once, at its boundary, and raises one
ValueError naming the problem: empty sets (fewer than two samples where a covariance or the
unbiased MMD needs two), NaN or infinite points, features or pixels, labels that are not integer
class indices of the classifier, and images off the [−1, 1] scale (0..255 pixels, or samples
beyond ±`PIXEL_LIMIT`; unclamped samples that overshoot [−1, 1] a little are judged as they are).
"""

from __future__ import annotations

import math

import numpy as np
import ot
import scipy.linalg
import torch


_COUNT = {1: "one sample", 2: "two samples"}


def _check_finite(v: torch.Tensor, what: str, unit: str = "point") -> None:
    """One `isfinite().all()` over the whole set; the bad rows are counted only for the message."""
    if not torch.isfinite(v).all():
        bad = (~torch.isfinite(v.reshape(v.shape[0], -1)).all(1)).sum().item()
        raise ValueError(f"The {what} has {bad} {unit}(s) with NaN or infinite values.")


def _flat_pair(x: torch.Tensor, y: torch.Tensor, metric: str, min_points: int = 1):
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{metric} takes two tensors (N, *D) and (M, *D), "
                        f"got {type(x).__name__} and {type(y).__name__}.")
    if x.ndim < 2 or y.ndim < 2 or x.shape[1:] != y.shape[1:]:
        raise ValueError(
            f"Sample sets must be (N, *D) and (M, *D) with the same D, got {tuple(x.shape)} and {tuple(y.shape)}."
        )
    if min(x.shape[0], y.shape[0]) < min_points:
        raise ValueError(f"{metric} needs at least {_COUNT[min_points]} in each set, "
                         f"got {x.shape[0]} and {y.shape[0]}.")
    x, y = x.detach().flatten(1).double().cpu(), y.detach().flatten(1).double().cpu()
    _check_finite(x, "first sample set")  # POT would silently return 0 for a NaN cost matrix
    _check_finite(y, "second sample set")
    return x, y


def wasserstein2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Exact W2 between the uniform empirical measures on `x: (N, *D)` and `y: (M, *D)`."""
    x, y = _flat_pair(x, y, "wasserstein2")
    cost = torch.cdist(x, y).pow(2).numpy()
    a = np.full(x.shape[0], 1.0 / x.shape[0])
    b = np.full(y.shape[0], 1.0 / y.shape[0])
    w2_squared = ot.emd2(a, b, cost, numItermax=10_000_000)
    return math.sqrt(max(float(w2_squared), 0.0))


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidths=(0.1, 0.2, 0.5, 1.0, 2.0, 5.0)) -> float:
    """Unbiased MMD² with k(a, b) = Σ_h exp(−||a − b||² / (2h²)) (off-diagonal terms only)."""
    x, y = _flat_pair(x, y, "MMD", min_points=2)
    n, m = x.shape[0], y.shape[0]

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
    your model does not. A point of zero density (log p = −inf) makes the mean +inf; a NaN
    log-density is refused.
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"nll_nats needs a non-empty set of points (N, *D), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}.")
    _check_finite(x.detach(), "set of points passed to nll_nats")
    total = 0.0
    for chunk in torch.split(x, batch_size):
        lp = log_prob(chunk)
        if lp.shape != (chunk.shape[0],):
            raise ValueError(f"log_prob must return shape (B,) = ({chunk.shape[0]},), got {tuple(lp.shape)}.")
        total += -lp.detach().double().sum().item()
    if math.isnan(total):
        raise ValueError("log_prob returned NaN for some points: the model's log-density is broken there "
                         "(a diverged flow, or a log of a negative number).")
    return total / x.shape[0]


def bits_per_dim(nll: float, dim: int) -> float:
    """Convert an NLL in nats per example to bits per dimension."""
    if dim < 1:
        raise ValueError(f"bits_per_dim needs the number of dimensions per example (>= 1), got {dim}.")
    return nll / (dim * math.log(2.0))


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, F) and (M, F)."""
    a, b = (torch.as_tensor(f).detach().double().cpu().numpy() for f in (feats_a, feats_b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"Feature sets must be (N, F) and (M, F) with the same F, got {a.shape} and {b.shape}.")
    if min(len(a), len(b)) < 2:
        raise ValueError(f"frechet_distance needs at least two samples in each feature set (a covariance needs two), "
                         f"got {len(a)} and {len(b)}.")
    for which, f in (("first", a), ("second", b)):
        if not np.isfinite(f).all():  # scipy's sqrtm would fail deep inside, or return NaN
            raise ValueError(f"The {which} feature set has {int((~np.isfinite(f).all(1)).sum())} row(s) "
                             "with NaN or infinite values.")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


# Pixels of the [-1, 1] scale the classifier was trained on. Unclamped samples of a few-step sampler
# overshoot it (one Euler step of the DiT at guidance 4 reaches ±6) and are judged as they are; values
# beyond ±PIXEL_LIMIT are no image on this scale (a diverged sampler), and a set with no negative
# value but values above 1 is 0..255 (or 0..k) pixels.
PIXEL_LIMIT = 10.0
_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def _check_images(images, metric: str, which: str = "images") -> None:
    """Refuse what the classifier cannot judge: non-tensors, integer pixels, NaN/inf, the wrong
    scale. One read of the set (its min and max; NaN propagates through them)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{metric} takes {which} as a tensor (N, 1, 28, 28), got {type(images).__name__}.")
    if not images.is_floating_point():
        raise ValueError(f"{metric}: the {which} are {images.dtype}, but the classifier expects float images in "
                         "[−1, 1]: for 0..255 pixels use x.float() / 127.5 - 1.")
    lo, hi = torch.stack(torch.aminmax(images.detach())).tolist()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = (~torch.isfinite(images.detach().flatten(1)).all(1)).sum().item()
        raise ValueError(f"{metric}: {bad} of the {images.shape[0]} {which} have NaN or infinite pixels "
                         "(a sampler that diverged?).")
    if lo >= 0 and hi > 1:
        fix = "divide by 127.5 and subtract 1." if hi > 2 else "map them to [−1, 1] (2x − 1 for [0, 1])."
        raise ValueError(f"{metric}: the classifier expects images in [−1, 1]; got values up to {hi:g}: {fix}")
    if max(-lo, hi) > PIXEL_LIMIT:
        raise ValueError(f"{metric}: the classifier expects images in [−1, 1]; got values from {lo:g} to {hi:g}: "
                         "samples this far out are no images (a diverged sampler?); 0..255 pixels need "
                         "x / 127.5 - 1.")


def _classifier_param(clf: torch.nn.Module):
    return next(clf.parameters(), None)


@torch.no_grad()
def _batched(fn, images: torch.Tensor, param, batch_size: int) -> torch.Tensor:
    """fn over `images` in chunks moved to the classifier's device and dtype; the results on the CPU."""
    to = dict(device=param.device, dtype=param.dtype) if param is not None else dict(device="cpu")
    return torch.cat([fn(chunk.to(**to)).cpu() for chunk in torch.split(images, batch_size)])


def class_accuracy(clf: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   batch_size: int = 500) -> float:
    """(1/N) Σ_i 1[argmax_k clf(x_i)_k = y_i] for `images: (N, *D)` in [−1, 1] and integer `labels: (N,)`.

    Evaluated in batches on the classifier's device, without gradients and without changing
    its train/eval mode (call `clf.eval()` first if it has dropout or batch norm). Refused with
    a ValueError: NaN/inf pixels, pixels off the [−1, 1] scale (see `PIXEL_LIMIT`), labels that
    are not integers in 0..K−1 (K the classifier's number of logits) or not one per image.
    """
    labels = torch.as_tensor(labels)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"class_accuracy takes images as a tensor (N, *D), got {type(images).__name__}.")
    if labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0] if labels.ndim else 0} labels: class_accuracy "
                         f"needs images (N, *D) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}.")
    if labels.dtype not in _INT_DTYPES:
        raise ValueError(f"class_accuracy: labels are {labels.dtype}; pass integer class indices (labels.long()).")
    if images.shape[0] == 0:
        raise ValueError("class_accuracy needs at least one image.")
    _check_images(images, "class_accuracy")
    lo, hi = torch.stack(torch.aminmax(labels)).tolist()
    logits = _batched(clf, images, _classifier_param(clf), batch_size)
    if logits.ndim != 2 or logits.shape[0] != images.shape[0]:
        raise ValueError(f"The classifier must return logits (B, K), got shape {tuple(logits.shape)}.")
    if lo < 0 or hi >= logits.shape[1]:
        raise ValueError(f"class_accuracy: labels must be class indices in 0..{logits.shape[1] - 1} "
                         f"(the classifier has {logits.shape[1]} logits); got values from {lo} to {hi}.")
    return (logits.argmax(1) == labels.cpu()).double().mean().item()


def image_fd(clf: torch.nn.Module, images_a: torch.Tensor, images_b: torch.Tensor,
             batch_size: int = 500) -> float:
    """`frechet_distance(clf.features(images_a), clf.features(images_b))`, features in batches.

    Both sets are checked as in `class_accuracy` (finite, on the [−1, 1] scale) and need two
    images or more."""
    if not callable(getattr(clf, "features", None)):
        raise ValueError(f"image_fd needs a classifier with a `features(x) -> (B, F)` method; "
                         f"{type(clf).__name__} has none.")
    for images in (images_a, images_b):
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"image_fd takes two image tensors (N, *D), got {type(images).__name__}.")
    if min(images_a.shape[0], images_b.shape[0]) < 2:
        raise ValueError(f"image_fd needs at least two images in each set (a covariance needs two), "
                         f"got {images_a.shape[0]} and {images_b.shape[0]}.")
    _check_images(images_a, "image_fd", "images of the first set")
    _check_images(images_b, "image_fd", "images of the second set")
    param = _classifier_param(clf)
    return frechet_distance(_batched(clf.features, images_a, param, batch_size),
                            _batched(clf.features, images_b, param, batch_size))
