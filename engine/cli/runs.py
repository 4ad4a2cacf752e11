"""``python -m engine runs ...``: curate the runs (the same actions as the dashboard's Runs page and Overview).

    python -m engine runs exclude RUN_ID... --reason TEXT     hide from every statistic (kept in the store)
    python -m engine runs exclude --study NAME --reason TEXT  a whole study
    python -m engine runs include RUN_ID... [--study NAME]    undo exclude
    python -m engine runs tag RUN_ID... TAG [--study NAME]    (untag: the same to remove it)
    python -m engine runs note RUN_ID TEXT [--study NAME]     ("" clears the note)
    python -m engine runs delete RUN_ID... [--study NAME] [--yes]

Every action is one annotation record written atomically (engine/store/annotations.py). ``delete`` says how many
runs and how much disk before it acts (``--yes`` skips the question) and refuses a running run.
engine/cli/__init__.py's build_parser() calls ``add_runs_commands(subparsers)``.
"""
from __future__ import annotations

import argparse
import sys

from engine.cli.common import add_store_flag, open_store


def _targets(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    from engine.store import StoreError
    runs, studies = list(getattr(args, "run_ids", None) or []), list(args.study or [])
    if not runs and not studies:
        raise StoreError(f"runs {args.runs_command}: name at least one RUN_ID or --study NAME")
    return runs, studies


def _what(runs: list[str], studies: list[str]) -> str:
    parts = ([f"{len(runs)} run(s)"] if runs else []) + [f"study {s}" for s in studies]
    return " and ".join(parts)


def cmd_annotate(args: argparse.Namespace) -> int:
    from engine.store import StoreError
    action = args.runs_command
    store = open_store(args, writing=f"{action} runs")
    if action == "note":
        studies = list(args.study or [])
        runs, text = args.words[:-1], args.words[-1]
        if len(runs) + len(studies) != 1:
            raise StoreError("runs note: write RUN_ID TEXT, or --study NAME TEXT (one run or study at a time)")
        store.annotate("note", runs, studies, note=text)
        print(f"{'cleared the note of' if not text.strip() else 'noted on'} {_what(runs, studies)}")
        return 0
    runs, studies = _targets(args)
    fields = {"reason": args.reason} if action == "exclude" else {"tag": args.tag} if action in ("tag", "untag") \
        else {}
    store.annotate(action, runs, studies, **fields)
    done = {"exclude": f"excluded from analysis ({args.reason})" if action == "exclude" else "",
            "include": "included in analysis again", "tag": f"tagged {getattr(args, 'tag', '')!r}",
            "untag": f"untagged {getattr(args, 'tag', '')!r}"}[action]
    print(f"{_what(runs, studies)}: {done}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from engine import queries
    from engine.store import StoreError
    store = open_store(args, writing="delete runs")
    runs, studies = _targets(args)
    for s in studies:
        runs += [r for r in queries.study_runs(store, s)["run_id"] if r not in runs]
    plan = store.plan_delete(runs)
    if plan.unknown:
        raise StoreError(f"no such run(s) in the store: {', '.join(plan.unknown)}; nothing was deleted")
    if not plan.n_runs:
        print("nothing to delete")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise StoreError(f"deleting {plan.describe()} needs --yes (no terminal to ask)")
        answer = input(f"Delete {plan.describe()} for good? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("nothing deleted")
            return 1
    result = store.delete(plan)
    freed = "their files are removed" if result.done or result.skipped == "nothing to compact" else \
        f"their files go at the next compaction ({result.skipped})"
    print(f"deleted {plan.describe()}; {freed}")
    return 0


def add_runs_commands(commands) -> None:
    runs = commands.add_parser("runs", help="curate runs: exclude/include, tag/untag, note, delete",
                               description="Exclude runs from analysis (with a reason), tag them, note on them, "
                                           "or delete them for good. --study NAME acts on a study (exclusion, "
                                           "tags and notes of a study; delete: all its runs).")
    sub = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")

    def add(name: str, help_text: str, ids: bool = True):
        p = sub.add_parser(name, help=help_text)
        if ids:
            p.add_argument("run_ids", nargs="*", metavar="RUN_ID")
        p.add_argument("--study", action="append", metavar="NAME", help="a study (repeatable)")
        add_store_flag(p)
        return p

    p = add("exclude", "hide runs from every statistic (they stay in the store), with a reason")
    p.add_argument("--reason", required=True, help="why (shown beside the run and in every export)")
    p.set_defaults(func=cmd_annotate)
    add("include", "undo exclude").set_defaults(func=cmd_annotate)
    for name in ("tag", "untag"):
        p = sub.add_parser(name, help=f"{name} runs (RUN_ID... TAG) or a study (--study NAME TAG)")
        p.add_argument("run_ids", nargs="*", metavar="RUN_ID")
        p.add_argument("tag", metavar="TAG")
        p.add_argument("--study", action="append", metavar="NAME", help="a study (repeatable)")
        add_store_flag(p)
        p.set_defaults(func=cmd_annotate)
    p = sub.add_parser("note", help="set the note of a run (RUN_ID TEXT) or of a study (--study NAME TEXT)")
    p.add_argument("words", nargs="+", metavar="[RUN_ID] TEXT", help='the run and the note ("" clears it)')
    p.add_argument("--study", action="append", metavar="NAME")
    add_store_flag(p)
    p.set_defaults(func=cmd_annotate)
    p = add("delete", "delete runs for good (refused for a running run)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_delete)
