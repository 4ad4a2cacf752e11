"""Every SQL statement of Ablation Lab: DuckDB over the run store's healthy Parquet files and its live attempts.

Each call takes a fresh snapshot of the store (see engine/store/reader.py), opens a fresh cursor, defines the views
it needs over exactly the snapshot's files, and runs parameterised SQL (``?``). Identifiers are never taken from
the caller as text: a column or metric name is checked against the views' actual columns first, and a bad one gives
a QueryError that lists the allowed names.

Views (see docs/store.md for every column):
  attempts     one row per attempt of every run
  runs         one row per run: its newest attempt, config as typed columns, final_<metric>, stats_<metric>, studies
  epochs       one row per epoch of each run's newest attempt; one DOUBLE column per metric (union over tasks:
               a metric a task never logs reads NULL)
  all_epochs   epochs of every attempt
  study_members  (study, run_id) pairs

Every returned DataFrame carries ``df.attrs["problems"]``: the damaged or leftover files the query skipped.
"""
from __future__ import annotations

import os
import re
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    import pandas as pd

from engine.config import FIELD_KINDS
from engine.store.errors import QueryError
from engine.store.layout import RUN_ID_RE, tmp_path_for
from engine.store.reader import DamagedFileError, Snapshot, mark_damaged, files_table
from engine.store.schema import EPOCH_FIXED, STATUSES

__all__ = ["QueryError", "define_views", "list_runs", "curves", "final_and_best", "pivot", "over_seeds",
           "distinct_values", "study_progress", "status_counts", "run_row", "sql", "export", "EXPORTABLE",
           "EXPORT_FORMATS"]

EXPORTABLE = ("runs", "attempts", "epochs", "all_epochs", "final_and_best", "status_counts", "study_progress")
EXPORT_FORMATS = ("csv", "parquet", "json")
_VIEW_DEPS = {"runs": {"attempts"}, "attempts": set(), "epochs": set(), "all_epochs": set(),
              "study_members": {"attempts"}}
_MAX_RETRIES = 5
# Run rows of compacted parts are held in memory up to this many (about 1 KB each); beyond, DuckDB reads them.
RUN_ROWS_IN_MEMORY = 200_000


# --- plumbing -----------------------------------------------------------------------------------------------------

def _lit(s: str) -> str:
    """A SQL string literal of a path the snapshot listed (our own file names, never caller text)."""
    return "'" + s.replace("'", "''") + "'"


