"""Every query of Ablation Lab: parameterised DuckDB SQL over the run store's views.

Each call goes through the store's one read door, ``store.read(fn)``: a fresh snapshot, a fresh cursor, the views
(runs, attempts, epochs, all_epochs, study_members: see engine/store/views.py and docs/store.md) defined over
exactly the snapshot's files, and retries when compaction moves files underneath. Identifiers are never taken from
the caller as text: a column or metric name is checked against the views' actual columns first, and a bad one gives
a QueryError that lists the allowed names.

Every returned DataFrame carries ``df.attrs["problems"]``: the damaged or leftover files the query skipped.
"""
from __future__ import annotations

import os
import re
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

from engine.config import FIELD_KINDS
from engine.store import EPOCH_FIXED, RUN_ID_RE, STATUSES, QueryError, Views, tmp_path_for

__all__ = ["QueryError", "list_runs", "curves", "final_and_best", "pivot", "over_seeds", "distinct_values",
           "study_progress", "status_counts", "runs_by_id", "study_runs", "epoch_times", "sql",
           "export", "EXPORTABLE",
           "EXPORT_FORMATS"]

EXPORTABLE = ("runs", "attempts", "epochs", "all_epochs", "final_and_best", "status_counts", "study_progress")
EXPORT_FORMATS = ("csv", "parquet", "json")


def _ident(name: str) -> str:
    """Quote an identifier that was already checked against the views' columns."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise QueryError(f"{name!r} is not a valid column name")
    return '"' + name + '"'


def _metrics_of_runs(cols: dict[str, Any]) -> list[str]:
    return sorted(c[6:] for c in cols if c.startswith("stats_"))


def _metrics_of_epochs(cols: dict[str, Any]) -> list[str]:
    return sorted(c for c in cols if c not in EPOCH_FIXED)


def _check_metric(metric: str, available: list[str]) -> str:
    if not isinstance(metric, str) or metric not in available:
        raise QueryError(f"unknown metric {metric!r}; metrics in this store: "
                         f"{', '.join(available) if available else '(none logged yet)'}")
    return metric


def _check_column(name: str, cols: dict[str, Any], what: str = "column") -> str:
    allowed = sorted(c for c in cols if not c.startswith("stats_"))
    if not isinstance(name, str) or name not in allowed:
        raise QueryError(f"unknown {what} {name!r}; allowed: {', '.join(allowed)}")
    return name


def _check_mode(mode: str) -> str:
    if mode not in ("min", "max"):
        raise QueryError(f"mode must be 'min' (lower is better, e.g. a loss) or 'max' (e.g. an accuracy), got {mode!r}")
    return mode


def _is_list(arrow_type) -> bool:
    import pyarrow as pa
    return pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)


def _where(filters: dict[str, Any] | None, cols: dict[str, Any]) -> tuple[str, list[Any]]:
    """filters: {column: value | [values] (any of) | (lo, hi) (inclusive, None = open)} -> SQL and parameters."""
    if not filters:
        return "TRUE", []
    if not isinstance(filters, dict):
        raise QueryError(f"filters must be a dict of column -> value, [values] or (lo, hi); got {filters!r}")
    parts: list[str] = []
    params: list[Any] = []
    for name, value in filters.items():
        col = _ident(_check_column(name, cols, "filter column"))
        list_col = _is_list(cols[name])
        if isinstance(value, tuple):
            if len(value) != 2:
                raise QueryError(f"filter {name}: a range is a (lo, hi) pair, got {value!r}")
            lo, hi = value
            if lo is not None:
                parts.append(f"{col} >= ?")
                params.append(lo)
            if hi is not None:
                parts.append(f"{col} <= ?")
                params.append(hi)
        elif list_col and isinstance(value, list) and all(isinstance(v, int) for v in value):
            parts.append(f"{col} = ?::INTEGER[]")  # hidden=[100, 150]: that exact list
            params.append(value)
        elif isinstance(value, list):
            if not value:
                parts.append("FALSE")
                continue
            alts = []
            for v in value:
                if v is None:
                    alts.append(f"{col} IS NULL")
                else:
                    alts.append(f"{col} = ?" + ("::INTEGER[]" if list_col else ""))
                    params.append(list(v) if list_col else v)
            parts.append("(" + " OR ".join(alts) + ")")
        elif value is None:
            parts.append(f"{col} IS NULL")
        else:
            parts.append(f"{col} = ?")
            params.append(value)
    return " AND ".join(parts) or "TRUE", params


# --- queries --------------------------------------------------------------------------------------------------

def list_runs(store, filters: dict[str, Any] | None = None, limit: int | None = None,
              columns: list[str] | None = None) -> "pd.DataFrame":
    """One row per run (newest attempt), newest first. Default columns: all of the runs view except the stats_<m>
    structs (final_and_best reads those); ``columns`` picks a subset (any runs column), e.g. for a fast id list."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise QueryError(f"limit must be a non-negative integer, got {limit!r}")

    def q(ctx: Views):
        cols = ctx.columns("runs")
        where, params = _where(filters, cols)
        if columns is None:
            chosen = [c for c in cols if not c.startswith("stats_")]
        else:
            chosen = [_check_column(c, cols) for c in columns]
        select = ", ".join(_ident(c) for c in chosen)
        lim = f" LIMIT {int(limit)}" if limit is not None else ""
        return ctx.df(f"{ctx.with_('runs')} SELECT {select} FROM runs WHERE {where} "
                      f"ORDER BY started_at DESC, run_id{lim}", params)

    return store.read(q)


