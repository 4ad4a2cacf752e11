"""Consistent, validated views of what the store holds: the snapshot every query and every check starts from.

A snapshot lists the healthy Parquet files (compacted parts and sealed attempts) and parses the live attempts'
logs into Arrow tables. It never includes a file twice and never misses a committed attempt:

* live attempts are listed *before* the sealed folder: an attempt sealed in between shows up sealed, never missing;
* the compaction manifest is read before and after the listing; if compaction committed in between, retry;
* a small file the manifest says was merged ("absorbed") is skipped by name, so a crash after the merge but
  before the delete cannot double count;
* every Parquet file is checked (magic bytes and footer) once per (path, size, mtime); damaged ones become
  ``Problem`` entries and are left out, so one bad file never hides the rest.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .annotations import Annotations, read_annotations
from .files import Problem, ReaderCache, check_parquet, listdir
from .layout import LIVE_RE, SEALED_RE, Layout
from .livelog import EPOCHS, HEARTBEAT, START, heartbeat_stale, read_live_attempt
from .manifest import part_attempts, parts_info, read_manifest
from .schema import Attempt


@dataclass(frozen=True)
class Snapshot:
    """What a query runs over: healthy files, live attempts, the keys to leave out, and what is wrong."""

    root: Path
    part_run_files: tuple[str, ...]      # compacted parts: few and large, DuckDB reads them directly
    part_epoch_files: tuple[str, ...]
    small_run_files: tuple[str, ...]     # sealed attempts not compacted yet: read once, kept in memory
    small_epoch_files: tuple[str, ...]
    study_files: tuple[str, ...]
    live: tuple[Attempt, ...]
    superseded: tuple[tuple[str, int], ...]  # (run_id, attempt) of attempts a newer attempt replaced
    problems: tuple[Problem, ...]
    manifest_seq: int
    annotations: Annotations | None = None   # exclusions, tags, notes, deletions (annotations.py)
    deleted_in_parts: tuple[tuple[str, int], ...] = ()  # deleted attempts a compacted part still holds

    @property
    def run_files(self) -> tuple[str, ...]:
        return self.part_run_files + self.small_run_files

    @property
    def epoch_files(self) -> tuple[str, ...]:
        return self.part_epoch_files + self.small_epoch_files

    # cached: a query asks for these twice (its column list and its views); cached_property writes the instance
    # __dict__ directly, which a frozen dataclass allows
    @cached_property
    def live_runs_table(self):
        from .schema import runs_table
        return runs_table(self.live)

    @cached_property
    def live_epochs_table(self):
        from .schema import epochs_table
        return epochs_table(self.live)



def take_snapshot(cache: ReaderCache, layout: Layout, max_tries: int = 8) -> Snapshot:
    for _ in range(max_tries):
        snap = _try_snapshot(cache, layout)
        if snap is not None:
            return snap
        time.sleep(0.002)
    # Compaction committing over and over while we list: take the last listing anyway; queries retry on
    # missing files, and the name-based "absorbed" rule already rules out double counting.
    return _try_snapshot(cache, layout, force=True)


def _try_snapshot(cache: ReaderCache, layout: Layout, force: bool = False) -> Snapshot | None:
    problems: list[Problem] = []
    # Annotations first: a deletion is recorded before any file goes, so files listed after it are never
    # shown for a run whose deletion we missed.
    ann = read_annotations(cache, layout)
    m1 = read_manifest(layout)
    now = time.time()
    live: list[Attempt] = []
    for e in listdir(layout.live):
        if not e.is_dir():
            continue
        try:
            a = read_live_attempt(cache, layout, Path(e.path), now, problems)
        except FileNotFoundError:
            continue  # sealed and removed while we looked; the sealed listing below sees it
        if a is not None:
            live.append(a)
    sealed = listdir(layout.sealed)
    studies = listdir(layout.studies)
    m2 = read_manifest(layout)
    if m1.seq != m2.seq and not force:
        return None
    m = m2
    if m.problem:
        problems.append(Problem(str(layout.manifest), "manifest", m.problem))

    run_files: list[str] = []
    epoch_files: list[str] = []
    for p in m.parts:
        rp, ep = layout.parts / p.runs, layout.parts / p.epochs
        try:
            rc, ec = check_parquet(cache, rp), check_parquet(cache, ep)
        except FileNotFoundError:
            if force:
                continue
            return None  # replaced by a newer compaction between our reads
        if not rc.ok:
            problems.append(Problem(str(rp), "damaged", f"{rc.reason}; the {p.n_runs} runs in this part are hidden"))
            continue
        run_files.append(str(rp))
        if ec.ok:
            epoch_files.append(str(ep))
        else:
            problems.append(Problem(str(ep), "damaged", f"{ec.reason}; epochs of {p.n_runs} runs are hidden"))

    info = parts_info(cache, tuple(run_files))
    part_keys = info.keys
    sealed_run: dict[tuple[str, int], str] = {}
    sealed_ep: dict[tuple[str, int], str] = {}
    for e in sealed:
        mm = SEALED_RE.match(e.name)
        if not mm:
            continue
        if e.name in m.absorbed:
            continue  # merged into a part; the delete was interrupted
        key = (mm.group(1), int(mm.group(2)))
        if ann.deleted_attempt(*key):
            continue  # deleted; the next compaction removes the file
        if key in part_keys:
            problems.append(Problem(e.path, "leftover", "already in a compacted part; ignored "
                                                        "(check --repair removes the copy)"))
            continue
        try:
            c = check_parquet(cache, Path(e.path), e.stat())
        except FileNotFoundError:
            continue
        if not c.ok:
            problems.append(Problem(e.path, "damaged", f"{c.reason}; skipped"))
            continue
        (sealed_run if mm.group(3) == "run" else sealed_ep)[key] = e.path

    small_runs: list[str] = []
    small_epochs: list[str] = []
    for key, path in sorted(sealed_run.items()):
        small_runs.append(path)
        if key in sealed_ep:
            small_epochs.append(sealed_ep[key])
    live_keep: list[Attempt] = []
    for a in live:
        key = (a.run_id, a.attempt)
        if ann.deleted_attempt(*key):
            continue
        if key in part_keys or key in sealed_run:
            continue  # sealed; the live folder is a leftover of a finish() stopped before cleanup
        live_keep.append(a)
    live_keys = {(a.run_id, a.attempt) for a in live_keep}
    for key, path in sealed_ep.items():
        if key not in sealed_run and key not in live_keys:
            problems.append(Problem(path, "orphan", "epochs of an attempt with no run row and no live log; "
                                                    "skipped (check --repair moves it to quarantine)"))

    # Superseded attempts: the parts' own are memoised with the parts; only runs that also have a sealed or live
    # attempt need looking at again (a few per snapshot, not one per run).
    local: dict[str, list[int]] = {}
    for rid, att in list(sealed_run) + list(live_keys):
        local.setdefault(rid, []).append(att)
    superseded_set = {k for k in info.superseded if k[0] not in local}
    for rid, atts in local.items():
        newest = max(max(atts), info.newest.get(rid, 0))
        superseded_set.update((rid, a) for a in list(atts) + info.by_run.get(rid, []) if a < newest)
    superseded = tuple(sorted(superseded_set))

    study_files: list[str] = []
    for e in studies:
        if not e.name.endswith(".parquet"):
            continue
        try:
            c = check_parquet(cache, Path(e.path), e.stat())
        except FileNotFoundError:
            continue
        if c.ok:
            study_files.append(e.path)
        else:
            problems.append(Problem(e.path, "damaged", f"{c.reason}; study membership in it is hidden"))
    _prune(cache, live, len(sealed) + len(studies) + 2 * len(m.parts))
    return Snapshot(layout.root, tuple(run_files), tuple(epoch_files), tuple(small_runs), tuple(small_epochs),
                    tuple(study_files), tuple(live_keep),
                    superseded, tuple(problems), m.seq, ann,
                    tuple(sorted(k for k in part_keys if ann.deleted_attempt(*k))) if ann.deleted else ())


def _prune(cache: ReaderCache, live: list[Attempt], n_files: int) -> None:
    """Forget files that are gone, so a dashboard running for weeks does not keep every run it ever saw."""
    if len(cache.live_logs) > 2 * len(live) + 64:
        with cache.lock:
            for key in list(cache.live_logs):
                if not os.path.exists(key):
                    cache.live_logs.pop(key, None)
    if len(cache.checks) > 2 * n_files + 1024:
        for key in list(cache.checks):
            if not os.path.exists(key):
                cache.checks.pop(key, None)
    if len(cache.tables) > n_files + 64:
        for key in list(cache.tables):
            if not os.path.exists(key):
                cache.tables.pop(key, None)
    if len(cache.part_index) > 64:
        for key in list(cache.part_index):
            if not os.path.exists(key):
                cache.part_index.pop(key, None)
                cache.part_by_run.pop(key, None)


def existing_attempts(cache: ReaderCache, layout: Layout, run_id: str) -> dict[int, str]:
    """attempt -> status of every attempt of one run that is not deleted, without DuckDB (the writer's door check,
    under the lock). Attempts numbered up to ``deleted_through`` are deleted and left out."""
    deleted = deleted_through(cache, layout, run_id)
    for _ in range(8):
        m1 = read_manifest(layout)
        found: dict[int, str] = {}
        now = time.time()
        for e in listdir(layout.live):
            mm = LIVE_RE.match(e.name)
            if mm and mm.group(1) == run_id:
                try:
                    a = read_live_attempt(cache, layout, Path(e.path), now, [])
                except FileNotFoundError:
                    continue
                if a is not None:
                    found[a.attempt] = a.status
        try:
            for p in m1.parts:
                found.update(part_attempts(cache, layout.parts / p.runs, run_id))
        except (FileNotFoundError, OSError):
            continue
        # Probe names instead of listing the sealed folder (which may hold thousands of files): attempt numbers
        # are dense, so stop after a few misses past the highest number known from the live folder and the parts.
        n, misses = deleted + 1, 0
        while misses < 4 or n <= max(found, default=0):
            path = layout.sealed_run(run_id, n)
            if path.name in m1.absorbed or not path.exists():
                misses += 1
            else:
                misses = 0
                try:
                    if check_parquet(cache, path).ok:
                        import pyarrow.parquet as pq
                        found[n] = pq.ParquetFile(path).read(columns=["status"]).column(0)[0].as_py()
                except (FileNotFoundError, OSError):
                    pass
            n += 1
        found = {a: st for a, st in found.items() if a > deleted}
        if read_manifest(layout).seq == m1.seq:
            return found
    return found


def deleted_through(cache: ReaderCache, layout: Layout, run_id: str) -> int:
    """The highest deleted attempt number of a run (0: none): a new attempt is numbered above it."""
    return read_annotations(cache, layout).deleted.get(run_id, 0)


def store_version(layout: Layout) -> str:
    """Changes whenever anything is written: folder mtimes, the manifest, and each live log's size and liveness."""
    bits = []
    for d in (layout.sealed, layout.live, layout.studies, layout.parts, layout.checkpoints, layout.annotations):
        try:
            bits.append(str(os.stat(d).st_mtime_ns))
        except FileNotFoundError:
            bits.append("-")
    try:
        bits.append(str(os.stat(layout.manifest).st_mtime_ns))
    except FileNotFoundError:
        bits.append("-")
    now = time.time()
    for e in sorted(listdir(layout.live), key=lambda e: e.name):
        try:
            size = os.stat(os.path.join(e.path, EPOCHS)).st_size
            beat = os.stat(os.path.join(e.path, HEARTBEAT)).st_mtime
            hb = json.loads(Path(e.path, START).read_bytes()).get("heartbeat_s", 5.0)
        except (OSError, ValueError):
            continue
        bits.append(f"{e.name}:{size}:{int(heartbeat_stale(now, beat, hb))}")
    return "|".join(bits)
