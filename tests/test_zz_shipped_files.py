"""The shipped files in data/ never change: no test, command or notebook run may overwrite them.

Every file git tracks under data/ must equal the blob committed at HEAD (`git hash-object`
against `git ls-tree HEAD`), and must still have the SHA-256 it had when this module was
collected, at the start of the session (on every pytest-xdist worker too). The file's name
sorts it last in tests/, so that in a plain run it checks after the other tests. Without git
(or outside a checkout) only the second check runs.
"""

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def git(*args) -> subprocess.CompletedProcess | None:
    """`git -C ROOT args`, or None without git."""
    if shutil.which("git") is None:
        return None
    return subprocess.run(["git", "-c", f"safe.directory={ROOT}", "-C", str(ROOT), *args],
                          capture_output=True, text=True, timeout=120)


def tracked() -> list[str] | None:
    """The files under data/ that git tracks (paths relative to ROOT), or None outside a git checkout."""
    proc = git("ls-files", "-z", "--", "data/")
    if proc is None or proc.returncode != 0:
        return None
    return sorted(p for p in proc.stdout.split("\0") if p)


def sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _shipped() -> list[str]:
    names = tracked()
    if names is None:  # no git: what data/ holds now
        names = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "data").glob("*") if p.is_file())
    return names


AT_START = {name: sha256(ROOT / name) for name in _shipped()}  # at collection: the session's start

ADVICE = ("a test, command or notebook overwrote or deleted a shipped file (restore it with "
          "`git checkout -- data/`); if you replaced it on purpose, commit it")


def test_the_shipped_files_still_have_the_checksums_they_had_when_the_session_began():
    assert AT_START, "data/ holds no shipped files"
    now = {name: sha256(ROOT / name) for name in AT_START}
    changed = [name for name in AT_START if now[name] != AT_START[name]]
    assert not changed, f"changed during this test session: {', '.join(changed)}: {ADVICE}"


def test_the_shipped_files_are_the_committed_ones():
    names = tracked()
    if names is None:
        pytest.skip("git, or a git checkout, is not available")
    head = git("ls-tree", "-r", "-z", "HEAD", "--", "data/")
    if head.returncode != 0:
        pytest.skip(f"no HEAD commit to compare with ({head.stderr.strip()})")
    committed = {}
    for entry in filter(None, head.stdout.split("\0")):
        meta, name = entry.split("\t", 1)
        committed[name] = meta.split()[2]
    missing = [name for name in names if not (ROOT / name).is_file()]
    present = [name for name in names if name in committed and name not in missing]
    assert present, "no committed file under data/"
    hashed = git("hash-object", "--", *present)  # with the repository's filters, as `git add` would
    assert hashed.returncode == 0, hashed.stderr
    current = dict(zip(present, hashed.stdout.split()))
    changed = [name for name in present if current[name] != committed[name]]
    assert not missing and not changed, (
        f"differ from the commit (HEAD): {', '.join(changed + [f'{m} (missing)' for m in missing])}: {ADVICE}")
