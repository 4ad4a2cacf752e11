"""The Launch page's config form: one widget per RunConfig field that applies (engine.config.applies), choice
fields offering only the allowed values (engine.config.allowed_values), defaults from the canonical config.
"""
from __future__ import annotations

import math
from typing import Any

import streamlit as st

from engine.config import STRUCTURAL, ConfigError, RunConfig, allowed_values, applies, field_help

GROUPS = (
    ("Task and data", ("task", "dataset", "n_samples", "noise", "class_balance", "n_colors", "normalize",
                       "data_seed", "val_fraction", "test_fraction")),
    ("Model", ("model", "hidden", "activation", "channels", "kernel_sizes", "pool", "shared_trunk")),
    ("Loss and optimisation", ("loss", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "schedule",
                               "min_lr", "step_size", "gamma", "grad_clip", "batch_size", "epochs", "seed",
                               "evaluate_test")),
)


def canonical(values: dict[str, Any]) -> RunConfig | None:
    """The config these values make (defaults filled in), or None when they are not a valid config."""
    try:
        return RunConfig.from_dict(values)
    except ConfigError:
        return None


def config_error(values: dict[str, Any]) -> str | None:
    """The ConfigError message of these values, or None when they make a valid config."""
    try:
        RunConfig.from_dict(values)
    except ConfigError as e:
        return str(e)
    return None


def parse_ints(text: str, name: str) -> list[int]:
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"{name} must be integers separated by commas, e.g. 100,150 (empty for none), "
                          f"got {text!r}") from None



def config_form(prefix: str, skip: tuple[str, ...] = (), columns: int = 4) -> tuple[dict[str, Any], str | None]:
    """Draw one widget per field that applies; return (the values, the ConfigError message or None).

    Widget keys carry the task, so switching the task resets the form to that task's defaults."""
    info = field_help()
    values: dict[str, Any] = {}
    struct: dict[str, Any] = {}
    errors: list[str] = []
    slots: dict[str, Any] = {}  # under each widget: where its error goes
    task = st.session_state.get(f"{prefix}.task", "points")
    grouped = {n for _, names in GROUPS for n in names}
    others = tuple(n for n in info if n not in grouped)  # a field added to RunConfig later still gets a widget
    for title, names in GROUPS + ((("Other", others),) if others else ()):
        st.markdown(f"**{title}**")
        cols = st.columns(columns)
        i = 0
        for name in names:
            if name in skip or not applies(name, struct):
                continue
            meta = info[name]
            filled = canonical(struct)
            default = getattr(filled, name) if filled is not None else meta["default"]
            key = f"{prefix}.{name}" if name == "task" else f"{prefix}.{task}.{name}"
            col = cols[i % columns]
            i += 1
            try:
                value = _widget(col, name, meta, default, struct, key)
            except ConfigError as e:
                errors.append(str(e))
                continue
            finally:
                slots[name] = col.empty()
            if value is not None:
                values[name] = value
            if name in STRUCTURAL:
                struct[name] = value
    error = errors[0] if errors else config_error(values)
    if error:
        field = next((n for n in slots if error.startswith((f"{n} ", f"{n}:", f"{n}="))), None)
        if field:  # said at the field it is about, in the config's own words
            slots[field].error(error, icon="⚠️")
    return values, error


def _widget(col, name: str, meta: dict, default: Any, struct: dict, key: str) -> Any:
    kind, text = meta["kind"], meta["help"]
    if meta["choices"]:
        options = list(allowed_values(name, struct))
        index = options.index(default) if default in options else 0
        return col.selectbox(name, options, index=index, key=key, help=text)
    if kind == "bool":
        return col.checkbox(name, value=bool(default), key=key, help=text)
    if kind == "int":
        return int(col.number_input(name, value=int(default) if default is not None else None, step=1, key=key,
                                    help=text))
    if kind == "float":
        value = col.number_input(name, value=float(default) if default is not None else None, format="%g",
                                 step=_step(name, default), key=key, help=text,
                                 placeholder="off" if default is None else None)
        return None if value is None else float(value)
    if kind == "ints":
        raw = col.text_input(name, value=",".join(map(str, default or ())), key=key,
                             help=text + " (comma-separated; empty for none)")
        return parse_ints(raw, name)
    raise AssertionError(kind)


def _step(name: str, default: Any) -> float:
    if isinstance(default, (int, float)) and default and default > 0:
        return float(f"{10 ** math.floor(math.log10(default)):g}")
    return 0.01 if name in ("lr", "min_lr") else 0.1
