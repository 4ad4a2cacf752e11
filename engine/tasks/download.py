"""Getting the full MNIST onto disk: download with MD5 check, and verification.

``python -m engine data download mnist [--dest DIR]`` (engine/cli/data.py) fetches the four idx files (about
11 MB) into DIR (default: $ABLATION_LAB_DATA or ./.data/mnist, where the ``full`` data sets look);
``python -m engine data verify mnist`` checks them; ``python -m engine data import mnist DIR`` copies a local folder of
the files (compressed or not: the offline route) and checks the copies. This is the only module of the engine that touches the network, and only when asked to.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from engine.tasks.mnist import MNIST_FILES, MNIST_STEMS, find_file, read_idx

DEFAULT_BASE_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"

# The well-known MD5 sums of the original gzip files (as in torchvision); a mirror serving anything else is rejected.
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# ... and of the same files uncompressed, as published (the form ../shared/data/mnist holds).
MNIST_RAW_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A file could not be fetched or did not match its checksum; the message names the file and the URL."""


class ImportDataError(RuntimeError):
    """A local folder could not be imported: a file is missing or corrupt; the message names each."""


def expected_md5(name: str) -> str | None:
    """The well-known MD5 of an MNIST file by its name (compressed or not); None for any other name."""
    return {**MNIST_MD5, **MNIST_RAW_MD5}.get(name)  # read at call time: tests substitute the tables


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, target: Path, expected_md5: str, timeout: float) -> None:
    """Download ``url`` to ``target`` atomically: stream into a temp file in the same folder while hashing, and
    os.replace it into place only when the MD5 matches, so ``target`` is never a partial or wrong file."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    while chunk := response.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            except (urllib.error.URLError, OSError) as e:
                raise DownloadError(f"{target.name}: download from {url} failed: {e}") from None
        got = digest.hexdigest()
        if got != expected_md5:
            raise DownloadError(f"{target.name}: MD5 mismatch for {url}: got {got}, expected {expected_md5}; "
                                f"the file was discarded (corrupt download or a mirror serving other data)")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # no-op after a successful os.replace


def download_mnist(dest: Path, base_url: str = DEFAULT_BASE_URL, timeout: float = 60.0,
                   log: Callable[[str], None] | None = None) -> Path:
    """Download the four full-MNIST idx files into ``dest`` and check their MD5; returns ``dest``.

    Files already present with the right checksum are kept (so an interrupted download resumes per file). Raises
    DownloadError naming the file on a network error or checksum mismatch; the bad file is not left in ``dest``.
    ``base_url`` may be any URL urllib opens, including ``file://`` (an offline copy).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    base = base_url if base_url.endswith("/") else base_url + "/"
    for name in MNIST_FILES:
        target = dest / name
        if target.is_file() and _md5(target) == MNIST_MD5[name]:
            if log:
                log(f"{name}: already present, checksum ok")
            continue
        _fetch(base + name, target, MNIST_MD5[name], timeout)
        if log:
            log(f"{name}: downloaded, checksum ok")
    return dest


def verify_mnist(dest: Path) -> list[str]:
    """Problems with the full-MNIST files in ``dest`` (missing, wrong MD5, unreadable, inconsistent); [] if fine.
    Each file may be uncompressed or gzip-compressed; the one the loader reads (uncompressed first) is checked."""
    dest = Path(dest)
    problems: list[str] = []
    arrays = {}
    for stem in MNIST_STEMS:
        path = find_file(dest, stem)
        if path is None:
            problems.append(f"{stem} (or {stem}.gz): missing in {dest}")
            continue
        got, want = _md5(path), expected_md5(path.name)
        if got != want:
            problems.append(f"{path.name}: MD5 {got}, expected {want} (corrupt or not the original file)")
        try:
            arrays[stem] = read_idx(path)
        except ValueError as e:
            problems.append(str(e))
    for images, labels in zip(MNIST_STEMS[::2], MNIST_STEMS[1::2]):
        if images in arrays and labels in arrays:
            x, y = arrays[images], arrays[labels]
            if x.ndim != 3 or x.shape[1:] != (28, 28):
                problems.append(f"{images}: shape {x.shape}, expected (N, 28, 28)")
            if y.ndim != 1 or len(y) != len(x):
                problems.append(f"{labels}: shape {y.shape} does not match {len(x)} images in {images}")
            elif y.size and y.max() > 9:
                problems.append(f"{labels}: label {int(y.max())} outside 0..9")
    return problems


def import_mnist(source: Path, dest: Path, log: Callable[[str], None] | None = None) -> Path:
    """Copy the four full-MNIST files (each uncompressed or .gz) from the local folder ``source`` into ``dest`` and
    check them; returns ``dest``. The source is verified first, so a missing or corrupt file raises ImportDataError
    naming it and nothing is copied; each copy is written atomically and its MD5 checked again."""
    source, dest = Path(source), Path(dest)
    if not source.is_dir():
        raise ImportDataError(f"{source}: not a folder; give the folder holding the four MNIST idx files "
                              f"({', '.join(MNIST_STEMS)}, each optionally .gz)")
    problems = verify_mnist(source)
    if problems:
        raise ImportDataError(f"{source.resolve()} cannot be imported: " + "; ".join(problems))
    dest.mkdir(parents=True, exist_ok=True)
    if source.resolve() == dest.resolve():
        return dest
    for stem in MNIST_STEMS:
        path = find_file(source, stem)
        target = dest / path.name
        # The loader prefers the uncompressed file: drop a stale other form so that it reads what was imported.
        other = dest / (stem if path.name.endswith(".gz") else f"{stem}.gz")
        other.unlink(missing_ok=True)
        try:
            _fetch(path.resolve().as_uri(), target, expected_md5(path.name), timeout=60.0)
        except DownloadError as e:  # the file changed or became unreadable while being copied
            raise ImportDataError(str(e)) from None
        if log:
            log(f"{path.name}: copied, checksum ok")
    return dest