def _ident(name: str) -> str:
    """Quote an identifier that was already checked against the views' columns."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise QueryError(f"{name!r} is not a valid column name")
    return '"' + name + '"'


def _read(files: Iterable[str]) -> str:
    return "read_parquet([" + ", ".join(_lit(f) for f in files) + "], union_by_name = true)"


class _Ctx:
    """One query's cursor and snapshot: the view definitions (as CTEs) and the columns each view has."""

    def __init__(self, store, cur, snap: Snapshot) -> None:
        self.store, self.cur, self.snap = store, cur, snap
        self._registered: set[str] = set()

    def _register(self, name: str, table) -> str:
        if name not in self._registered:
            self.cur.register(name, table)
            self._registered.add(name)
        return name

    def _in_memory(self, kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(files DuckDB reads from disk, files held in memory) of one kind."""
        snap = self.snap
        if kind == "epochs":
            return snap.part_epoch_files, snap.small_epoch_files
        from engine.store.reader import check_parquet
        rows = sum(check_parquet(self.store.cache, Path(f)).num_rows for f in snap.part_run_files)
        if rows > RUN_ROWS_IN_MEMORY:
            return snap.part_run_files, snap.small_run_files
        return (), snap.part_run_files + snap.small_run_files

    def _union(self, kind: str, live, empty) -> str:
        # Only non-empty sources: a union with an empty in-memory table still costs a bind and a scan.
        disk, memory = self._in_memory(kind)
        sources = []
        if live is not None:
            sources.append(f"SELECT * FROM {live()}")
        if disk:
            sources.append(f"SELECT * FROM {_read(disk)}")
        table = files_table(self.store.cache, memory)
        if table is not None:
            sources.append(f"SELECT * FROM {self._register('_mem_' + kind, table)}")
        if not sources:
            sources.append(f"SELECT * FROM {empty()}")
        return " UNION ALL BY NAME ".join(sources)

    def _superseded(self) -> str:
        import pyarrow as pa
        keys = self.snap.superseded
        return self._register("_superseded", pa.table({"run_id": [k[0] for k in keys],
                                                       "attempt": pa.array([k[1] for k in keys], pa.int32())}))

    def definitions(self, views: Iterable[str]) -> list[tuple[str, str]]:
        """(name, SELECT) in dependency order for the requested views."""
        snap = self.snap
        need = set(views)
        for v in list(need):
            need |= _VIEW_DEPS.get(v, set())
        out: list[tuple[str, str]] = []
        if need & {"attempts", "runs", "study_members"}:
            live = (lambda: self._register("_live_runs", snap.live_runs_table)) if snap.live else None
            out.append(("_attempts_raw", self._union(
                "runs", live, lambda: self._register("_live_runs", snap.live_runs_table))))
            members = "SELECT study, run_id FROM _attempts_raw WHERE study IS NOT NULL"
            if snap.study_files:
                members += f" UNION SELECT study, run_id FROM {_read(snap.study_files)}"
            out.append(("study_members", f"SELECT DISTINCT study, run_id FROM ({members})"))
            if snap.study_files:
                out.append(("attempts", """
                    SELECT a.*, coalesce(s.studies, []::VARCHAR[]) AS studies
                    FROM _attempts_raw a
                    LEFT JOIN (SELECT run_id, list(study ORDER BY study) AS studies
                               FROM study_members GROUP BY run_id) s ON a.run_id = s.run_id"""))
            else:  # no membership files: a run's studies are just the study it was started for
                out.append(("attempts", "SELECT *, CASE WHEN study IS NULL THEN []::VARCHAR[] ELSE [study] END "
                                        "AS studies FROM _attempts_raw"))
            out.append(("runs", f"SELECT * FROM attempts ANTI JOIN {self._superseded()} USING (run_id, attempt)"
                        if snap.superseded else "SELECT * FROM attempts"))
        if need & {"epochs", "all_epochs"}:
            live = (lambda: self._register("_live_epochs", snap.live_epochs_table)) if snap.live else None
            out.append(("all_epochs", self._union(
                "epochs", live, lambda: self._register("_live_epochs", snap.live_epochs_table))))
            out.append(("epochs", f"SELECT * FROM all_epochs ANTI JOIN {self._superseded()} USING (run_id, attempt)"
                        if snap.superseded else "SELECT * FROM all_epochs"))
        return out

    def with_(self, *views: str) -> str:
        """A WITH clause defining the views (cheaper than CREATE VIEW, which binds every file twice)."""
        return "WITH " + ", ".join(f"{name} AS ({body})" for name, body in self.definitions(views)) + " "

    def create_views(self, views: Iterable[str]) -> None:
        for name, body in self.definitions(views):
            self.cur.execute(f"CREATE TEMP VIEW {name} AS {body}")

    def columns(self, view: str) -> dict[str, Any]:
        """Column name -> Arrow type of a view, from the files' footers (already read and cached by the snapshot)."""
        from engine.store.reader import check_parquet
        from engine.store.schema import epoch_fixed_schema, run_fixed_schema

        snap = self.snap
        runs = view in ("runs", "attempts")
        disk, memory = self._in_memory("runs" if runs else "epochs")
        key = ("columns", runs, disk)
        memo = self.store.cache.memo
        cols = memo.get(key)
        if cols is None:
            cols = {f.name: f.type for f in (run_fixed_schema() if runs else epoch_fixed_schema())}
            for f in disk:
                c = check_parquet(self.store.cache, Path(f))
                if c.ok:
                    for fld in c.schema:
                        cols.setdefault(fld.name, fld.type)
            if sum(1 for k in memo if k[0] == "columns") > 16:
                for k in [k for k in memo if k[0] == "columns"]:
                    memo.pop(k, None)
            memo[key] = cols
        cols = dict(cols)
        table = files_table(self.store.cache, memory)
        if table is not None:
            for fld in table.schema:
                cols.setdefault(fld.name, fld.type)
        if snap.live:
            table = snap.live_runs_table if runs else snap.live_epochs_table
            for fld in table.schema:
                cols.setdefault(fld.name, fld.type)
        if runs:
            import pyarrow as pa
            cols["studies"] = pa.list_(pa.string())
        return cols

    def df(self, query: str, params: list[Any] | None = None):
        # via Arrow: ~25% faster than DuckDB's .df() for wide results; same dtypes
        return self.cur.sql(query, params=params or None).to_arrow_table().to_pandas()


def define_views(store, con, snap: Snapshot,
                 views: Iterable[str] = ("runs", "attempts", "epochs", "all_epochs", "study_members")) -> None:
    """Create the named views (runs, attempts, epochs, all_epochs, study_members) as TEMP views on a connection the
    caller owns, over exactly the snapshot's files (for the SQL console, which locks its connection down to
    ``snap.run_files + snap.epoch_files + snap.study_files`` afterwards)."""
    _Ctx(store, con, snap).create_views(views)


def _snapshot_files(snap: Snapshot) -> list[str]:
    return list(snap.run_files) + list(snap.epoch_files) + list(snap.study_files)


def _run(store, fn: Callable[[_Ctx], Any]):
    """Run fn(ctx) on a fresh snapshot and cursor; retry when compaction moved files or a file proves damaged."""
    import duckdb

    last: Exception | None = None
    for _ in range(_MAX_RETRIES):
        snap = store.snapshot()
        cur = store.duckdb_cursor()
        try:
            out = fn(_Ctx(store, cur, snap))
            if hasattr(out, "attrs"):  # a pandas DataFrame (pandas is imported by DuckDB's .df())
                out.attrs["problems"] = [str(p) for p in snap.problems]
            return out
        except QueryError:
            raise
        except (DamagedFileError, FileNotFoundError) as e:
            last = e  # a small file went away (compacted) or proved damaged (now marked): take a new snapshot
            continue
        except duckdb.Error as e:
            msg = str(e)
            files = _snapshot_files(snap)
            if any(not os.path.exists(f) for f in files):
                last = e  # compaction replaced files after our snapshot: take a new one
                continue
            named = [f for f in files if f in msg]
            if named:
                # passed the cheap footer check but its data cannot be read: report it and leave it out
                for f in named:
                    mark_damaged(store.cache, f, f"unreadable data ({msg.splitlines()[0]})")
                last = e
                continue
            raise QueryError(f"query failed: {msg}") from None
        finally:
            cur.close()
    raise QueryError(f"the store kept changing or failing while being read ({last}); "
                     "try again, and run `python -m engine check` if it persists")


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

    def q(ctx: _Ctx):
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

    return _run(store, q)


def curves(store, run_ids: list[str], metrics: list[str] | None = None) -> "pd.DataFrame":
    """Per-epoch values of the given runs (newest attempts): run_id, attempt, epoch, time_s, one column per metric."""
    run_ids = list(run_ids)
    for r in run_ids:
        if not isinstance(r, str) or not RUN_ID_RE.match(r):
            raise QueryError(f"bad run id {r!r}")

    def q(ctx: _Ctx):
        available = _metrics_of_epochs(ctx.columns("epochs"))
        chosen = available if metrics is None else [_check_metric(m, available) for m in metrics]
        select = ", ".join(["run_id", "attempt", "epoch", "time_s"] + [_ident(m) for m in chosen])
        if not run_ids:
            return ctx.df(f"{ctx.with_('epochs')} SELECT {select} FROM epochs WHERE FALSE")
        return ctx.df(f"{ctx.with_('epochs')} SELECT {select} FROM epochs "
                      "WHERE run_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY run_id, epoch", [run_ids])

    return _run(store, q)


def _value_expr(metric: str, mode: str, stat: str) -> str:
    if stat == "best":
        return f'{_ident("stats_" + metric)}."{mode}"'
    if stat == "final":
        return _ident("final_" + metric)
    raise QueryError(f"stat must be 'best' (best epoch's value) or 'final' (last epoch's value), got {stat!r}")


def final_and_best(store, metric: str, mode: str = "min", filters: dict[str, Any] | None = None) -> "pd.DataFrame":
    """Per run that logged the metric: final value and its epoch, best value (min or max) and the epoch that first
    reached it, how many epochs were non-finite, plus the run's config columns."""
    _check_mode(mode)

    def q(ctx: _Ctx):
        cols = ctx.columns("runs")
        m = _check_metric(metric, _metrics_of_runs(cols))
        where, params = _where(filters, cols)
        st = _ident("stats_" + m)
        config = ", ".join(_ident(c) for c in list(FIELD_KINDS) + ["n_hidden", "width"] if c in cols)
        return ctx.df(f"""{ctx.with_('runs')}
            SELECT run_id, attempt, status, n_epochs,
                   {st}.final AS final, {st}.final_epoch AS final_epoch,
                   {st}."{mode}" AS best, {st}."{mode}_epoch" AS best_epoch,
                   {st}.n_nonfinite AS n_nonfinite, {config}
            FROM runs WHERE {st} IS NOT NULL AND {where}
            ORDER BY run_id""", params)

    return _run(store, q)


def pivot(store, metric: str, row: str, col: str | None = None, mode: str = "max", stat: str = "best",
          filters: dict[str, Any] | None = None) -> "pd.DataFrame":
    """Mean, sample std and count of a metric's best (or final) value per (row, col) group, over seeds and runs."""
    _check_mode(mode)

    def q(ctx: _Ctx):
        cols = ctx.columns("runs")
        m = _check_metric(metric, _metrics_of_runs(cols))
        keys = [_ident(_check_column(row, cols, "row"))]
        if col is not None:
            if col == row:
                raise QueryError(f"row and col are both {row!r}; pick two different columns (or col=None)")
            keys.append(_ident(_check_column(col, cols, "col")))
        value = _value_expr(m, mode, stat)
        where, params = _where(filters, cols)
        k = ", ".join(keys)
        return ctx.df(f"""{ctx.with_('runs')}
            SELECT {k}, avg(v) AS mean, stddev_samp(v) AS std, count(v) AS n
            FROM (SELECT {k}, {value} AS v FROM runs WHERE {_ident('stats_' + m)} IS NOT NULL AND {where})
            GROUP BY {k} ORDER BY {k}""", params)

    return _run(store, q)


def over_seeds(store, metric: str, mode: str = "max", stat: str = "best",
               filters: dict[str, Any] | None = None) -> "pd.DataFrame":
    """Group runs that differ only in `seed`: per group the config columns, mean/std/min/max/n and the run ids."""
    _check_mode(mode)

    def q(ctx: _Ctx):
        cols = ctx.columns("runs")
        m = _check_metric(metric, _metrics_of_runs(cols))
        value = _value_expr(m, mode, stat)
        where, params = _where(filters, cols)
        keys = ", ".join(_ident(c) for c in FIELD_KINDS if c in cols and c != "seed")
        return ctx.df(f"""{ctx.with_('runs')}
            SELECT {keys}, avg(v) AS mean, stddev_samp(v) AS std, min(v) AS min, max(v) AS max, count(v) AS n,
                   list(run_id ORDER BY seed) AS run_ids, list(seed ORDER BY seed) AS seeds
            FROM (SELECT *, {value} AS v FROM runs WHERE {_ident('stats_' + m)} IS NOT NULL AND {where})
            GROUP BY {keys} ORDER BY {keys}""", params)

    return _run(store, q)


def distinct_values(store, column: str) -> "pd.DataFrame":
    """The values a runs column takes, with how many runs have each (for the dashboard's filter widgets)."""
    def q(ctx: _Ctx):
        c = _ident(_check_column(column, ctx.columns("runs")))
        return ctx.df(f"{ctx.with_('runs')} SELECT {c}, count(*) AS n FROM runs GROUP BY {c} ORDER BY {c} NULLS LAST")

    return _run(store, q)


def status_counts(store) -> "pd.DataFrame":
    """Runs per status (newest attempts), every status listed, zeros included."""
    def q(ctx: _Ctx):
        return ctx.df(f"""{ctx.with_('runs')}
            SELECT s.status, count(r.run_id) AS n
            FROM (SELECT unnest(?::VARCHAR[]) AS status, generate_subscripts(?::VARCHAR[], 1) AS k) s
            LEFT JOIN runs r ON r.status = s.status
            GROUP BY s.status, s.k ORDER BY s.k""", [list(STATUSES), list(STATUSES)])

    return _run(store, q)


def study_progress(store) -> "pd.DataFrame":
    """Per study: member runs and how many are in each status; `not_started` members have no attempt yet."""
    def q(ctx: _Ctx):
        counts = ", ".join(f"count(*) FILTER (WHERE r.status = '{s}') AS {s}" for s in STATUSES)
        return ctx.df(f"""{ctx.with_('runs', 'study_members')}
            SELECT m.study, count(*) AS n_runs, {counts},
                   count(*) FILTER (WHERE r.status IS NULL) AS not_started,
                   count(*) FILTER (WHERE r.status IN ('completed', 'diverged')) / count(*) AS done_fraction
            FROM study_members m LEFT JOIN runs r ON r.run_id = m.run_id
            GROUP BY m.study ORDER BY m.study""")

    return _run(store, q)


def run_row(store, run_id: str) -> dict[str, Any] | None:
    """The runs-view row of one run as a dict (None when unknown); backs RunStore.get."""
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        raise QueryError(f"bad run id {run_id!r}")

    def q(ctx: _Ctx):
        rel = ctx.cur.execute(f"{ctx.with_('runs')} SELECT * FROM runs WHERE run_id = ?", [run_id])
        names = [d[0] for d in rel.description]
        row = rel.fetchone()
        return None if row is None else dict(zip(names, row))

    return _run(store, q)


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
    def q(ctx: _Ctx):
        _check_select(ctx.cur, query)
        ctx.create_views(("runs", "epochs", "study_members"))
        return ctx.df(query, params)

    return _run(store, q)


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
        df = final_and_best(store, metric, mode, filters)
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
        cur.execute(f"COPY (SELECT * FROM _export) TO {_lit(str(tmp))} ({options})")
        os.replace(tmp, out)
    except Exception as e:
        with suppress(OSError):
            tmp.unlink()
        raise QueryError(f"could not write {out}: {e}") from None
    finally:
        cur.close()
    return out
