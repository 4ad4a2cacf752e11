"""``python -m engine train``: one run from flags and/or a TOML config, or its result from the cache.

Every RunConfig field is a flag (``--hidden 100 150``, ``--lr 0.01``) with its allowed values and default in
``--help``; a ``--config`` file comes first and the flags override it.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.cli.common import add_store_flag, open_store
from engine.config import FIELD_KINDS, RunConfig, field_help


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
    """One flag per RunConfig field, named after it, with its allowed values and default in --help. Spelled with
    hyphens as command lines are (``--batch-size``); the field's own spelling (``--batch_size``) stays an alias."""
    group = parser.add_argument_group("run config (any field; unset fields take the task's default)")
    for name, info in field_help().items():
        flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
        kind = info["kind"]
        default = info["default"]
        shown = "task default" if default is None else default
        text = f"{info['help']} [default: {shown}]"
        if kind == "ints":
            # --hidden 100 150, or --hidden 100,150; a bare --hidden means no hidden layer (the linear model).
            group.add_argument(*flags, dest=name, nargs="*", default=None, metavar="N", help=text)
        else:
            group.add_argument(*flags, dest=name, type=_flag_type(kind), default=None, choices=info["choices"],
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


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engine.train import resolve_device, run_configs
    config = config_from_args(args)
    resolve_device(args.device)  # a bad --device is reported before anything starts
    store = open_store(args, writing="train")
    print(f"run {config.run_id}: {config.task}/{config.dataset}, {config.model}, {config.optimizer} lr={config.lr:g}",
          file=sys.stderr)
    with tqdm(total=config.epochs, unit="epoch", file=sys.stderr, disable=args.quiet) as bar:
        def progress(event: dict) -> None:
            bar.update(event["run_epochs_done"] - bar.n)  # one run: its run-epochs are its epochs
        outcome = run_configs([config], store, device=args.device, progress=progress)[0]
    record = store.get(config.run_id)
    print(f"run_id: {config.run_id}")
    print(f"status: {outcome.status}{' (cached: nothing trained)' if outcome.cached else ''}")
    if record is not None:
        for name, value in sorted({**record.final, **record.summary}.items()):
            print(f"{name}: {value:.6g}" if isinstance(value, float) else f"{name}: {value}")
    return 0 if outcome.status in ("completed", "diverged") else 1


def add_train_command(commands) -> None:
    train = commands.add_parser("train", help="train one run (or return it from the cache)",
                                description="Train one run from flags and/or a TOML config; a config that already "
                                            "ran is returned from the store without training.")
    train.add_argument("--config", help="TOML file with config fields (flags override it)")
    train.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    add_store_flag(train)
    add_config_flags(train)
    train.set_defaults(func=cmd_train)
