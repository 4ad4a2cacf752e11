"""``python -m engine analyze --study NAME``: a study's cells, mean and spread, best and ties, vs a baseline.

    python -m engine analyze --study ablation
    python -m engine analyze --study ablation --by activation,optimizer --interval sem --format markdown
    python -m engine analyze --study ablation --by optimizer --baseline optimizer=sgd --hold activation=relu

The numbers are engine/analysis.py's (the same the Tables page shows); ``--format json`` prints
``Analysis.to_dict()`` (keys in docs/analysis-json.md).
"""
from __future__ import annotations

import argparse
import json

from engine.cli.common import add_store_flag, open_store


def _split(text: str | None) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()] if text else []


def _fmt(x, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}g}" if abs(x) >= 1e4 or (x and abs(x) < 1e-3) else f"{x:.{digits}f}"


def rows(result) -> tuple[list[str], list[list[str]]]:
    """The cell table as text: factor columns, mean ± spread, n, diverged, mark, and the baseline columns."""
    from engine.analysis import level_text
    head = list(result.by) + [f"mean ± {result.interval}" if result.interval != "ci" else "mean [95% CI]", "n",
                              "diverged", "mark"]
    if result.baseline:
        head += ["vs baseline [95% CI]", "p (Holm)", "vs baseline"]
    out = []
    for c in result.cells:
        if result.interval == "ci":
            spread = f"{_fmt(c.mean)} [{_fmt(c.ci_low)}, {_fmt(c.ci_high)}]"
        else:
            s = c.std if result.interval == "std" else c.sem
            spread = f"{_fmt(c.mean)} ± {_fmt(s)}"
        line = [level_text(c.key[f]) for f in result.by] + [spread, str(c.n), str(c.n_diverged), c.mark]
        if result.baseline and c.vs_baseline_mark == "baseline":
            line += ["–", "–", "baseline"]
        elif result.baseline:
            line += [f"{_fmt(c.vs_baseline)} [{_fmt(c.vs_baseline_ci_low)}, {_fmt(c.vs_baseline_ci_high)}]",
                     _fmt(c.vs_baseline_p_holm), c.vs_baseline_mark or "–"]
        out.append(line)
    return head, out


def notes(result) -> list[str]:
    from engine.analysis import FINISHED
    out = [f"{result.value}, {result.direction} is better; ± / interval: {result.interval_meaning}",
           "marks: best; tie = not distinguishable from the best after Holm correction; worse; too few seeds "
           "(< 3 usable runs)",
           f"diverged runs (or a non-finite final value) are excluded from the mean and counted; only "
           f"{' and '.join(FINISHED)} runs count"]
    if result.unfinished:
        out.append("left out, not finished: " + ", ".join(f"{k} {s}" for s, k in result.unfinished.items()))
    if result.varying:
        out.append("WARNING: cells pool different configs: " + "; ".join(
            f"{f} takes {', '.join(v)}" for f, v in result.varying.items())
            + " (hold them with --hold F=V or average knowingly with --average-over F)")
    if result.excluded_runs:
        out.append(f"excluded: {len(result.excluded_runs)} runs left out of every number by a person "
                   "(--include-excluded counts them): " + "; ".join(
                       f"{r} ({why})" for r, why in sorted(result.excluded_runs.items())))
    if result.reason:
        out.append(f"note: {result.reason}")
    return out


def cmd_analyze(args: argparse.Namespace) -> int:
    from engine.analysis import analyze, parse_assignments
    result = analyze(open_store(args), args.study, args.metric, _split(args.by) or None,
                     hold=parse_assignments(args.hold, "--hold"), average_over=_split(args.average_over),
                     baseline=parse_assignments(args.baseline, "--baseline") or None, interval=args.interval,
                     include_excluded=args.include_excluded)
    if args.format == "json":
        print(json.dumps(result.to_dict(), allow_nan=False, indent=1))
        return 0
    head, body = rows(result)
    if args.format == "markdown":
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for line in body:
            print("| " + " | ".join(line) + " |")
        print()
        for n in notes(result):
            print(f"- {n}")
        return 0
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    for line in [head] + body:
        print("  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip())
    for n in notes(result):
        print(n)
    return 0


def add_analyze_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("analyze", help="a study's cells: mean, spread, best and ties, vs a baseline",
                              description="Final metric per cell of a study, with engine.stats's intervals and "
                                          "tests (the numbers the Tables page shows).")
    p.add_argument("--study", required=True, help="study name (python -m engine ls shows them)")
    p.add_argument("--metric", default=None, help="metric [default: the study's headline metric]")
    p.add_argument("--by", default=None, help="F1[,F2]: the cells' factors [default: the study's first two "
                                              "varying config fields]")
    p.add_argument("--baseline", default=None, help="FIELD=VALUE,...: the baseline cell (one level per --by field)")
    p.add_argument("--hold", default=None, help="FIELD=VALUE,...: keep only the runs at these levels")
    p.add_argument("--average-over", default=None, help="F1[,F2]: factors to average over knowingly")
    p.add_argument("--interval", choices=["std", "sem", "ci"], default="ci", help="the spread shown [default: ci]")
    p.add_argument("--format", choices=["table", "json", "markdown"], default="table")
    p.add_argument("--include-excluded", action="store_true",
                   help="count the runs excluded from analysis (engine runs exclude) [default: leave them out and "
                        "list them]")
    add_store_flag(p)
    p.set_defaults(func=cmd_analyze)
