"""What every command group of ``python -m engine`` shares: the ``--store`` flag and the store it opens.

The store root defaults to ``$ABLATION_LAB_STORE`` or ``runs/``; that default is taken here, at the edge, once.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_store_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=None,
                        help="run store folder [default: $ABLATION_LAB_STORE, else runs/]")


def store_root(args: argparse.Namespace) -> Path:
    from engine.store import default_store_root
    return Path(args.store) if args.store else default_store_root()


def open_store(args: argparse.Namespace):
    from engine.store import RunStore
    return RunStore(store_root(args))
