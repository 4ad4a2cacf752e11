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


def open_store(args: argparse.Namespace, writing: str | None = None):
    """The store of ``--store``. ``writing``: what the command is about to write (e.g. "exclude runs"); a store
    that cannot be written then fails at once with one line, before any work starts."""
    from engine.store import RunStore, StoreError, compact_threshold_from_env
    store = RunStore(store_root(args), compact_threshold=compact_threshold_from_env())
    if writing:
        reason = store.read_only_reason()
        if reason:
            raise StoreError(f"cannot {writing}: {reason}")
    return store