def curves(store, run_ids: list[str], metrics: list[str] | None = None) -> "pd.DataFrame":
    """Per-epoch values of the given runs (newest attempts): run_id, attempt, epoch, time_s, one column per metric."""
    run_ids = list(run_ids)
    for r in run_ids:
        if not isinstance(r, str) or not RUN_ID_RE.match(r):
            raise QueryError(f"bad run id {r!r}")

    def q(ctx: Views):
        available = _metrics_of_epochs(ctx.columns("epochs"))
        chosen = available if metrics is None else [_check_metric(m, available) for m in metrics]
        select = ", ".join(["run_id", "attempt", "epoch", "time_s"] + [_ident(m) for m in chosen])
        if not run_ids:
            return ctx.df(f"{ctx.with_('epochs')} SELECT {select} FROM epochs WHERE FALSE")
        return ctx.df(f"{ctx.with_('epochs')} SELECT {select} FROM epochs "
                      "WHERE run_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY run_id, epoch", [run_ids])

    return store.read(q)


def _value_expr(metric: str, mode: str, stat: str) -> str:
    if stat == "best":
        return f'{_ident("stats_" + metric)}."{mode}"'
    if stat == "final":
        return _ident("final_" + metric)
    raise QueryError(f"stat must be 'best' (best epoch's value) or 'final' (last epoch's value), got {stat!r}")


def _analysed(where: str, include_excluded: bool) -> str:
    """Statistics leave out the runs a person excluded from analysis (engine runs exclude) unless asked."""
    return where if include_excluded else f"({where}) AND NOT excluded"


def final_and_best(store, metric: str, mode: str = "min", filters: dict[str, Any] | None = None,
                   include_excluded: bool = False) -> "pd.DataFrame":
    """Per run that logged the metric: final value and its epoch, best value (min or max) and the epoch that first
    reached it, how many epochs were non-finite, plus the run's config columns. Runs excluded from analysis are
    left out unless ``include_excluded`` (then the excluded and excluded_reason columns say which)."""
    _check_mode(mode)

    def q(ctx: Views):
        cols = ctx.columns("runs")
        m = _check_metric(metric, _metrics_of_runs(cols))
        where, params = _where(filters, cols)
        where = _analysed(where, include_excluded)
        st = _ident("stats_" + m)
        config = ", ".join(_ident(c) for c in list(FIELD_KINDS) + ["n_hidden", "width"] if c in cols)
        return ctx.df(f"""{ctx.with_('runs')}
            SELECT run_id, attempt, status, n_epochs,
                   {st}.final AS final, {st}.final_epoch AS final_epoch,
                   {st}."{mode}" AS best, {st}."{mode}_epoch" AS best_epoch,
                   {st}.n_nonfinite AS n_nonfinite, excluded, excluded_reason, {config}
            FROM runs WHERE {st} IS NOT NULL AND {where}
            ORDER BY run_id""", params)

    return store.read(q)


def pivot(store, metric: str, row: str, col: str | None = None, mode: str = "max", stat: str = "best",
          filters: dict[str, Any] | None = None, include_excluded: bool = False) -> "pd.DataFrame":
    """Mean, sample std and count of a metric's best (or final) value per (row, col) group, over seeds and runs
    (runs excluded from analysis left out unless ``include_excluded``)."""
    _check_mode(mode)

    def q(ctx: Views):
        cols = ctx.columns("runs")
        m = _check_metric(metric, _metrics_of_runs(cols))
        keys = [_ident(_check_column(row, cols, "row"))]
        if col is not None:
            if col == row:
                raise QueryError(f"row and col are both {row!r}; pick two different columns (or col=None)")
            keys.append(_ident(_check_column(col, cols, "col")))
        value = _value_expr(m, mode, stat)
        where, params = _where(filters, cols)
        where = _analysed(where, include_excluded)
        k = ", ".join(keys)
        return ctx.df(f"""{ctx.with_('runs')}
            SELECT {k}, avg(v) AS mean, stddev_samp(v) AS std, count(v) AS n
            FROM (SELECT {k}, {value} AS v FROM runs WHERE {_ident('stats_' + m)} IS NOT NULL AND {where})
            GROUP BY {k} ORDER BY {k}""", params)

    return store.read(q)


