"""The store's subcommands of `python -m engine`: check, compact, export, ls.

engine/cli/__init__.py's build_parser() calls ``add_store_commands(subparsers)``; each subcommand sets ``func`` to a
handler ``handler(args) -> int`` (the exit code). Handlers print what they did; ``main`` prints the store's errors
as one line a user can act on, with exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engine.cli.common import add_store_flag, open_store
from engine.store import StoreError


def _parse_filter(items: list[str] | None) -> dict[str, Any]:
    """--filter activation=relu --filter lr=0.001..0.01 --filter optimizer=adam,sgd -> query filters."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise StoreError(f"--filter {item!r}: write COLUMN=VALUE, COLUMN=A,B (any of) or COLUMN=LO..HI")
        key, raw = item.split("=", 1)

        def val(s: str) -> Any:
            if s == "":
                return None
            try:
                return json.loads(s)
            except ValueError:
                return s

        if ".." in raw:
            lo, hi = raw.split("..", 1)
            out[key] = (val(lo), val(hi))
        elif "," in raw and not raw.startswith("["):
            out[key] = [val(v) for v in raw.split(",")]
        else:
            out[key] = val(raw)
    return out


def cmd_check(args: argparse.Namespace) -> int:
    """Report (and with --repair fix) temp files, runs without a final status, damaged and leftover files."""
    store = open_store(args, writing="repair the store" if args.repair else None)
    report = store.check(repair=args.repair)
    print(f"store {store.root}")
    print(report)
    if not report.ok and not args.repair:
        print("run `python -m engine check --repair` to fix what can be fixed (nothing holding data is deleted "
              "without saying so)")
    return 0 if report.ok else 1


def cmd_compact(args: argparse.Namespace) -> int:
    """Merge finished runs' small files into part files."""
    store = open_store(args, writing="compact the store")
    r = store.compact(full=args.full)
    for note in r.notes:
        print(note)
    if r.done:
        print(f"compacted {r.merged_attempts} attempts and {r.merged_parts} parts into generation {r.generation}")
    else:
        print(f"nothing done: {r.skipped}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a table or a SELECT as CSV, Parquet or JSON."""
    from engine import queries
    store = open_store(args)
    out = queries.export(store, args.query, args.format, args.out, metric=args.metric, mode=args.mode,
                         filters=_parse_filter(args.filter))
    print(f"wrote {out}")
    return 0


LS_CONFIG = ("task", "dataset", "model", "hidden", "activation", "optimizer", "lr", "batch_size", "seed")


def cmd_ls(args: argparse.Namespace) -> int:
    """Table of runs: id, task, status, epochs, key config, final metrics."""
    import pandas as pd

    from engine import queries
    store = open_store(args)
    df = queries.list_runs(store, _parse_filter(args.filter), limit=args.limit)
    for p in df.attrs.get("problems", []):
        print(f"warning: {p}", file=sys.stderr)
    if df.empty:
        print(f"no runs in {store.root}")
        return 0
    finals = [c for c in df.columns if c.startswith("final_") and df[c].notna().any()]
    cols = ["run_id", "status", "n_epochs"] + [c for c in LS_CONFIG if c in df.columns] + finals
    # Final metrics lose their "final_" prefix unless that would clash with a config column (the logged "lr").
    view = df[cols].rename(columns={"n_epochs": "epochs",
                                    **{c: c[6:] for c in finals if c[6:] not in cols}})
    # curation: "excluded" flags runs left out of analysis (engine runs exclude), tags as a comma list
    view = view.assign(excluded=df["excluded"].map(lambda x: "yes" if x else ""),
                       tags=df["tags"].map(lambda t: ",".join(t) if t is not None and len(t) else ""))
    if "hidden" in view:
        view = view.assign(hidden=view["hidden"].map(
            lambda h: "" if h is None or (not hasattr(h, "__len__") and pd.isna(h)) else ",".join(map(str, h))))
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_columns", None):
        print(view.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def add_store_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register check, compact, export and ls on the `python -m engine` sub-command parser."""
    p = subparsers.add_parser("check", help="find temp files, unfinished runs and damaged files",
                              description=cmd_check.__doc__)
    add_store_flag(p)
    p.add_argument("--repair", action="store_true",
                   help="seal unfinished runs as interrupted, remove temp/leftover files, quarantine damaged ones")
    p.set_defaults(func=cmd_check)

    p = subparsers.add_parser("compact", help="merge finished runs into large part files",
                              description=cmd_compact.__doc__)
    add_store_flag(p)
    p.add_argument("--full", action="store_true", help="also merge all existing parts into one")
    p.set_defaults(func=cmd_compact)

    from engine.queries import EXPORT_FORMATS, EXPORTABLE
    p = subparsers.add_parser("export", help="write a table or a SELECT as CSV, Parquet or JSON",
                              description=cmd_export.__doc__)
    add_store_flag(p)
    p.add_argument("query", metavar="QUERY_NAME_OR_SQL",
                   help=f"one of {', '.join(EXPORTABLE)}, or a read-only SELECT over the views "
                        "runs, attempts, epochs, all_epochs, study_members")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="csv")
    p.add_argument("--out", type=Path, required=True, help="output file (written atomically)")
    p.add_argument("--metric", help="final_and_best: the metric, e.g. val_loss")
    p.add_argument("--mode", choices=("min", "max"), default="min", help="final_and_best: which way is better")
    p.add_argument("--filter", action="append", metavar="COL=VALUE",
                   help="runs / final_and_best: COL=VALUE, COL=A,B or COL=LO..HI (repeatable)")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("ls", help="list runs", description=cmd_ls.__doc__)
    add_store_flag(p)
    p.add_argument("--filter", action="append", metavar="COL=VALUE", help="COL=VALUE, COL=A,B or COL=LO..HI")
    p.add_argument("--limit", type=int, default=None)
    p.set_defaults(func=cmd_ls)
