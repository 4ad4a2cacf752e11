"""The Launch page's study builder: the factors to vary and their values, and a summary of what launching the
study trains (cells, runs, cached, missing, time). The study itself is built and planned by engine/study/builder.py.
"""
from __future__ import annotations

import json
from typing import Any

import streamlit as st

from engine.config import STRUCTURAL, ConfigError, allowed_values, applies, field_help
from engine.errors import is_user_error
from engine.study.builder import expand, format_duration, plan_study
from engine.study.plan import estimate_source
from ui.launch_form import canonical, label, parse_ints, show_at_field
from ui.state import get_store, store_root

NOT_FACTORS = ("task", "model", "seed")  # they change which fields apply: pick them in the base config


def minimal_base(values: dict[str, Any]) -> dict[str, Any]:
    """The study's [base]: the task, and only the values that differ from what RunConfig would fill in anyway.
    Defaults are then filled per cell, so varying a structural factor (optimizer adam|sgd, schedule, dataset) does
    not carry fields that applied to the base's choice only (sgd's momentum into the adam cells)."""
    filled = canonical({k: values[k] for k in STRUCTURAL if k in values})
    if filled is None:
        return dict(values)
    defaults = filled.to_dict()
    return {k: v for k, v in values.items() if k == "task" or v != defaults.get(k)}


def parse_numbers(text: str, name: str, kind: str) -> list[Any]:
    out = []
    for p in [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p]:
        try:
            v = float(p)
        except ValueError:
            raise ConfigError(f"{label(name)}: {p} is not a number; write values separated by commas") from None
        if kind == "int":
            if not v.is_integer():
                raise ConfigError(f"{label(name)} takes whole numbers (you typed {p})")
            v = int(v)
        out.append(v)
    if not out:
        raise ConfigError(f"{label(name)}: give at least one value")
    return out


def factor_inputs(prefix: str, base: dict[str, Any]) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
    """Pick the fields to vary and their values (multi-selects for choices, lists or ranges for numbers).

    Returns (factors, the first error in the user's words or None, a slot under each factor's values where a later
    error about that factor goes: see ``ui.launch_form.show_at_field``)."""
    info = field_help()
    struct = {k: base[k] for k in STRUCTURAL if k in base}
    candidates = [n for n in info if n not in NOT_FACTORS and applies(n, struct)]
    chosen = st.multiselect("Factors to vary", candidates, key=f"{prefix}.factors", format_func=label,
                            help="Each factor's values multiply the number of cells; every cell runs once per seed.")
    factors: dict[str, Any] = {}
    slots: dict[str, Any] = {}
    for name in chosen:
        meta = info[name]
        kind = meta["kind"]
        key = f"{prefix}.f.{name}"
        cols = st.columns([1.2, 3])
        cols[0].markdown(f"**{label(name)}**", help=f"`{name}`: {meta['help']}")
        with cols[1]:
            try:
                if meta["choices"]:
                    options = list(allowed_values(name, {k: v for k, v in struct.items() if k != name}))
                    default = [base[name]] if base.get(name) in options else options[:1]
                    factors[name] = st.multiselect(name, options, default=default, key=key,
                                                   label_visibility="collapsed")
                elif kind == "bool":
                    factors[name] = st.multiselect(name, [False, True], default=[False, True], key=key,
                                                   format_func=lambda b: "true" if b else "false",
                                                   label_visibility="collapsed")
                elif kind == "ints":
                    default = ",".join(map(str, base.get(name) or ())) or "none"
                    raw = st.text_input(name, value=default, key=key, label_visibility="collapsed",
                                        placeholder="75; 100,150; none",
                                        help="lists separated by ';', each comma-separated; 'none' for an empty "
                                             "list (hidden: the linear model)")
                    factors[name] = [[] if p.strip().lower() in ("none", "linear") else parse_ints(p.strip(), name)
                                     for p in raw.split(";") if p.strip()]
                else:
                    factors[name] = _numeric_factor(name, kind, base.get(name), key)
            except ConfigError as e:
                slots[name] = st.empty()
                return factors, show_at_field(str(e), slots), slots
            finally:
                slots.setdefault(name, st.empty())
        if isinstance(factors.get(name), list) and not factors[name]:
            message = f"{label(name)}: pick at least one value (or stop varying it)"
            slots[name].error(message, icon=":material/error:")
            return factors, message, slots
    return factors, None, slots


