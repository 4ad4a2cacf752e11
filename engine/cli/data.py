"""``python -m engine data download|import|verify mnist``: the full MNIST on disk (engine/tasks/download.py does the work)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.tasks.download import (DEFAULT_BASE_URL, DownloadError, ImportDataError, download_mnist, import_mnist,
                                   verify_mnist)
from engine.tasks.mnist import MNIST_STEMS, mnist_dir


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


def cmd_import(args: argparse.Namespace) -> int:
    dest = _dest(args)
    print(f"importing MNIST from {Path(args.source).resolve()} into {dest.resolve()}")
    try:
        import_mnist(Path(args.source), dest, log=print)
    except ImportDataError as e:
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
              f"`python -m engine data download mnist --dest {dest}` or `python -m engine data import mnist DIR --dest {dest}`",
              file=sys.stderr)
        return 1
    print(f"MNIST in {dest.resolve()}: all {len(MNIST_STEMS)} files present and verified")
    return 0


def add_data_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``data download mnist [--dest DIR] [--base-url URL]``, ``data import mnist SOURCE [--dest DIR]`` and
    ``data verify mnist [--dest DIR]``."""
    data = subparsers.add_parser("data", help="download, import or verify on-disk data sets (full MNIST)",
                                 description="Download, import or verify the full MNIST (the files the `full` data "
                                             "sets read).")
    actions = data.add_subparsers(dest="data_command", metavar="{download,import,verify}", required=True)
    dest_help = "folder of the idx files (default: $ABLATION_LAB_DATA, else ./.data/mnist)"

    download = actions.add_parser("download", help="download a data set and check its checksums")
    download.add_argument("dataset", choices=["mnist"])
    download.add_argument("--dest", default=None, help=dest_help)
    download.add_argument("--base-url", default=DEFAULT_BASE_URL,
                          help=f"mirror to download from (http(s):// or file://); default {DEFAULT_BASE_URL}")
    download.set_defaults(func=cmd_download)

    imp = actions.add_parser("import", help="copy a local folder of the data set's files in and check them",
                             description="Copy the four MNIST idx files (uncompressed or .gz) from a local folder "
                                         "(the offline route) and check their MD5 sums.")
    imp.add_argument("dataset", choices=["mnist"])
    imp.add_argument("source", help="folder holding the four idx files")
    imp.add_argument("--dest", default=None, help=dest_help)
    imp.set_defaults(func=cmd_import)

    verify = actions.add_parser("verify", help="check a downloaded data set (presence, MD5, format)")
    verify.add_argument("dataset", choices=["mnist"])
    verify.add_argument("--dest", default=None, help=dest_help)
    verify.set_defaults(func=cmd_verify)
