"""Command line: ``python -m engine COMMAND``. Every command takes ``--store DIR``.

    python -m engine train --task points --hidden 75 --activation tanh --optimizer adam --lr 0.01 --epochs 20
    python -m engine train --config run.toml --epochs 5     # flags override the file
    python -m engine ls | check [--repair] | compact | export ...
    python -m engine study plan|run FILE
    python -m engine reproduce [--quick]
    python -m engine jobs ls | submit | cancel | prune | supervisor ...
    python -m engine runs exclude|include|tag|untag|note|delete RUN_ID... [--study NAME]
    python -m engine data download mnist
    python -m engine analyze --study NAME [--by F1,F2] [--baseline F=V] [--interval std|sem|ci] [--format json]
    python -m engine report [--study NAME ...] [--metric M] --format markdown|html|latex --out FILE

One module per command group (train, store, study, jobs, runs, data, analyze, report), each with an
``add_*_commands(subparsers)``; ``common`` holds the ``--store`` flag. Errors of the project are printed as one line
(engine.errors), here, once.
"""
from __future__ import annotations

import argparse
import sys

from engine.errors import report_user_errors


def build_parser() -> argparse.ArgumentParser:
    from engine.cli.analyze import add_analyze_command
    from engine.cli.data import add_data_commands
    from engine.cli.jobs import add_job_commands
    from engine.cli.runs import add_runs_commands
    from engine.cli.report import add_report_command
    from engine.cli.store import add_store_commands
    from engine.cli.study import add_study_commands
    from engine.cli.train import add_train_command

    parser = argparse.ArgumentParser(prog="python -m engine", description="Ablation Lab: train, store and query runs.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train_command(commands)
    add_store_commands(commands)
    add_data_commands(commands)
    add_study_commands(commands)
    add_job_commands(commands)
    add_runs_commands(commands)
    add_analyze_command(commands)
    add_report_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return report_user_errors(lambda: args.func(args))
    except KeyboardInterrupt:
        print("stopped: finished runs are kept in the store", file=sys.stderr)
        return 130
