"""Shared plumbing of engine.stats: which runs count, how runs are split into groups and labelled, JSON-safe output.

Every result type of the package derives from `Result`, whose `to_dict()` returns plain JSON (no NaN: a value that
cannot be computed is None beside a `reason`). The shapes are documented in docs/analysis-json.md.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

# A test or interval from fewer runs than this is not reported: with 2 runs a t interval has 1 degree of freedom
# (t = 12.7 at 95%) and a variance estimate from one difference; saying "too few seeds" is more useful.
MIN_SEEDS = 3

EXCLUSION_RULE = ("runs flagged diverged, and runs whose value is not finite (NaN or +-inf), are left out of the "
                  "mean, std, interval and tests, and counted in `excluded`")


class StatsError(ValueError):
    """Bad input to engine.stats: a missing column, an unknown group, a bad direction or confidence."""


class Result:
    """Mixin of the frozen result dataclasses: `to_dict()` is their JSON form."""

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self), type(self).__name__)


def _plain(x: Any, path: str) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v, f"{path}.{k}") for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(x)]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        # Every field that can be undefined is None with a reason; a NaN here is a bug, and JSON has no NaN.
        raise ValueError(f"{path} is {x}: engine.stats must report None with a reason instead")
    return x


def fnum(x: Any) -> float | None:
    """A plain float, or None where the value is undefined (callers set the reason)."""
    x = float(x)
    return x if math.isfinite(x) else None


def check_confidence(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise StatsError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence!r}")
    return float(confidence)


@dataclass(frozen=True)
class Sample:
    """One group's runs after the exclusion rule: the values that count, in seed order when seeds are known."""
    label: str
    key: tuple[tuple[str, Any], ...]
    values: np.ndarray
    seeds: np.ndarray | None            # seeds of `values`, or None
    seed_set: frozenset | None          # seeds of every run of the group; None when unknown or repeated
    n_runs: int
    excluded: dict[str, int]


def make_sample(values: Sequence[float], seeds: Sequence[Any] | None = None, diverged: Sequence[bool] | None = None,
                label: str = "", key: tuple[tuple[str, Any], ...] = ()) -> Sample:
    v = np.asarray(values, dtype=float).ravel()
    d = np.zeros(v.shape, bool) if diverged is None else np.asarray(diverged, dtype=bool).ravel()
    s = None if seeds is None else np.asarray(seeds).ravel()
    for name, arr in (("diverged", d), ("seeds", s)):
        if arr is not None and arr.shape != v.shape:
            raise StatsError(f"{label or 'group'}: {name} has {arr.size} entries for {v.size} values")
    bad = ~np.isfinite(v)
    keep = ~d & ~bad
    excluded = {"diverged": int(d.sum()), "non_finite": int((bad & ~d).sum())}
    if s is None:
        return Sample(label, key, v[keep], None, None, v.size, excluded)
    unique = len(set(s.tolist())) == s.size
    order = np.argsort(s[keep], kind="stable")
    return Sample(label, key, v[keep][order], s[keep][order], frozenset(s.tolist()) if unique else None, v.size,
                  excluded)


def hashable(x: Any) -> Any:
    """Key values as the store gives them: list columns (hidden sizes) arrive as arrays; None and NaN are missing."""
    if isinstance(x, (list, tuple, np.ndarray)):
        return tuple(hashable(i) for i in x)
    if isinstance(x, np.generic):
        x = x.item()
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return x


def columns(by: str | Sequence[str]) -> list[str]:
    cols = [by] if isinstance(by, str) else list(by)
    if not cols:
        raise StatsError("by names no column: give the factor column(s) that define the groups")
    return cols


def check_columns(runs: pd.DataFrame, names: Sequence[str | None]) -> None:
    missing = [n for n in names if n is not None and n not in runs.columns]
    if missing:
        raise StatsError(f"column(s) {', '.join(map(repr, missing))} not in the runs table; it has "
                         f"{', '.join(map(str, runs.columns))}")


def run_values(runs: pd.DataFrame, value: str, diverged_column: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The metric as floats (missing -> NaN, so it counts as non-finite) and the diverged flag (missing -> False)."""
    try:
        v = pd.to_numeric(runs[value]).to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError) as e:
        raise StatsError(f"column {value!r} must hold numbers: {e}") from None
    if diverged_column is None:
        return v, np.zeros(len(runs), bool)
    return v, runs[diverged_column].astype("boolean").fillna(False).to_numpy(dtype=bool)


def group_label(key: tuple[tuple[str, Any], ...]) -> str:
    if len(key) == 1:
        return str(key[0][1])
    return ", ".join(f"{name}={val}" for name, val in key)


def _level_codes(col: pd.Series) -> tuple[np.ndarray, list[Any]]:
    """Integer codes of a key column in sorted level order, missing values (None, NaN) last."""
    codes, uniques = pd.factorize(col.map(hashable) if col.dtype == object else col, use_na_sentinel=True)
    levels = [hashable(u) for u in uniques]
    try:
        order = sorted(range(len(levels)), key=lambda i: levels[i])
    except TypeError:  # mixed types in one column: any stable order will do
        order = sorted(range(len(levels)), key=lambda i: str(levels[i]))
    rank = np.empty(len(levels) + 1, dtype=np.int64)
    rank[order] = np.arange(len(levels))
    rank[-1] = len(levels)  # code -1 (missing) indexes the last slot
    return rank[codes], [levels[i] for i in order] + [None]


def split_runs(runs: pd.DataFrame, by: str | Sequence[str], value: str, seed_column: str | None = "seed",
               diverged_column: str | None = None) -> list[Sample]:
    """One Sample per distinct combination of the `by` columns (missing values form their own group), sorted."""
    cols = columns(by)
    check_columns(runs, [*cols, value, diverged_column])
    if seed_column is not None and seed_column not in runs.columns:
        seed_column = None  # no seed column: groups are compared unpaired (Welch)
    v, d = run_values(runs, value, diverged_column)
    if not len(runs):
        return []
    coded = [_level_codes(runs[c]) for c in cols]
    # Group number = rank of the row's code tuple in lexicographic order, built one column at a time (each step's
    # ranks stay below the row count, so nothing overflows); groups then come in level order.
    group = np.zeros(len(runs), dtype=np.int64)
    for codes, levels in coded:
        _, group = np.unique(group * len(levels) + codes, return_inverse=True)
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    first = order[np.r_[0, bounds]]  # one row of each group
    seeds = None if seed_column is None else runs[seed_column].to_numpy()
    out = []
    for rows, key_codes in zip(np.split(order, bounds), zip(*(codes[first].tolist() for codes, _ in coded))):
        key = tuple((c, levels[i]) for c, (_, levels), i in zip(cols, coded, key_codes))
        out.append(make_sample(v[rows], None if seeds is None else seeds[rows], d[rows], group_label(key), key))
    return out