def over_seeds(store, metric: str, mode: str = "max", stat: str = "best",
               filters: dict[str, Any] | None = None, include_excluded: bool = False) -> "pd.DataFrame":
    """Group runs that differ only in `seed`: per group the config columns, mean/std/min/max/n and the run ids
    (runs excluded from analysis left out unless ``include_excluded``)."""
    _check_mode(mode)

    def q(ctx: Views):
        cols = ctx.columns("runs")
        m = _check_metric(metric, _metrics_of_runs(cols))
        value = _value_expr(m, mode, stat)
        where, params = _where(filters, cols)
        where = _analysed(where, include_excluded)
        keys = ", ".join(_ident(c) for c in FIELD_KINDS if c in cols and c != "seed")
        return ctx.df(f"""{ctx.with_('runs')}
            SELECT {keys}, avg(v) AS mean, stddev_samp(v) AS std, min(v) AS min, max(v) AS max, count(v) AS n,
                   list(run_id ORDER BY seed) AS run_ids, list(seed ORDER BY seed) AS seeds
            FROM (SELECT *, {value} AS v FROM runs WHERE {_ident('stats_' + m)} IS NOT NULL AND {where})
            GROUP BY {keys} ORDER BY {keys}""", params)

    return store.read(q)


def distinct_values(store, column: str) -> "pd.DataFrame":
    """The values a runs column takes, with how many runs have each (for the dashboard's filter widgets)."""
    def q(ctx: Views):
        c = _ident(_check_column(column, ctx.columns("runs")))
        return ctx.df(f"{ctx.with_('runs')} SELECT {c}, count(*) AS n FROM runs GROUP BY {c} ORDER BY {c} NULLS LAST")

    return store.read(q)


def status_counts(store) -> "pd.DataFrame":
    """Runs per status (newest attempts), every status listed, zeros included."""
    def q(ctx: Views):
        return ctx.df(f"""{ctx.with_('runs')}
            SELECT s.status, count(r.run_id) AS n
            FROM (SELECT unnest(?::VARCHAR[]) AS status, generate_subscripts(?::VARCHAR[], 1) AS k) s
            LEFT JOIN runs r ON r.status = s.status
            GROUP BY s.status, s.k ORDER BY s.k""", [list(STATUSES), list(STATUSES)])

    return store.read(q)


def study_progress(store) -> "pd.DataFrame":
    """Per study: member runs and how many are in each status; `not_started` members have no attempt yet."""
    def q(ctx: Views):
        counts = ", ".join(f"count(*) FILTER (WHERE r.status = '{s}') AS {s}" for s in STATUSES)
        return ctx.df(f"""{ctx.with_('runs', 'study_members')}
            SELECT m.study, count(*) AS n_runs, {counts},
                   count(*) FILTER (WHERE r.status IS NULL) AS not_started,
                   count(*) FILTER (WHERE r.status IN ('completed', 'diverged')) / count(*) AS done_fraction
            FROM study_members m LEFT JOIN runs r ON r.run_id = m.run_id
            GROUP BY m.study ORDER BY m.study""")

    return store.read(q)


# --- what the study modules read ------------------------------------------------------------------------------

def runs_by_id(store, run_ids: list[str]) -> "pd.DataFrame":
    """The runs-view rows of these runs (those the store has): a study's plan, results and report."""
    def q(ctx: Views):
        return ctx.df(f"{ctx.with_('runs')} SELECT * FROM runs WHERE run_id IN (SELECT unnest(?::VARCHAR[]))",
                      [list(run_ids)])

    return store.read(q)


def study_runs(store, study: str) -> "pd.DataFrame":
    """One row per member run of a study that has an attempt (newest attempt): the runs view without the stats_<m>
    structs, as ``list_runs`` gives it; what engine/analysis.py analyses. An unknown study is a QueryError that
    lists the known ones."""
    def q(ctx: Views):
        known = list(ctx.df(f"{ctx.with_('study_members')} SELECT DISTINCT study FROM study_members "
                            "ORDER BY study")["study"])
        if study not in known:
            raise QueryError(f"unknown study {study!r}; studies in this store: "
                             f"{', '.join(known) if known else '(none yet)'}")
        cols = ctx.columns("runs")
        select = ", ".join("r." + _ident(c) for c in cols if not c.startswith("stats_"))
        return ctx.df(f"""{ctx.with_('runs', 'study_members')}
            SELECT {select} FROM runs r
            WHERE r.run_id IN (SELECT run_id FROM study_members WHERE study = ?)
            ORDER BY r.run_id""", [study])

    return store.read(q)


