"""The store's tables for SQL: the views every query runs over, defined over exactly one snapshot's files.

    attempts       one row per attempt of every run
    runs           one row per run: its newest attempt, config as typed columns, final_<metric>, stats_<metric>,
                   studies
    epochs         one row per epoch of each run's newest attempt; one DOUBLE column per metric (union over tasks:
                   a metric a task never logs reads NULL)
    all_epochs     epochs of every attempt
    study_members  (study, run_id) pairs

This is the store's read door: ``RunStore.read(fn)`` calls ``fn(views)`` on a fresh snapshot and a fresh DuckDB
cursor, and retries when compaction moved files underneath or a file proves damaged (which is then left out).
engine/queries.py writes its SQL against these views and never touches the store's files itself. See
docs/store.md for every column.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import QueryError
from .files import DamagedFileError, StoreFiles, check_parquet, files_table, mark_damaged
from .snapshot import Snapshot, take_snapshot

VIEWS = ("runs", "attempts", "epochs", "all_epochs", "study_members")
_VIEW_DEPS = {"runs": {"attempts"}, "attempts": set(), "epochs": set(), "all_epochs": set(),
              "study_members": {"attempts"}}
_MAX_RETRIES = 5
# Run rows of compacted parts are held in memory up to this many (about 1 KB each); beyond, DuckDB reads them.
RUN_ROWS_IN_MEMORY = 200_000


def _lit(s: str) -> str:
    """A SQL string literal of a path the snapshot listed (our own file names, never caller text)."""
    return "'" + s.replace("'", "''") + "'"


def _read(files: Iterable[str]) -> str:
    return "read_parquet([" + ", ".join(_lit(f) for f in files) + "], union_by_name = true)"


class Views:
    """One read's cursor and snapshot: the view definitions (as CTEs) and the columns each view has."""

    def __init__(self, store: StoreFiles, cur, snap: Snapshot) -> None:
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

    def _hide_deleted(self, union: str) -> str:
        """Leave out deleted attempts a compacted part still holds (sealed and live ones the snapshot skipped)."""
        keys = self.snap.deleted_in_parts
        if not keys:
            return union
        import pyarrow as pa
        name = self._register("_deleted", pa.table({"run_id": [k[0] for k in keys],
                                                    "attempt": pa.array([k[1] for k in keys], pa.int32())}))
        return f"SELECT * FROM ({union}) ANTI JOIN {name} USING (run_id, attempt)"

    def _annotated(self, base: str) -> str:
        """The annotation columns (excluded, excluded_reason, tags, note) joined onto every attempt. A run is
        excluded when it is excluded itself or belongs to an excluded study; the reasons say which."""
        from .annotations import runs_table, studies_table

        ann = self.snap.annotations
        if ann is None or (not ann.runs and not ann.studies):
            return (f"SELECT *, FALSE AS excluded, NULL::VARCHAR AS excluded_reason, []::VARCHAR[] AS tags, "
                    f"NULL::VARCHAR AS note FROM {base}")
        runs = self._register("_ann_runs", runs_table(ann))
        studies = self._register("_ann_studies", studies_table(ann))
        return f"""
            SELECT b.*, coalesce(r.excluded_reason, s.excluded_reason) IS NOT NULL AS excluded,
                   CASE WHEN coalesce(r.excluded_reason, s.excluded_reason) IS NOT NULL
                        THEN concat_ws('; ', r.excluded_reason, s.excluded_reason) END AS excluded_reason,
                   coalesce(r.tags, []::VARCHAR[]) AS tags, r.note AS note
            FROM {base} b
            LEFT JOIN {runs} r ON b.run_id = r.run_id
            LEFT JOIN (SELECT m.run_id, string_agg('study ' || a.study || ': ' || a.excluded_reason, '; '
                                                   ORDER BY a.study) AS excluded_reason
                       FROM study_members m JOIN {studies} a ON m.study = a.study
                       WHERE a.excluded_reason IS NOT NULL GROUP BY m.run_id) s ON b.run_id = s.run_id"""

    def definitions(self, views: Iterable[str]) -> list[tuple[str, str]]:
        """(name, SELECT) in dependency order for the requested views."""
        snap = self.snap
        need = set(views)
        for v in list(need):
            need |= _VIEW_DEPS.get(v, set())
        out: list[tuple[str, str]] = []
        if need & {"attempts", "runs", "study_members"}:
            live = (lambda: self._register("_live_runs", snap.live_runs_table)) if snap.live else None
            out.append(("_attempts_raw", self._hide_deleted(self._union(
                "runs", live, lambda: self._register("_live_runs", snap.live_runs_table)))))
            members = "SELECT study, run_id FROM _attempts_raw WHERE study IS NOT NULL"
            if snap.study_files:
                members += f" UNION SELECT study, run_id FROM {_read(snap.study_files)}"
            out.append(("study_members", f"SELECT DISTINCT study, run_id FROM ({members})"))
            if snap.study_files:
                out.append(("_attempts_studies", """
                    SELECT a.*, coalesce(s.studies, []::VARCHAR[]) AS studies
                    FROM _attempts_raw a
                    LEFT JOIN (SELECT run_id, list(study ORDER BY study) AS studies
                               FROM study_members GROUP BY run_id) s ON a.run_id = s.run_id"""))
            else:  # no membership files: a run's studies are just the study it was started for
                out.append(("_attempts_studies", "SELECT *, CASE WHEN study IS NULL THEN []::VARCHAR[] ELSE [study] "
                                                 "END AS studies FROM _attempts_raw"))
            out.append(("attempts", self._annotated("_attempts_studies")))
            out.append(("runs", f"SELECT * FROM attempts ANTI JOIN {self._superseded()} USING (run_id, attempt)"
                        if snap.superseded else "SELECT * FROM attempts"))
        if need & {"epochs", "all_epochs"}:
            live = (lambda: self._register("_live_epochs", snap.live_epochs_table)) if snap.live else None
            out.append(("all_epochs", self._hide_deleted(self._union(
                "epochs", live, lambda: self._register("_live_epochs", snap.live_epochs_table)))))
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
        from .schema import epoch_fixed_schema, run_fixed_schema

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
            cols.update(excluded=pa.bool_(), excluded_reason=pa.string(), tags=pa.list_(pa.string()),
                        note=pa.string())
        return cols

    def df(self, query: str, params: list[Any] | None = None):
        # via Arrow: ~25% faster than DuckDB's .df() for wide results; same dtypes
        return self.cur.sql(query, params=params or None).to_arrow_table().to_pandas()


