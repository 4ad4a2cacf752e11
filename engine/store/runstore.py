"""RunStore: the one object the training loop, the CLI and the dashboard hold to reach a store root.

Writing goes through ``open_run`` (writer.py); reading through ``snapshot``, ``attempts``, ``get`` / ``cached`` and
``read`` (views.py: the SQL views engine/queries.py queries). The store's modules take a StoreFiles (files.py), the
small context a RunStore is, and never import this module.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import views
from .errors import RunLockedError, StoreError, StoreValidationError
from .files import Problem, StoreFiles
from .layout import LIVE_RE, atomic_write_table, check_run_id
from .schema import CACHED_STATUSES
from .snapshot import Snapshot, existing_attempts, store_version, take_snapshot

ENV_VAR = "ABLATION_LAB_STORE"
COMPACT_THRESHOLD_ENV = "ABLATION_LAB_COMPACT_THRESHOLD"  # read by the CLI's open_store (tests lower it)


def default_store_root() -> Path:
    """The store root the CLI and the dashboard use when none is given: $ABLATION_LAB_STORE, else ./runs."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path.cwd() / "runs"


def compact_threshold_from_env(default: int = 256) -> int:
    """$ABLATION_LAB_COMPACT_THRESHOLD (sealed attempts that make ``maybe_compact`` compact), else ``default``;
    read at the edges (CLI, supervisor) only."""
    raw = os.environ.get(COMPACT_THRESHOLD_ENV, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise StoreValidationError(f"${COMPACT_THRESHOLD_ENV} must be a whole number of sealed runs >= 1, "
                                   f"got {raw!r}")
    return value


@dataclass(frozen=True)
class RunRecord:
    """A run's current state (its newest attempt), as the engine and the dashboard see it."""

    run_id: str
    status: str
    config: dict[str, Any]
    summary: dict[str, Any]
    final: dict[str, float | None]  # metric -> value at the last epoch it was logged (None where not finite)
    n_epochs: int
    attempt: int = 1
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    studies: tuple[str, ...] = ()
    has_checkpoint: bool = False
    started_at: Any = None
    ended_at: Any = None


@dataclass(frozen=True)
class RunStore(StoreFiles):
    """A store root. Cheap to create; holds only memo caches (file checks, a DuckDB connection per process).

    ``durable`` fsyncs sealed and compacted files (protection against power loss, not needed against process
    crashes); ``compact_threshold`` is the number of sealed-but-uncompacted attempts at which ``maybe_compact``
    compacts (None: never). Training never compacts: the job supervisor between jobs, the end of a study and
    ``engine compact`` call ``maybe_compact`` / ``compact`` (one at a time: compaction.py's lock).
    """

    compact_threshold: int | None = 256
    _duck: dict = field(default_factory=dict, repr=False, compare=False)

    # --- writing -------------------------------------------------------------------------------------------------
    def open_run(self, run_id: str, config: dict, meta: dict, heartbeat_s: float = 5.0):
        """Start a new attempt of a run; raises RunLockedError / RunAlreadyFinishedError. Returns a RunWriter."""
        from .writer import open_run
        # no compaction in finish(): it would pause the training that called it (see maybe_compact)
        return open_run(self, run_id, config, meta, heartbeat_s)

    def add_to_study(self, study: str, run_ids: list[str]) -> None:
        """Record that these runs belong to a study (a run may belong to several); idempotent."""
        import pyarrow as pa

        if not isinstance(study, str) or not study.strip() or len(study) > 200 or "\n" in study:
            raise StoreValidationError(f"study name must be a non-empty single-line string of at most 200 "
                                       f"characters, got {study!r}")
        run_ids = [check_run_id(r) for r in run_ids]
        if not run_ids:
            return
        now = int(time.time() * 1_000_000)
        t = pa.table({"study": [study] * len(run_ids), "run_id": run_ids,
                      "added_at": pa.array([now] * len(run_ids), pa.timestamp("us", tz="UTC"))})
        name = f"{time.time_ns()}-{os.getpid()}-{secrets.token_hex(3)}.parquet"
        atomic_write_table(self.layout.studies / name, t, self.durable)

    def seal_abandoned(self, run_ids, status: str, error: str, owner: dict | None = None,
                       purpose: str = "sealing runs left open") -> dict[str, str]:
        """Seal the live attempts of these runs whose writing process is gone, so that nobody reads them as
        ``running`` any more: a result their ``finish`` recorded stands, the rest end as ``status`` with ``error``.
        ``owner``: meta values an attempt must carry to be sealed (e.g. the job that opened it). Attempts whose lock a
        live process holds are left alone. Returns run_id -> the status it was sealed with."""
        from .writer import seal_abandoned

        wanted = set(run_ids)
        sealed: dict[str, str] = {}
        try:
            entries = sorted(os.listdir(self.layout.live))
        except FileNotFoundError:
            return sealed
        for name in entries:
            m = LIVE_RE.match(name)
            if not m or m.group(1) not in wanted:
                continue
            try:
                a = seal_abandoned(self, self.layout.live / name, status, error, purpose, owner)
            except RunLockedError:
                continue  # a live process writes it: not abandoned
            if a is not None:
                sealed[a.run_id] = a.status
        return sealed

    # --- curation: exclusion, tags, notes, deletion (annotations.py, deletion.py) --------------------------------
    def annotate(self, action: str, runs=(), studies=(), **fields) -> None:
        """Record one annotation (exclude reason=, include, tag tag=, untag tag=, note note=) on runs and/or
        studies, atomically; unknown runs or studies are refused with their names."""
        from .annotations import write_record
        runs, studies = list(runs), list(studies)
        missing = [r for r in runs if not self.attempts(r)]
        if missing:
            raise StoreValidationError(f"no such run(s) in the store: {', '.join(missing)}")
        if studies:
            known = set(self.read(lambda v: v.df(f"{v.with_('study_members')} SELECT DISTINCT study "
                                                  "FROM study_members"))["study"])
            unknown = [s for s in studies if s not in known]
            if unknown:
                raise StoreValidationError(f"no such study in the store: {', '.join(unknown)}; studies: "
                                           f"{', '.join(sorted(known)) or '(none yet)'}")
        write_record(self.layout, action, runs, studies, self.durable, **fields)

    def annotations(self):
        """The folded annotations (annotations.Annotations): per run and per study exclusion, tags, note."""
        from .annotations import read_annotations
        return read_annotations(self.cache, self.layout)

    def plan_delete(self, run_ids):
        """What deleting these runs (every attempt) would remove: ``.n_runs``, ``.bytes``, ``.describe()``."""
        from .deletion import plan
        ids = [check_run_id(r) for r in run_ids]
        rows = self.read(lambda v: v.cur.execute(
            f"{v.with_('attempts')} SELECT run_id, attempt, n_epochs FROM attempts "
            "WHERE run_id IN (SELECT unnest(?::VARCHAR[]))", [ids]).fetchall())
        return plan(self, rows, ids)

    def delete(self, plan):
        """Delete the planned runs (RunLockedError for a running one, nothing deleted then), then compact to
        free their disk; returns the CompactionResult (skipped when another compaction runs: the next one frees
        it)."""
        from .deletion import delete
        delete(self, plan, self.durable)
        return self.compact()

    def maybe_compact(self) -> None:
        """Compact when enough sealed attempts piled up; never fails the caller (the runs are already safe).
        Called between jobs and at the end of a study, never inside a training process's finish()."""
        if self.compact_threshold is None:
            return
        try:
            n = sum(1 for name in os.listdir(self.layout.sealed) if name.endswith(".run.parquet"))
        except FileNotFoundError:
            return
        if n >= self.compact_threshold:
            try:
                self.compact()
            except (StoreError, OSError) as e:
                warnings.warn(f"automatic compaction of {self.root} failed ({e}); your runs are safe in their "
                              "own files. Run `python -m engine check` to see why.", stacklevel=2)

    def compact(self, full: bool = False):
        from .compaction import compact
        return compact(self, full)

    def check(self, repair: bool = False):
        from .check import check
        return check(self, repair)

    def read_only_reason(self) -> str | None:
        """Why nothing can be written to this store (a read-only mount, no write permission), or None."""
        path = self.root
        while not path.exists() and path != path.parent:
            path = path.parent  # a store not created yet: whether its parent takes new folders
        try:
            if os.statvfs(path).f_flag & os.ST_RDONLY:
                return f"the store {self.root} is on a read-only file system"
        except OSError:
            pass
        if not os.access(path, os.W_OK):
            return f"the store {self.root} is not writable by this user"
        return None

    # --- reading -------------------------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        return take_snapshot(self.cache, self.layout)

    def problems(self) -> list[Problem]:
        """Damaged or leftover files the dashboard should show; each is skipped by queries."""
        return list(self.snapshot().problems)

    def version(self) -> str:
        """Changes whenever anything in the store changes; pass it to caches as a key."""
        return store_version(self.layout)

    def attempts(self, run_id: str) -> dict[int, str]:
        """attempt number -> status of every attempt of a run."""
        check_run_id(run_id)
        return existing_attempts(self.cache, self.layout, run_id)

    def get(self, run_id: str) -> RunRecord | None:
        """The run's newest attempt, whatever its status, or None when the store has never seen it."""
        check_run_id(run_id)
        row = self.read(lambda v: views.run_row(v, run_id))
        return None if row is None else _record(row)

    def cached(self, run_id: str) -> RunRecord | None:
        """The finished result (completed or diverged) the engine may reuse instead of training, else None."""
        attempts = self.attempts(run_id)
        if not attempts or attempts[max(attempts)] not in CACHED_STATUSES:
            return None  # fast path without SQL: most look-ups are misses
        rec = self.get(run_id)
        return rec if rec is not None and rec.status in CACHED_STATUSES else None

    def load_checkpoint(self, run_id: str) -> bytes | None:
        """Checkpoint bytes of the run's newest attempt, or None when it saved none."""
        attempts = self.attempts(run_id)
        if not attempts:
            return None
        try:
            return self.layout.checkpoint(run_id, max(attempts)).read_bytes()
        except FileNotFoundError:
            return None

    # --- DuckDB ---------------------------------------------------------------------------------------------------
    def read(self, fn: Callable[[views.Views], Any]) -> Any:
        """``fn(views)`` over a fresh snapshot: the door every SQL query of engine/queries.py goes through."""
        return views.read(self, self.duckdb_cursor, fn)

    def duckdb_cursor(self):
        """A fresh cursor on this process's in-memory DuckDB database (connecting costs ~10 ms, a cursor ~0)."""
        import duckdb
        pid = os.getpid()
        con = self._duck.get(pid)  # keyed by pid: a DuckDB connection must not cross a fork
        if con is None:
            con = duckdb.connect(":memory:")
            self._duck.clear()
            self._duck[pid] = con
        return con.cursor()


def _nonfinite(raw: str | None) -> dict[str, float]:
    if not raw:
        return {}
    return {k: float(v) if v != "none" else None for k, v in json.loads(raw).items()}


def _record(row: dict[str, Any]) -> RunRecord:
    summary = json.loads(row.get("summary_json") or "{}")
    for k, v in _nonfinite(row.get("summary_nonfinite")).items():
        summary[k] = v if v is not None else None
    final = {}
    for k, v in row.items():
        if k.startswith("final_"):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                if row.get("stats_" + k[6:]) is None:
                    continue  # this run never logged the metric (another task's column)
                v = None
            final[k[6:]] = v
    studies = row.get("studies")
    return RunRecord(run_id=row["run_id"], status=row["status"], config=json.loads(row["config_json"]),
                     summary=summary, final=final, n_epochs=int(row["n_epochs"]), attempt=int(row["attempt"]),
                     error=row.get("error"), meta=json.loads(row.get("meta_json") or "{}"),
                     studies=tuple(studies) if studies is not None else (),
                     has_checkpoint=bool(row.get("has_checkpoint")), started_at=row.get("started_at"),
                     ended_at=row.get("ended_at"))
