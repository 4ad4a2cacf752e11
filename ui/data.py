"""Cached loaders: every frame the pages show comes from one of these, keyed by the store version.

Each takes ``version`` (``ui.state.store_version()``) and the store root (or a runs frame, keyed by a digest of its
run ids) as plain arguments: when anything is written to the store the version changes and the next call reads
afresh; until then reruns and other sessions reuse the frame. The engine's errors propagate; pages wrap calls in
``ui.state.guard``.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import streamlit as st

from engine import analysis, queries
from engine.config import FIELD_KINDS
from engine.study.ray_executor import trained_on as _trained_on

from ui.state import _store

# Config columns of the runs view, in the order RunConfig declares them, plus the derived ones.
CONFIG_COLUMNS = tuple(FIELD_KINDS) + ("n_hidden", "width")
LIST_COLUMNS = ("hidden", "channels", "kernel_sizes")


def _is_seq(v) -> bool:
    return isinstance(v, (list, tuple, np.ndarray))


def _tuple_or_none(v):
    return tuple(int(x) for x in v) if _is_seq(v) else None


def _tidy_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Python values that hash and compare: list columns become tuples, studies a tuple of names."""
    df = df.copy()
    for c in LIST_COLUMNS:
        if c in df:
            df[c] = df[c].map(_tuple_or_none).astype(object)
    for c in ("studies", "tags"):
        if c in df:
            df[c] = df[c].map(lambda v: tuple(str(x) for x in v) if _is_seq(v) else ())
    return df


@st.cache_data(show_spinner=False, max_entries=4)
def runs(version: str, root: str) -> pd.DataFrame:
    """Every run (newest attempt), newest first; config columns, status, final_<metric>, studies."""
    df = queries.list_runs(_store(root))
    problems = list(df.attrs.get("problems", []))
    df = _tidy_runs(df)
    df.attrs["problems"] = problems
    return df


def curves(version: str, root: str, run_ids, metrics: tuple[str, ...]) -> pd.DataFrame:
    """run_id, epoch, time_s and the metrics' per-epoch values of these runs."""
    ids = tuple(run_ids)
    # Hashing 10,000 ids for the cache key costs ~1 s: key by a digest of them instead.
    digest = hashlib.blake2b("\n".join(ids).encode(), digest_size=16).hexdigest()
    return _curves(version, root, digest, ids, tuple(metrics))


@st.cache_data(show_spinner=False, max_entries=16)
def _curves(version: str, root: str, digest: str, _run_ids: tuple[str, ...], metrics: tuple[str, ...]):
    df = queries.curves(_store(root), list(_run_ids), list(metrics))
    return df.drop(columns=[c for c in ("attempt",) if c in df])


@st.cache_data(show_spinner=False, max_entries=16)
def trained_on(version: str, root: str, run_ids: tuple[str, ...]) -> dict[str, str]:
    """run_id -> where it trained (its Ray node, or the host), from each run's meta."""
    store = _store(root)
    return {rid: _trained_on(rec.meta) for rid in run_ids if (rec := store.get(rid)) is not None}


@st.cache_data(show_spinner=False, max_entries=16)
def final_and_best(version: str, root: str, metric: str, mode: str) -> pd.DataFrame:
    """Per run that logged the metric: final and best value with their epochs, status and config."""
    return _tidy_runs(queries.final_and_best(_store(root), metric, mode))


def _ids_digest(runs: pd.DataFrame) -> str:
    return hashlib.blake2b("\n".join(runs["run_id"]).encode(), digest_size=16).hexdigest()


def pooled_factors(version: str, runs: pd.DataFrame, by: tuple[str, ...]) -> dict[str, list[str]]:
    """engine.analysis.pooled_factors of the finished runs among ``runs`` (a filtered runs frame)."""
    return _pooled_factors(version, _ids_digest(runs), runs, tuple(by))


@st.cache_data(show_spinner=False, max_entries=16)
def _pooled_factors(version: str, digest: str, _runs: pd.DataFrame, by: tuple[str, ...]):
    return analysis.pooled_factors(_runs[_runs["status"].isin(analysis.FINISHED)], list(by))


def analyze(version: str, runs: pd.DataFrame, metric: str, by: tuple[str, ...], hold: dict, average_over: tuple,
            interval: str, direction: str, baseline: dict | None = None) -> analysis.Analysis:
    """engine.analysis.analyze_runs over a filtered runs frame, cached by the store version and the run ids (so a
    click that changes only the decimals or the percent toggle costs no statistics)."""
    return _analyze(version, _ids_digest(runs), runs, metric, tuple(by), tuple(hold.items()), tuple(average_over),
                    interval, direction, None if baseline is None else tuple(baseline.items()))


