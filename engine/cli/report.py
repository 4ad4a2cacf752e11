"""``python -m engine report``: each study's question, winner with margin and CI, which factors matter, figures.

    python -m engine report --format markdown --out report/report.md          every study in the store
    python -m engine report --study ablation --format html --out ablation.html
    python -m engine report --study ex1-optimizer --study ex4-optimizer --format latex --out paper/results.tex

Markdown and LaTeX write their figures (SVG, PDF) under ``<stem>_figures/`` beside FILE; HTML holds them inline.
The numbers are engine/analysis.py's: the same the Tables and Factors pages and ``engine analyze`` show.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.common import add_store_flag, open_store


def cmd_report(args: argparse.Namespace) -> int:
    from engine.report import build_report, render, write
    out = Path(args.out)
    report = build_report(open_store(args), args.study or None, args.metric)
    written = write(render(report, args.format, out.stem), out)
    print(f"wrote {out}" + (f" and {len(written) - 1} figure file(s) under {out.parent / (out.stem + '_figures')}"
                            if len(written) > 1 else ""))
    return 0


def add_report_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="a report of studies: question, winner with CI, factors, figures",
                              description="Each study's question, its winner with the margin over the runner-up "
                                          "and its 95% CI, which factors matter (type II factorial ANOVA), and "
                                          "figures, as Markdown, HTML or LaTeX.")
    p.add_argument("--study", action="append", default=None, metavar="NAME",
                   help="a study to report (repeat for more) [default: every study in the store]")
    p.add_argument("--metric", default=None, help="metric [default: each study's headline metric]")
    p.add_argument("--format", choices=["markdown", "html", "latex"], default="markdown")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the document; figures go under FILE's stem + _figures/ beside it (markdown, latex)")
    add_store_flag(p)
    p.set_defaults(func=cmd_report)
