"""The store's columns and the checks at its door: what a run row and an epoch row hold, which names are reserved,
and how Python values (configs, metrics, summaries) become typed Arrow columns. docs/store.md describes the same
schema for people; keep the two in step.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from engine.config import FIELD_KINDS

from .errors import StoreValidationError

STATUSES = ("running", "completed", "diverged", "failed", "cancelled", "timed_out", "interrupted")
FINISH_STATUSES = ("completed", "diverged", "failed", "cancelled", "timed_out")
CACHED_STATUSES = ("completed", "diverged")  # a result the engine reuses instead of training again
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_METRICS = 256

EPOCH_FIXED = ("run_id", "attempt", "epoch", "time_s", "nonfinite")
RUN_FIXED = ("run_id", "attempt", "status", "error", "study", "device", "torch_version", "hostname", "pid",
             "started_at", "ended_at", "heartbeat_at", "heartbeat_s", "duration_s", "n_epochs", "last_epoch",
             "has_checkpoint", "config_json", "meta_json", "summary_json", "summary_nonfinite")
# studies: membership; excluded, excluded_reason, tags, note: annotations.py
DERIVED = ("n_hidden", "width", "studies", "excluded", "excluded_reason", "tags", "note")
CONFIG_COLUMNS = tuple(FIELD_KINDS)
# Summary keys become run columns, metric names become epoch columns and final_<m> / stats_<m> run columns.
RESERVED_PREFIXES = ("final_", "stats_")
RESERVED_METRIC_NAMES = frozenset(EPOCH_FIXED) | frozenset(RUN_FIXED) | frozenset(DERIVED)
RESERVED_SUMMARY_NAMES = RESERVED_METRIC_NAMES | frozenset(CONFIG_COLUMNS)


def _pa():
    import pyarrow as pa  # imported on first use: opening a run and logging epochs never needs pyarrow
    return pa


def kind_type(kind: str):
    pa = _pa()
    return {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
            "ints": pa.list_(pa.int32())}[kind]


def stats_type():
    pa = _pa()
    return pa.struct([("n", pa.int32()), ("n_nonfinite", pa.int32()), ("final", pa.float64()),
                      ("final_epoch", pa.int32()), ("min", pa.float64()), ("min_epoch", pa.int32()),
                      ("max", pa.float64()), ("max_epoch", pa.int32())])


def run_fixed_schema():
    pa = _pa()
    ts = pa.timestamp("us", tz="UTC")
    types = {"run_id": pa.string(), "attempt": pa.int32(), "status": pa.string(), "error": pa.string(),
             "study": pa.string(), "device": pa.string(), "torch_version": pa.string(), "hostname": pa.string(),
             "pid": pa.int64(), "started_at": ts, "ended_at": ts, "heartbeat_at": ts, "heartbeat_s": pa.float64(),
             "duration_s": pa.float64(), "n_epochs": pa.int32(), "last_epoch": pa.int32(),
             "has_checkpoint": pa.bool_(), "config_json": pa.string(), "meta_json": pa.string(),
             "summary_json": pa.string(), "summary_nonfinite": pa.string()}
    fields_ = [pa.field(n, types[n]) for n in RUN_FIXED]
    fields_ += [pa.field(n, kind_type(k)) for n, k in FIELD_KINDS.items()]
    fields_ += [pa.field("n_hidden", pa.int32()), pa.field("width", pa.int32())]
    return pa.schema(fields_)


def epoch_fixed_schema():
    pa = _pa()
    return pa.schema([pa.field("run_id", pa.string()), pa.field("attempt", pa.int32()),
                      pa.field("epoch", pa.int32()), pa.field("time_s", pa.float64()),
                      pa.field("nonfinite", pa.string())])


# --- validation at the door -----------------------------------------------------------------------------------

def check_name(name: Any, what: str, reserved: frozenset[str]) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise StoreValidationError(
            f"{what} name {name!r} is not allowed: use a lower-case letter then lower-case letters, digits or _ "
            "(at most 64 characters), e.g. val_loss")
    if name in reserved or name.startswith(RESERVED_PREFIXES):
        raise StoreValidationError(
            f"{what} name {name!r} is reserved by the store (reserved: {', '.join(sorted(reserved))}, and names "
            f"starting with {' or '.join(RESERVED_PREFIXES)}); rename it, e.g. {name}_value")
    return name


def nonfinite_marker(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def split_value(name: str, value: Any, what: str) -> tuple[float | None, str | None]:
    """A metric value -> (finite float or None, non-finite marker or None). Bools and strings are refused."""
    if value is None:
        return None, "none"
    # numpy / torch scalars expose __float__ and are welcome; bools and strings are a mistake at the call site
    if isinstance(value, (bool, str, bytes)) or not hasattr(value, "__float__") or type(value).__name__ == "bool_":
        raise StoreValidationError(
            f"{what} {name}: value {value!r} ({type(value).__name__}) is not a number; log floats or ints "
            "(None/NaN/inf are recorded as non-finite)")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise StoreValidationError(f"{what} {name}: value {value!r} cannot be read as a number") from None
    value = float(value)
    if math.isfinite(value):
        return value, None
    return None, nonfinite_marker(value)


def check_config(config: dict) -> dict:
    """The config dict must be JSON-safe and its known fields must have their declared kinds."""
    if not isinstance(config, dict):
        raise StoreValidationError(f"config must be a dict (RunConfig.to_dict()), got {type(config).__name__}")
    for name, kind in FIELD_KINDS.items():
        v = config.get(name)
        if v is None:
            continue
        ok = {"str": isinstance(v, str),
              "int": isinstance(v, int) and not isinstance(v, bool),
              "float": isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
              "bool": isinstance(v, bool),
              "ints": isinstance(v, (list, tuple)) and all(isinstance(x, int) and not isinstance(x, bool)
                                                          for x in v)}[kind]
        if not ok:
            raise StoreValidationError(f"config field {name} must be of kind {kind}, got {v!r}")
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise StoreValidationError(f"config must be JSON-safe (use RunConfig.to_dict()): {e}") from None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def check_meta(meta: dict) -> dict:
    if not isinstance(meta, dict):
        raise StoreValidationError(f"meta must be a dict (device, torch_version, hostname, pid, study), "
                                   f"got {type(meta).__name__}")
    for key in ("device", "torch_version", "hostname", "study"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise StoreValidationError(f"meta {key} must be a string, got {meta[key]!r}")
    if meta.get("pid") is not None and (isinstance(meta["pid"], bool) or not isinstance(meta["pid"], int)):
        raise StoreValidationError(f"meta pid must be an integer, got {meta['pid']!r}")
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise StoreValidationError(f"meta must be JSON-safe: {e}") from None
    return dict(meta)


@dataclass(frozen=True)
class Summary:
    """A validated summary: JSON-safe values, markers of non-finite numbers, and the numeric columns."""

    values: dict[str, Any] = field(default_factory=dict)
    nonfinite: dict[str, str] = field(default_factory=dict)
    columns: dict[str, float | None] = field(default_factory=dict)


def check_summary(summary: dict | None) -> Summary:
    if summary is None:
        return Summary()
    if not isinstance(summary, dict):
        raise StoreValidationError(f"summary must be a dict, got {type(summary).__name__}")
    values: dict[str, Any] = {}
    nonfinite: dict[str, str] = {}
    columns: dict[str, float | None] = {}
    for key, v in summary.items():
        check_name(key, "summary", RESERVED_SUMMARY_NAMES)
        if isinstance(v, str) or v is None:
            values[key] = v
            continue
        if isinstance(v, bool):
            values[key] = v
            columns[key] = float(v)  # numbers share one column type (DOUBLE) so files always union cleanly
            continue
        num, marker = split_value(key, v, "summary")
        values[key] = int(v) if isinstance(v, int) else num  # ints stay ints in summary_json
        if marker:
            nonfinite[key] = marker
        columns[key] = num
    return Summary(values, nonfinite, columns)


# --- rows -----------------------------------------------------------------------------------------------------

@dataclass
class Attempt:
    """Everything known about one attempt, from its live log or from the writer's memory."""

    run_id: str
    attempt: int
    config: dict
    meta: dict
    started_at: float
    heartbeat_s: float
    epochs: list[tuple[int, float, dict[str, float | None], dict[str, str]]] = field(default_factory=list)
    status: str = "running"
    error: str | None = None
    summary: Summary = field(default_factory=Summary)
    ended_at: float | None = None
    heartbeat_at: float | None = None
    has_checkpoint: bool = False

    def metric_names(self) -> list[str]:
        names: dict[str, None] = {}
        for _, _, vals, nf in self.epochs:
            for k in vals:
                names[k] = None
            for k in nf:
                names[k] = None
        return list(names)