@st.cache_data(show_spinner=False, max_entries=16)
def _analyze(version, digest, _runs, metric, by, hold, average_over, interval, direction, baseline):
    # include_excluded: the frame is already what the page shows (ui.page.load_runs applied the "show excluded
    # runs" toggle); analysing it must not drop them a second time
    return analysis.analyze_runs(_runs, metric, list(by), hold=dict(hold), average_over=list(average_over),
                                 interval=interval, direction=direction,
                                 baseline=None if baseline is None else dict(baseline), include_excluded=True)


def factors(version: str, runs: pd.DataFrame, metric: str, direction: str) -> dict:
    """The Factors page's numbers over a filtered runs frame, cached like ``analyze``: the varying factors (those
    another does not fix), each factor's analysis (``engine.analysis.factor_views``), the run points, and the factor
    importance (or the AnalysisError's text saying why it cannot be computed)."""
    return _factors(version, _ids_digest(runs), runs, metric, direction)


@st.cache_data(show_spinner=False, max_entries=16)
def _factors(version, digest, _runs, metric, direction):
    finished = _runs[_runs["status"].isin(analysis.FINISHED)]
    every = analysis.finished_factors(_runs, metric)
    shown = analysis.independent_factors(finished, every)
    views = analysis.factor_views(_runs, metric, direction, only=shown)
    try:
        importance, why = analysis.importance_of_runs(_runs, metric), None
    except analysis.AnalysisError as exc:
        importance, why = None, str(exc)
    return {"factors": shown, "followers": [f for f in every if f not in shown], "views": views,
            "points": analysis.run_points(_runs, metric, every), "log": {f: analysis.log_spaced(finished, f)
                                                                         for f in every},
            "importance": importance, "importance_error": why}


@st.cache_data(show_spinner=False, max_entries=16)
def _interaction(version, digest, _runs, metric, first, second, direction):
    return analysis.interaction(_runs, metric, first, second, direction)


def interaction(version: str, runs: pd.DataFrame, metric: str, first: str, second: str,
                direction: str) -> analysis.Analysis:
    return _interaction(version, _ids_digest(runs), runs, metric, first, second, direction)


@st.cache_data(show_spinner=False, max_entries=4)
def study_names(version: str, root: str) -> list[str]:
    from engine.report import study_names as names
    return names(_store(root))


# A resource, not data: the report holds Altair charts, which need not be copied (nothing mutates them).
@st.cache_resource(show_spinner=False, max_entries=8)
def report(version: str, root: str, studies: tuple[str, ...], metric: str | None):
    """engine.report.build_report of these studies, once per store version."""
    from engine.report import build_report
    return build_report(_store(root), list(studies), metric)


@st.cache_data(show_spinner=False, max_entries=4)
def status_counts(version: str, root: str) -> pd.DataFrame:
    return queries.status_counts(_store(root))


@st.cache_data(show_spinner=False, max_entries=4)
def study_progress(version: str, root: str) -> pd.DataFrame:
    return queries.study_progress(_store(root))


@st.cache_data(show_spinner=False, max_entries=32)
def task_view(root: str, run_id: str, attempt: int, split: str):
    """The Runs page's task view of one run, from its checkpoint. A finished attempt never changes, so the key is
    (run id, attempt) rather than the store version. Returns (TaskView | None, error message | None)."""
    from engine.inspect import InspectError, view_for_checkpoint
    checkpoint = _store(root).load_checkpoint(run_id)
    try:
        return view_for_checkpoint(checkpoint, split, what=f"run {run_id}"), None
    except InspectError as exc:
        return None, str(exc)


def problems(df: pd.DataFrame) -> list[str]:
    return list(df.attrs.get("problems", []))


def metrics_of(df: pd.DataFrame) -> list[str]:
    """Metric names that at least one of these runs logged (from their final_<metric> columns)."""
    out = []
    for c in df.columns:
        if c.startswith("final_") and df[c].notna().any():
            out.append(c[len("final_"):])
    return sorted(out)


def config_of(row: pd.Series) -> dict:
    try:
        return json.loads(row["config_json"])
    except (KeyError, TypeError, ValueError):
        return {}
