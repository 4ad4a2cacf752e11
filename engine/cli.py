"""Command line: ``python -m engine COMMAND``. Every command takes ``--store DIR``.

    python -m engine train --task points --hidden 75 --activation tanh --optimizer adam --lr 0.01 --epochs 20
    python -m engine train --config run.toml --epochs 5     # flags override the file
    python -m engine ls | check [--repair] | compact | export ...
    python -m engine study plan|run FILE
    python -m engine reproduce [--quick]
    python -m engine data download mnist

The store root defaults to ``$ABLATION_LAB_STORE`` or ``runs/``; that default is taken here, at the edge, once.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.config import ConfigError, FIELD_KINDS, RunConfig, field_help


def _flag_type(kind: str):
    if kind == "bool":
        def parse_bool(text: str) -> bool:
            lowered = text.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        return parse_bool
    return {"int": int, "float": float, "str": str}.get(kind, str)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RunConfig field, named after it, with its allowed values and default in --help."""
    group = parser.add_argument_group("run config (any field; unset fields take the task's default)")
    for name, info in field_help().items():
        kind = info["kind"]
        default = info["default"]
        shown = "task default" if default is None else default
        text = f"{info['help']} [default: {shown}]"
        if kind == "ints":
            # --hidden 100 150, or --hidden 100,150; a bare --hidden means no hidden layer (the linear model).
            group.add_argument(f"--{name}", nargs="*", default=None, metavar="N", help=text)
        else:
            group.add_argument(f"--{name}", type=_flag_type(kind), default=None, choices=info["choices"],
                               metavar=None if info["choices"] else kind.upper(), help=text)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """A TOML file (``--config``) first, then every flag given on the command line on top of it."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values = RunConfig.from_toml(args.config).to_dict()
        values = {k: v for k, v in values.items() if v is not None}
    for name, kind in FIELD_KINDS.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if kind == "ints":
            # "--hidden 100 150" and "--hidden 100,150" alike; the config's own check reports a bad width.
            value = ",".join(value)
        values[name] = value
    return RunConfig.from_dict(values)


def add_store_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=None,
                        help="run store folder [default: $ABLATION_LAB_STORE, else runs/]")


def open_store(args: argparse.Namespace):
    from engine.store import RunStore, default_store_root
    return RunStore(args.store or default_store_root())


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engine.train import resolve_device, run_configs
    config = config_from_args(args)
    resolve_device(args.device)  # a bad --device is reported before anything starts
    store = open_store(args)
    print(f"run {config.run_id}: {config.task}/{config.dataset}, {config.model}, {config.optimizer} lr={config.lr:g}",
          file=sys.stderr)
    with tqdm(total=config.epochs, unit="epoch", file=sys.stderr, disable=args.quiet) as bar:
        def progress(event: dict) -> None:
            bar.update(event["epoch"] - bar.n)
        outcome = run_configs([config], store, device=args.device, progress=progress)[0]
    record = store.get(config.run_id)
    print(f"run_id: {config.run_id}")
    print(f"status: {outcome.status}{' (cached: nothing trained)' if outcome.cached else ''}")
    if record is not None:
        for name, value in sorted({**record.final, **record.summary}.items()):
            print(f"{name}: {value:.6g}" if isinstance(value, float) else f"{name}: {value}")
    return 0 if outcome.status in ("completed", "diverged") else 1


def build_parser() -> argparse.ArgumentParser:
    from engine.store.cli import add_store_commands
    from engine.tasks.download import add_data_commands
    from engine.study.cli import add_study_commands
    from engine.jobs.cli import add_job_commands

    parser = argparse.ArgumentParser(prog="python -m engine", description="Ablation Lab: train, store and query runs.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train one run (or return it from the cache)",
                                description="Train one run from flags and/or a TOML config; a config that already "
                                            "ran is returned from the store without training.")
    train.add_argument("--config", help="TOML file with config fields (flags override it)")
    train.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    add_store_flag(train)
    add_config_flags(train)
    train.set_defaults(func=cmd_train)

    add_store_commands(commands)
    add_data_commands(commands)
    add_study_commands(commands)
    add_job_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped: finished runs are kept in the store", file=sys.stderr)
        return 130
    except Exception as exc:
        # The project's own errors carry a message a user can act on; show it without a traceback.
        from engine.errors import is_user_error
        if is_user_error(exc):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