def define_views(store: StoreFiles, con, snap: Snapshot, views: Iterable[str] = VIEWS) -> None:
    """Create the named views (runs, attempts, epochs, all_epochs, study_members) as TEMP views on a connection the
    caller owns, over exactly the snapshot's files (for the SQL console, which locks its connection down to
    ``snap.run_files + snap.epoch_files + snap.study_files`` afterwards)."""
    Views(store, con, snap).create_views(views)


def _snapshot_files(snap: Snapshot) -> list[str]:
    return list(snap.run_files) + list(snap.epoch_files) + list(snap.study_files)


def read(store: StoreFiles, cursor: Callable[[], Any], fn: Callable[[Views], Any]) -> Any:
    """``fn(views)`` on a fresh snapshot and a fresh ``cursor()``; retried when compaction moved files or a file
    proves damaged. A returned DataFrame carries ``df.attrs["problems"]``: the files the read left out."""
    import duckdb

    last: Exception | None = None
    for _ in range(_MAX_RETRIES):
        snap = take_snapshot(store.cache, store.layout)
        cur = cursor()
        try:
            out = fn(Views(store, cur, snap))
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


def run_row(views: Views, run_id: str) -> dict[str, Any] | None:
    """The runs-view row of one run as a dict (None when unknown): what RunStore.get reads."""
    rel = views.cur.execute(f"{views.with_('runs')} SELECT * FROM runs WHERE run_id = ?", [run_id])
    names = [d[0] for d in rel.description]
    row = rel.fetchone()
    return None if row is None else dict(zip(names, row))
