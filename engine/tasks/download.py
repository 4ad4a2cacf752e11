"""Getting the full MNIST onto disk: download with MD5 check, verification, and the ``data`` CLI subcommand.

``python -m engine data download mnist [--dest DIR]`` fetches the four idx files (about 11 MB) into DIR (default:
$ABLATION_LAB_DATA or ./.data/mnist, where the ``full`` data sets look); ``python -m engine data verify mnist``
checks them. This is the only module of the engine that touches the network, and only when asked to.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from engine.tasks.mnist import MNIST_FILES, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, mnist_dir, read_idx

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


# --- CLI -------------------------------------------------------------------------------------------------------------

def _dest(args: argparse.Namespace) -> Path:
    # Resolved at run time, not parser-build time, so ABLATION_LAB_DATA set after import still counts.
    return Path(args.dest) if args.dest is not None else mnist_dir()


def cmd_download(args: argparse.Namespace) -> int:
    dest = _dest(args)
    print(f"downloading MNIST from {args.base_url} into {dest.resolve()}")
    try:
        download_mnist(dest, args.base_url, log=print)
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"done: {dest.resolve()}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    dest = _dest(args)
    problems = verify_mnist(dest)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if problems:
        print(f"MNIST in {dest.resolve()}: {len(problems)} problem(s); fix with "
              f"`python -m engine data download mnist --dest {dest}`", file=sys.stderr)
        return 1
    print(f"MNIST in {dest.resolve()}: all {len(MNIST_FILES)} files present and verified")
    return 0


def handle_data(args: argparse.Namespace) -> int:
    """Run the parsed ``data ...`` command (same as calling ``args.func(args)``)."""
    return args.func(args)


def add_data_commands(subparsers: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    """Register ``data download mnist [--dest DIR] [--base-url URL]`` and ``data verify mnist [--dest DIR]`` on
    the CLI's subparsers. Each leaf sets ``func`` (args -> exit code) via set_defaults; returns ``handle_data``,
    which dispatches to it."""
    data = subparsers.add_parser("data", help="download or verify on-disk data sets (full MNIST)",
                                 description="Download or verify the full MNIST (the files the `full` data sets read).")
    actions = data.add_subparsers(dest="data_command", metavar="{download,verify}", required=True)
    dest_help = "folder of the idx files (default: $ABLATION_LAB_DATA, else ./.data/mnist)"

    download = actions.add_parser("download", help="download a data set and check its checksums")
    download.add_argument("dataset", choices=["mnist"])
    download.add_argument("--dest", default=None, help=dest_help)
    download.add_argument("--base-url", default=DEFAULT_BASE_URL,
                          help=f"mirror to download from (http(s):// or file://); default {DEFAULT_BASE_URL}")
    download.set_defaults(func=cmd_download)

    verify = actions.add_parser("verify", help="check a downloaded data set (presence, MD5, format)")
    verify.add_argument("dataset", choices=["mnist"])
    verify.add_argument("--dest", default=None, help=dest_help)
    verify.set_defaults(func=cmd_verify)
    return handle_data
