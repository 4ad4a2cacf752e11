"""The values of a study's factors: a list, or a range table (``{log_range = [a, b], num = n}``,
``{range = [a, b], step = s}``, ``{range = [a, b], num = n}``, ``{values = [...]}``), each checked against the
config field's type; and how a value is written in a cell's label.
"""
from __future__ import annotations

import math
from typing import Any

from engine.config import FIELD_KINDS, FIELD_NAMES
from engine.study.where import Where

RANGE_KEYS = ("log_range", "range", "num", "step", "values")


def format_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def type_problem(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be a value of config field ``name`` (None when its type fits)."""
    kind = FIELD_KINDS[name]
    ok = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "ints": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (
            isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)),
    }[kind]
    if ok(value):
        return None
    want = {"int": "an integer", "float": "a finite number", "bool": "true or false", "str": "a string",
            "ints": "a list of integers, e.g. [100, 150] ([] for none)"}[kind]
    return f"{name} must be {want}, got {value!r}"


def _round(value: float) -> float:
    # Ranges produce values like 0.30000000000000004; 12 significant digits keep run ids stable and readable.
    return float(f"{value:.12g}")


def factor_values(w: Where, table: str, factors: dict, occurrence: int = 0) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for key, spec in factors.items():
        if key == "seed":
            raise w.error(table, key, "seed cannot be a factor: list the seeds in `seeds = [...]`", occurrence)
        if key not in FIELD_NAMES:
            raise w.error(table, key, f"unknown factor {key!r}: factors are config fields "
                                      f"({', '.join(sorted(FIELD_NAMES - {'seed'}))})", occurrence)
        values = _values_of(w, table, key, spec, occurrence)
        if not values:
            raise w.error(table, key, "empty list: a factor needs at least one value", occurrence)
        for i, v in enumerate(values):
            reason = type_problem(key, v)
            if reason:
                raise w.error(table, key, f"value #{i + 1}: {reason}", occurrence)
        seen = set()
        for v in values:
            h = repr(v)
            if h in seen:
                raise w.error(table, key, f"value {format_value(v)} is listed twice", occurrence)
            seen.add(h)
        out[key] = values
    return out


def _values_of(w: Where, table: str, key: str, spec: Any, occurrence: int) -> list[Any]:
    if isinstance(spec, list):
        return list(spec)
    if not isinstance(spec, dict):
        raise w.error(table, key, f"a factor is a list of values or a range table "
                                  f"({{log_range = [a, b], num = n}}, {{range = [a, b], step = s}}, "
                                  f"{{values = [...]}}), got {spec!r}; a fixed value belongs in [base]", occurrence)
    unknown = sorted(set(spec) - set(RANGE_KEYS))
    if unknown:
        raise w.error(table, key, f"unknown range key {unknown[0]!r}; use log_range+num, range+step, range+num "
                                  "or values", occurrence)
    if "values" in spec:
        if len(spec) != 1 or not isinstance(spec["values"], list):
            raise w.error(table, key, "{values = [...]} takes a list and nothing else", occurrence)
        return list(spec["values"])
    kind = FIELD_KINDS[key]
    if kind not in ("int", "float"):
        raise w.error(table, key, f"a range needs a numeric field; {key} is {kind}: list its values", occurrence)

    def pair(name: str) -> tuple[float, float]:
        v = spec[name]
        if (not isinstance(v, list) or len(v) != 2
                or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) for x in v)):
            raise w.error(table, key, f"{name} must be two finite numbers [start, end], got {v!r}", occurrence)
        if v[0] > v[1]:
            raise w.error(table, key, f"{name} must go from low to high, got {v!r}", occurrence)
        return v[0], v[1]

    def count() -> int:
        n = spec.get("num")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10_000:
            raise w.error(table, key, f"num must be an integer 1..10000, got {n!r}", occurrence)
        return n

    if "log_range" in spec:
        if set(spec) != {"log_range", "num"}:
            raise w.error(table, key, "log_range takes num (values spaced evenly in log scale), nothing else",
                          occurrence)
        lo, hi = pair("log_range")
        if lo <= 0:
            raise w.error(table, key, f"log_range needs positive numbers, got {spec['log_range']!r}", occurrence)
        n = count()
        values = [lo] if n == 1 else [math.exp(math.log(lo) + i * (math.log(hi) - math.log(lo)) / (n - 1))
                                      for i in range(n)]
    elif "range" in spec:
        lo, hi = pair("range")
        if set(spec) == {"range", "num"}:
            n = count()
            values = [lo] if n == 1 else [lo + i * (hi - lo) / (n - 1) for i in range(n)]
        elif set(spec) == {"range", "step"}:
            step = spec["step"]
            if isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0:
                raise w.error(table, key, f"step must be a number > 0, got {step!r}", occurrence)
            n = int(math.floor((hi - lo) / step + 1e-9)) + 1
            if n > 10_000:
                raise w.error(table, key, f"range/step gives {n} values; at most 10000", occurrence)
            values = [lo + i * step for i in range(n)]
        else:
            raise w.error(table, key, "range takes either step or num", occurrence)
    else:
        raise w.error(table, key, "a range table needs log_range, range or values", occurrence)
    if kind == "int":
        ints = [int(round(v)) for v in values]
        if any(abs(a - b) > 1e-9 for a, b in zip(ints, values)) or len(set(ints)) != len(ints):
            raise w.error(table, key, f"{key} takes integers but the range gives {[_round(v) for v in values]}",
                          occurrence)
        return ints
    return [_round(v) for v in values]