def _numeric_factor(name: str, kind: str, base_value: Any, key: str) -> Any:
    how = st.radio(name, ["values", "range", "log range"], key=f"{key}.how", horizontal=True,
                   label_visibility="collapsed")
    if how == "values":
        default = f"{base_value:g}" if base_value is not None else ""
        raw = st.text_input(f"{name} values", value=default, key=f"{key}.values", label_visibility="collapsed",
                            placeholder="values separated by commas")
        return parse_numbers(raw, name, kind)
    c = st.columns(3)
    lo_default = float(base_value) if isinstance(base_value, (int, float)) and base_value else 1.0
    lo = c[0].number_input("from", value=lo_default / (10 if how == "log range" else 1), format="%g",
                           key=f"{key}.{how}.lo")
    hi = c[1].number_input("to", value=lo_default * (10 if how == "log range" else 2), format="%g",
                           key=f"{key}.{how}.hi")
    num = c[2].number_input("values", min_value=1, max_value=1000, value=3, step=1, key=f"{key}.{how}.num")
    return {"log_range" if how == "log range" else "range": [lo, hi], "num": int(num)}

# --- summary of what a launch trains --------------------------------------------------------------------------------

@st.cache_data(show_spinner=False, ttl=600, max_entries=64)
def _estimate(spec_text: str, root: str) -> tuple[int, float | None, str]:
    """(missing runs when estimated, seconds, source): calibration trains a few steps, so it is cached by the spec
    alone for a while rather than redone whenever the store changes."""
    spec = expand(json.loads(spec_text))
    plan = plan_study(spec, get_store(), estimate=True)
    return len(plan.missing), plan.estimate_s, estimate_source(plan)


@st.cache_data(show_spinner=False, max_entries=64)
def _cached_count(spec_text: str, version: str, root: str) -> int:
    spec = expand(json.loads(spec_text))
    plan = plan_study(spec, get_store(), estimate=False)
    return len(plan.cached)


def summary(data: dict[str, Any]) -> dict[str, Any]:
    """Cells, runs, cached, to train and the time estimate of a study spec (StudyError when it is invalid)."""
    spec = expand(data)
    text = json.dumps(data, sort_keys=True)
    root = store_root()
    cached = _cached_count(text, get_store().version(), root)
    missing = len(spec.runs) - cached
    est_missing, est_s, source = _estimate(text, root)
    if est_s is not None and est_missing:
        est_s = est_s * missing / est_missing  # runs finished since the estimate no longer count
    return {"spec": spec, "cells": len(spec.cell_labels()), "seeds": len(spec.seeds), "runs": len(spec.runs),
            "cached": cached, "missing": missing, "estimate_s": est_s if missing else 0.0, "source": source}


def about_text(s: dict[str, Any]) -> str:
    """"about 40s (from 12 runs measured on this machine)": the estimate says what it was measured from."""
    if not s["missing"]:
        return "nothing to train"
    if s["estimate_s"] is None:
        return "time unknown (the calibration run failed)"
    return f"about {format_duration(s['estimate_s'])} of training (from {s['source']})"


def summary_or_error(data: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """``summary`` of a study spec, or the message of the project's error that stops it (a bad study, a damaged
    store). Bugs keep their traceback."""
    try:
        return summary(data), None
    except Exception as e:
        if not is_user_error(e):
            raise
        return None, str(e)  # the engine's words: the page says them at the field (ui.launch_form.show_at_field)


def summary_text(s: dict[str, Any]) -> str:
    cells = f"{s['cells']} cell{'s' if s['cells'] != 1 else ''}"
    runs = f"{s['runs']} run{'s' if s['runs'] != 1 else ''}"
    return (f"{cells} × {s['seeds']} seed{'s' if s['seeds'] != 1 else ''} = {runs}, {s['cached']} cached, "
            f"{s['missing']} to train, {about_text(s)}")


def warn_if_study_exists(col, name: str) -> None:
    """A study name already in the store is allowed (a study grows by launching it again), but said: its runs are
    joined, and cells already trained are reused from the store rather than trained again."""
    from ui import data
    progress = data.study_progress(get_store().version(), store_root())
    row = progress[progress["study"] == name]
    if not row.empty:
        n = int(row["n_runs"].iloc[0])
        col.warning(f"A study named {name} is already in the store ({n} run{'s' if n != 1 else ''}): launching adds "
                    "to it, and runs it already has are reused, not trained again. Pick a new name for a separate "
                    "study.", icon=":material/warning:")
