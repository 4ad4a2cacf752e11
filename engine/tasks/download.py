"""Getting the full MNIST onto disk: download with MD5 check, and verification.

``python -m engine data download mnist [--dest DIR]`` (engine/cli/data.py) fetches the four idx files (about
11 MB) into DIR (default: $ABLATION_LAB_DATA or ./.data/mnist, where the ``full`` data sets look);
``python -m engine data verify mnist`` checks them. This is the only module of the engine that touches the network, and only when asked to.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from engine.tasks.mnist import MNIST_FILES, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, read_idx

DEFAULT_BASE_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"

# The well-known MD5 sums of the original files (as in torchvision); a mirror serving anything else is rejected.
MNIST_MD5 = {
    TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
    TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
    TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
}

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A file could not be fetched or did not match its checksum; the message names the file and the URL."""


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
    """Problems with the full-MNIST files in ``dest`` (missing, wrong MD5, unreadable, inconsistent); [] if fine."""
    dest = Path(dest)
    problems: list[str] = []
    arrays = {}
    for name in MNIST_FILES:
        path = dest / name
        if not path.is_file():
            problems.append(f"{name}: missing in {dest}")
            continue
        got = _md5(path)
        if got != MNIST_MD5[name]:
            problems.append(f"{name}: MD5 {got}, expected {MNIST_MD5[name]}")
        try:
            arrays[name] = read_idx(path)
        except ValueError as e:
            problems.append(str(e))
    for images, labels in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        if images in arrays and labels in arrays:
            x, y = arrays[images], arrays[labels]
            if x.ndim != 3 or x.shape[1:] != (28, 28):
                problems.append(f"{images}: shape {x.shape}, expected (N, 28, 28)")
            if y.ndim != 1 or len(y) != len(x):
                problems.append(f"{labels}: shape {y.shape} does not match {len(x)} images in {images}")
            elif y.size and y.max() > 9:
                problems.append(f"{labels}: label {int(y.max())} outside 0..9")
    return problems
