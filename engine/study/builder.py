"""Studies built in the dashboard's Launch page: the builder's choices become a study spec (the same TOML a user
would write, see spec.py), expanded and planned like any study file, never by code of its own.

    data = study_data("lr-sweep", base={"task": "points", "epochs": 5},
                      factors={"lr": {"log_range": [1e-3, 1e-1], "num": 3}, "activation": ["relu", "tanh"]},
                      seeds=[0, 1])
    spec = expand(data)          # engine.study.spec.load_study_text on the generated TOML: validated, expanded
    plan = plan_study(spec, store)   # engine.study.plan.make_plan: cached vs missing, time estimate
"""
from __future__ import annotations

import json
import math
import re
from typing import Any


def study_data(name: str, base: dict[str, Any], factors: dict[str, Any] | None = None,
               seeds: list[int] | int = 1, description: str = "") -> dict[str, Any]:
    """A study spec as data: [base] without unset fields (None), [factors] as lists or range tables."""
    data: dict[str, Any] = {"name": name}
    if description:
        data["description"] = description
    data["seeds"] = seeds
    data["base"] = {k: v for k, v in base.items() if v is not None and k != "seed"}
    data["factors"] = dict(factors or {})
    return data


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"not a finite number: {v!r}")
        text = repr(v)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise ValueError(f"cannot write {type(v).__name__} to TOML: {v!r}")


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def to_toml(data: dict[str, Any]) -> str:
    """The spec as a TOML study file (top-level keys, then [base], [factors] and any other tables)."""
    lines, tables = [], []
    for k, v in data.items():
        (tables if isinstance(v, dict) else lines).append((k, v))
    out = [f"{_key(k)} = {_toml_value(v)}" for k, v in lines]
    for name, table in tables:
        out += ["", f"[{_key(name)}]"] + [f"{_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(out) + "\n"


def expand(data: dict[str, Any], where: str = "study builder"):
    """Validate and expand through engine.study's loader; errors name ``where``."""
    from engine.study.spec import StudyError, load_study_text

    try:
        text = to_toml(data)
    except ValueError as e:
        raise StudyError(f"{where}: {e}") from None
    try:
        return load_study_text(text, where)
    except StudyError as e:
        raise StudyError(re.sub(r",? \(?line \d+\)?", "", str(e))) from None  # lines of a file the user never saw


def plan_study(spec, store, estimate: bool = True):
    """Cached vs missing runs and the time the missing ones take in one job (one process: workers=1)."""
    from engine.study.plan import make_plan
    return make_plan(spec, store, workers=1, estimate=estimate)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    from engine.study.plan import format_duration as fmt
    return fmt(seconds)


__all__ = ["study_data", "to_toml", "expand", "plan_study", "format_duration"]