def metric_stats(epochs: list[tuple[int, float, dict, dict]], name: str) -> dict[str, Any]:
    n = n_nonfinite = 0
    final = final_epoch = mn = mn_e = mx = mx_e = None
    for epoch, _, vals, nf in epochs:
        if name in vals:
            v = vals[name]
        elif name in nf:
            v = None
        else:
            continue
        final, final_epoch = v, epoch
        if v is None:
            n_nonfinite += 1
            continue
        n += 1
        # strict comparisons keep the earliest epoch that reached the best value
        if mn is None or v < mn:
            mn, mn_e = v, epoch
        if mx is None or v > mx:
            mx, mx_e = v, epoch
    return {"n": n, "n_nonfinite": n_nonfinite, "final": final, "final_epoch": final_epoch,
            "min": mn, "min_epoch": mn_e, "max": mx, "max_epoch": mx_e}


def _ts(seconds: float | None) -> int | None:
    return None if seconds is None else int(round(seconds * 1_000_000))


def runs_table(attempts: Iterable[Attempt]):
    """One row per attempt, typed: fixed columns, config columns, final_<m>, stats_<m>, summary numbers."""
    pa = _pa()
    attempts = list(attempts)
    schema = run_fixed_schema()
    cols: dict[str, list] = {f.name: [] for f in schema}
    metric_names: dict[str, None] = {}
    summary_names: dict[str, None] = {}
    per_attempt_metrics = []
    for a in attempts:
        names = a.metric_names()
        per_attempt_metrics.append(set(names))
        metric_names.update(dict.fromkeys(names))
        summary_names.update(dict.fromkeys(a.summary.columns))
    extra: dict[str, list] = {f"final_{m}": [] for m in metric_names}
    extra.update({f"stats_{m}": [] for m in metric_names})
    extra.update({k: [] for k in summary_names})
    for a, own_metrics in zip(attempts, per_attempt_metrics):
        last_epoch = a.epochs[-1][0] if a.epochs else None
        ended = a.ended_at
        hidden = a.config.get("hidden")
        row = {
            "run_id": a.run_id, "attempt": a.attempt, "status": a.status, "error": a.error,
            "study": a.meta.get("study"), "device": a.meta.get("device"),
            "torch_version": a.meta.get("torch_version"), "hostname": a.meta.get("hostname"),
            "pid": a.meta.get("pid"), "started_at": _ts(a.started_at), "ended_at": _ts(ended),
            "heartbeat_at": _ts(a.heartbeat_at), "heartbeat_s": a.heartbeat_s,
            "duration_s": None if ended is None else max(0.0, ended - a.started_at),
            "n_epochs": len(a.epochs), "last_epoch": last_epoch, "has_checkpoint": a.has_checkpoint,
            "config_json": json.dumps(a.config, sort_keys=True),
            "meta_json": json.dumps(a.meta, sort_keys=True),
            "summary_json": json.dumps(a.summary.values, sort_keys=True, allow_nan=False),
            "summary_nonfinite": json.dumps(a.summary.nonfinite, sort_keys=True) if a.summary.nonfinite else None,
            "n_hidden": None if hidden is None else len(hidden),
            "width": max(hidden) if hidden else None,
        }
        for name in FIELD_KINDS:
            row[name] = a.config.get(name)
        for k, v in row.items():
            cols[k].append(v)
        for m in metric_names:
            st = metric_stats(a.epochs, m) if m in own_metrics else None
            extra[f"final_{m}"].append(None if st is None else st["final"])
            extra[f"stats_{m}"].append(st)
        for k in summary_names:
            extra[k].append(a.summary.columns.get(k))
    arrays = [pa.array(cols[f.name], type=f.type) for f in schema]
    fields_ = list(schema)
    for name, values in extra.items():
        typ = stats_type() if name.startswith("stats_") else pa.float64()
        arrays.append(pa.array(values, type=typ))
        fields_.append(pa.field(name, typ))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields_))


def epochs_table(attempts: Iterable[Attempt]):
    """One row per (attempt, epoch): fixed columns then one DOUBLE column per metric (NULL where not finite)."""
    pa = _pa()
    attempts = list(attempts)
    names: dict[str, None] = {}
    for a in attempts:
        names.update(dict.fromkeys(a.metric_names()))
    run_ids, att, ep, ts, nfs = [], [], [], [], []
    metric_cols: dict[str, list] = {m: [] for m in names}
    for a in attempts:
        for epoch, t, vals, nf in a.epochs:
            run_ids.append(a.run_id)
            att.append(a.attempt)
            ep.append(epoch)
            ts.append(t)
            nfs.append(json.dumps(nf, sort_keys=True) if nf else None)
            for m, col in metric_cols.items():
                col.append(vals.get(m))
    schema = epoch_fixed_schema()
    arrays = [pa.array(run_ids, pa.string()), pa.array(att, pa.int32()), pa.array(ep, pa.int32()),
              pa.array(ts, pa.float64()), pa.array(nfs, pa.string())]
    fields_ = list(schema)
    for m, col in metric_cols.items():
        arrays.append(pa.array(col, pa.float64()))
        fields_.append(pa.field(m, pa.float64()))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields_))