def epoch_times(store, tasks: list[str]) -> "pd.DataFrame":
    """config_json, meta_json and the last epoch's epoch_time_s of the finished (completed or diverged) runs of
    these tasks that logged it: what a study's time estimate learns from."""
    def q(ctx: Views):
        if "final_epoch_time_s" not in ctx.columns("runs"):
            return ctx.df("SELECT NULL::VARCHAR AS config_json, NULL::VARCHAR AS meta_json, "
                          "NULL::DOUBLE AS epoch_time_s WHERE false")
        return ctx.df(f"""{ctx.with_('runs')}
            SELECT config_json, meta_json, final_epoch_time_s AS epoch_time_s FROM runs
            WHERE status IN ('completed', 'diverged') AND final_epoch_time_s IS NOT NULL
              AND task IN (SELECT unnest(?::VARCHAR[]))""", [list(tasks)])

    return store.read(q)


# --- SQL from the user ----------------------------------------------------------------------------------------

def _check_select(cur, query: str) -> None:
    import duckdb
    if not isinstance(query, str):
        raise QueryError(f"SQL must be a string, got {type(query).__name__}")
    try:
        statements = cur.extract_statements(query)
    except duckdb.Error as e:
        raise QueryError(f"SQL does not parse: {e}") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise QueryError("only a single read-only SELECT (or WITH ... SELECT) is allowed, over the views "
                         "runs, attempts, epochs, all_epochs, study_members")


def sql(store, query: str, params: list[Any] | None = None) -> "pd.DataFrame":
    """A read-only SELECT over the views (runs, attempts, epochs, all_epochs, study_members)."""
    def q(ctx: Views):
        _check_select(ctx.cur, query)
        ctx.create_views(("runs", "epochs", "study_members"))
        return ctx.df(query, params)

    return store.read(q)


def export(store, what: str, fmt: str, out: str | Path, metric: str | None = None, mode: str = "min",
           filters: dict[str, Any] | None = None) -> Path:
    """Write a named table (EXPORTABLE) or a read-only SELECT as CSV, Parquet or JSON (an array of records).

    The file appears complete or not at all (temp file + rename)."""
    if fmt not in EXPORT_FORMATS:
        raise QueryError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    out = Path(out)
    named = True
    if what == "final_and_best":
        if metric is None:
            raise QueryError("export final_and_best needs --metric (and --mode min|max)")
        # an export lists excluded runs too, flagged with their reasons (excluded, excluded_reason columns)
        df = final_and_best(store, metric, mode, filters, include_excluded=True)
    elif what == "status_counts":
        df = status_counts(store)
    elif what == "study_progress":
        df = study_progress(store)
    elif what == "runs":
        df = list_runs(store, filters)
    elif what in ("attempts", "epochs", "all_epochs"):
        if filters:
            raise QueryError(f"filters apply to runs and final_and_best; for {what} write a SELECT instead")
        df = sql(store, f"SELECT * FROM {what} ORDER BY run_id, attempt" + (", epoch" if "epochs" in what else ""))
    elif isinstance(what, str) and re.match(r"^\s*(select|with)\b", what, re.I):
        df = sql(store, what)
        named = False
    else:
        raise QueryError(f"nothing to export called {what!r}: use one of {', '.join(EXPORTABLE)} or a SELECT "
                         "statement in quotes")
    if named:  # the stats_<metric> structs are query plumbing; final_and_best exports them readably
        df = df.drop(columns=[c for c in df.columns if str(c).startswith("stats_")])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(out)
    cur = store.duckdb_cursor()
    try:
        cur.register("_export", df)
        options = {"csv": "FORMAT csv, HEADER true", "parquet": "FORMAT parquet",
                   "json": "FORMAT json, ARRAY true"}[fmt]
        target = str(tmp).replace("'", "''")  # our own temp name, quoted as a SQL string
        cur.execute(f"COPY (SELECT * FROM _export) TO '{target}' ({options})")
        os.replace(tmp, out)
    except Exception as e:
        with suppress(OSError):
            tmp.unlink()
        raise QueryError(f"could not write {out}: {e}") from None
    finally:
        cur.close()
    return out
