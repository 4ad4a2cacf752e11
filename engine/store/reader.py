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
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .layout import LIVE_RE, SEALED_RE, Layout, lock_is_held
from .schema import Attempt, Summary


@dataclass(frozen=True)
class Problem:
    """Something a person should know about a file: the dashboard lists these, `check` explains them."""

    path: str
    kind: str  # damaged | torn_line | bad_line | orphan | leftover | manifest
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class FileCheck:
    ok: bool
    reason: str
    num_rows: int
    schema: Any  # pyarrow.Schema when ok


@dataclass(frozen=True)
class PartEntry:
    runs: str
    epochs: str
    n_runs: int
    n_epochs: int


@dataclass(frozen=True)
class Manifest:
    seq: int = 0
    generation: int = 0
    parts: tuple[PartEntry, ...] = ()
    absorbed: frozenset[str] = frozenset()
    problem: str | None = None

    def to_json(self) -> dict:
        return {"format": 1, "seq": self.seq, "generation": self.generation,
                "parts": [p.__dict__ for p in self.parts], "absorbed": sorted(self.absorbed)}


@dataclass
class ReaderCache:
    """Per-RunStore memo of work that only depends on file identity; safe to share between threads."""

    checks: dict[str, tuple[int, int, FileCheck]] = field(default_factory=dict)
    part_index: dict[str, dict[tuple[str, int], str]] = field(default_factory=dict)
    part_by_run: dict[str, dict[str, dict[int, str]]] = field(default_factory=dict)
    live_logs: dict[str, tuple[int, int, list, list]] = field(default_factory=dict)
    memo: dict = field(default_factory=dict)  # derived facts keyed by the files they came from (queries' columns)
    tables: dict[str, tuple[int, int, Any]] = field(default_factory=dict)  # small sealed file -> its Arrow table
    lock: threading.Lock = field(default_factory=threading.Lock)


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


# --- file validation ------------------------------------------------------------------------------------------

def check_parquet(cache: ReaderCache, path: Path, st: os.stat_result | None = None) -> FileCheck:
    """Cheap structural check of a Parquet file (magic bytes at both ends, parsable footer), memoised."""
    key = str(path)
    if st is None:
        st = os.stat(path)
    hit = cache.checks.get(key)
    if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
        return hit[2]
    result = _check_parquet_uncached(path, st.st_size)
    cache.checks[key] = (st.st_size, st.st_mtime_ns, result)
    return result


def _check_parquet_uncached(path: Path, size: int) -> FileCheck:
    if size == 0:
        return FileCheck(False, "zero bytes (the write never completed or the file was truncated)", 0, None)
    if size < 12:
        return FileCheck(False, f"only {size} bytes: too short to be a Parquet file", 0, None)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(size - 8)
            tail = f.read(8)
    except OSError as e:
        return FileCheck(False, f"cannot be read: {e}", 0, None)
    if head != b"PAR1" or tail[4:] != b"PAR1":
        return FileCheck(False, "not a complete Parquet file (magic bytes missing: truncated or overwritten)",
                         0, None)
    footer_len = int.from_bytes(tail[:4], "little")
    if footer_len <= 0 or footer_len > size - 12:
        return FileCheck(False, "Parquet footer length is impossible (file truncated or corrupt)", 0, None)
    import pyarrow.parquet as pq
    try:
        meta = pq.read_metadata(path)
        return FileCheck(True, "", meta.num_rows, meta.schema.to_arrow_schema())
    except Exception as e:  # pyarrow raises several types for corrupt footers
        return FileCheck(False, f"Parquet footer cannot be parsed ({type(e).__name__}: {e})", 0, None)


class DamagedFileError(Exception):
    """A file failed while being read; it is now marked damaged and the caller should take a new snapshot."""


def files_table(cache: ReaderCache, files: tuple[str, ...]):
    """Several Parquet files of one kind as one in-memory Arrow table (None when there are none).

    Used for the sealed-but-uncompacted small files (DuckDB pays a few ms per file per query, and a study can leave a
    couple of hundred of them between compactions) and for the run rows of compacted parts (one row per attempt:
    ~1 KB each, so ten thousand runs take ~10 MB). Each file is read once per process, keyed by its size and mtime
    (sealed files and parts never change in place), and the union is memoised for the exact file list.
    """
    if not files:
        return None
    # stat every file (FileNotFoundError: compacted away since the snapshot; the caller retries): a file repaired
    # in place has a new size/mtime and must not be served from the memo
    stats = [os.stat(f) for f in files]
    key = ("small", tuple((f, st.st_size, st.st_mtime_ns) for f, st in zip(files, stats)))
    hit = cache.memo.get(key)
    if hit is not None:
        return hit
    import pyarrow as pa
    import pyarrow.parquet as pq
    tables = []
    for f, st in zip(files, stats):
        got = cache.tables.get(f)
        if got is None or got[0] != st.st_size or got[1] != st.st_mtime_ns:
            try:
                t = pq.ParquetFile(f, memory_map=False).read()
            except FileNotFoundError:
                raise
            except (pa.ArrowException, OSError, ValueError) as e:
                mark_damaged(cache, f, f"unreadable data ({type(e).__name__}: {e})")
                raise DamagedFileError(f) from None
            got = (st.st_size, st.st_mtime_ns, t)
            cache.tables[f] = got
        tables.append(got[2])
    combined = pa.concat_tables(tables, promote_options="permissive").combine_chunks()
    if sum(1 for k in cache.memo if k[0] == "small") > 8:
        for k in [k for k in cache.memo if k[0] == "small"]:
            cache.memo.pop(k, None)
    cache.memo[key] = combined
    return combined


def mark_damaged(cache: ReaderCache, path: str, reason: str) -> None:
    """Record a file that passed the cheap check but failed when read (a corrupt data page)."""
    try:
        st = os.stat(path)
    except OSError:
        return
    cache.checks[path] = (st.st_size, st.st_mtime_ns, FileCheck(False, reason, 0, None))


# --- manifest ---------------------------------------------------------------------------------------------------

def read_manifest(layout: Layout) -> Manifest:
    try:
        raw = layout.manifest.read_bytes()
    except FileNotFoundError:
        return Manifest()
    try:
        d = json.loads(raw)
        parts = tuple(PartEntry(p["runs"], p["epochs"], int(p["n_runs"]), int(p["n_epochs"])) for p in d["parts"])
        return Manifest(int(d["seq"]), int(d["generation"]), parts, frozenset(d.get("absorbed", ())))
    except (ValueError, KeyError, TypeError) as e:
        return Manifest(problem=f"compaction manifest cannot be read ({e}); compacted runs are hidden until it is "
                                "restored (check --repair rebuilds it from the part files)")


def part_index(cache: ReaderCache, path: Path) -> dict[tuple[str, int], str]:
    """(run_id, attempt) -> status of a compacted part; parts never change once written, so cache by path."""
    key = str(path)
    idx = cache.part_index.get(key)
    if idx is None:
        import pyarrow.parquet as pq
        t = pq.read_table(path, columns=["run_id", "attempt", "status"])
        idx = {(r, int(a)): s for r, a, s in zip(t.column("run_id").to_pylist(), t.column("attempt").to_pylist(),
                                                  t.column("status").to_pylist())}
        by_run: dict[str, dict[int, str]] = {}
        for (r, a), s in idx.items():
            by_run.setdefault(r, {})[a] = s
        cache.part_by_run[key] = by_run
        cache.part_index[key] = idx
    return idx


@dataclass(frozen=True)
class PartsInfo:
    """Which attempts a set of parts holds: for membership tests and for finding superseded attempts."""

    keys: frozenset
    newest: dict            # run_id -> highest attempt in the parts
    by_run: dict            # run_id -> [attempts]
    superseded: tuple       # (run_id, attempt) older than the run's newest attempt in the parts


def parts_info(cache: ReaderCache, run_parts: tuple[str, ...]) -> PartsInfo:
    key = ("parts", run_parts)
    hit = cache.memo.get(key)
    if hit is not None:
        return hit
    by_run: dict[str, list[int]] = {}
    for path in run_parts:
        for rid, att in part_index(cache, Path(path)):
            by_run.setdefault(rid, []).append(att)
    newest = {rid: max(atts) for rid, atts in by_run.items()}
    superseded = tuple((rid, a) for rid, atts in by_run.items() if len(atts) > 1 for a in atts if a < newest[rid])
    info = PartsInfo(frozenset((rid, a) for rid, atts in by_run.items() for a in atts), newest, by_run, superseded)
    for k in [k for k in cache.memo if k[0] == "parts"]:
        cache.memo.pop(k, None)
    cache.memo[key] = info
    return info


def part_attempts(cache: ReaderCache, path: Path, run_id: str) -> dict[int, str]:
    """attempt -> status of one run in a compacted part (an O(1) look-up after the first)."""
    part_index(cache, path)
    return cache.part_by_run[str(path)].get(run_id, {})


# --- live attempts --------------------------------------------------------------------------------------------

def _parse_log(cache: ReaderCache, log: Path, problems: list[Problem]) -> list:
    """Complete lines of an append-only epoch log, parsed incrementally; a torn last line is left for later."""
    st = os.stat(log)
    key = str(log)
    with cache.lock:
        hit = cache.live_logs.get(key)
    if hit is not None and hit[0] == st.st_ino and hit[1] <= st.st_size:
        _, offset, epochs, bad = hit
        epochs, bad = list(epochs), list(bad)
    else:
        offset, epochs, bad = 0, [], []
    if st.st_size > offset:
        with open(log, "rb") as f:
            f.seek(offset)
            data = f.read()
        end = data.rfind(b"\n")
        complete = data[: end + 1] if end >= 0 else b""
        last_epoch = epochs[-1][0] if epochs else None
        for line in complete.splitlines():
            try:
                rec = json.loads(line)
                epoch = int(rec["e"])
                vals = rec.get("m", {})
                nf = rec.get("x", {})
                t = float(rec.get("t", 0.0))
            except (ValueError, KeyError, TypeError):
                bad.append(f"skipped an unreadable line of {log.name}")
                continue
            if last_epoch is not None and epoch <= last_epoch:
                bad.append(f"skipped epoch {epoch} of {log.name}: not after epoch {last_epoch}")
                continue
            epochs.append((epoch, t, vals, nf))
            last_epoch = epoch
        offset += len(complete)
        with cache.lock:
            cache.live_logs[key] = (st.st_ino, offset, epochs, bad)
    for msg in bad:
        problems.append(Problem(str(log), "bad_line", msg))
    return epochs


def read_live_attempt(cache: ReaderCache, layout: Layout, d: Path, now: float,
                      problems: list[Problem]) -> Attempt | None:
    """Parse one live attempt folder. Raises FileNotFoundError when it vanished (it was sealed meanwhile)."""
    m = LIVE_RE.match(d.name)
    if not m:
        return None
    try:
        start = json.loads((d / "start.json").read_bytes())
    except FileNotFoundError:
        raise
    except ValueError as e:
        problems.append(Problem(str(d / "start.json"), "damaged", f"start record unreadable ({e}); attempt skipped"))
        return None
    epochs = _parse_log(cache, d / "epochs.jsonl", problems)
    try:
        beat = os.stat(d / "heartbeat").st_mtime
    except FileNotFoundError:
        beat = start["started_at"]
    try:
        beat = max(beat, os.stat(d / "epochs.jsonl").st_mtime)
    except FileNotFoundError:
        pass
    a = Attempt(run_id=start["run_id"], attempt=int(start["attempt"]), config=start["config"],
                meta=start["meta"], started_at=float(start["started_at"]), heartbeat_s=float(start["heartbeat_s"]),
                epochs=epochs, heartbeat_at=beat)
    try:
        final = json.loads((d / "final.json").read_bytes())
    except FileNotFoundError:
        final = None
    except ValueError:
        final = None
        problems.append(Problem(str(d / "final.json"), "damaged", "finish record unreadable; ignored"))
    if final is not None:
        # finish() recorded its result but was stopped before sealing: the result stands (terminal)
        a.status = final["status"]
        a.error = final.get("error")
        a.summary = Summary(final.get("summary", {}), final.get("summary_nonfinite", {}),
                            {k: (None if v is None else float(v)) for k, v in final.get("summary_columns", {}).items()})
        a.ended_at = final.get("ended_at")
        a.has_checkpoint = bool(final.get("has_checkpoint"))
        return a
    if heartbeat_stale(now, beat, a.heartbeat_s) and not _writer_alive(layout, a):
        a.status = "interrupted"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(beat))
        a.error = (f"the writing process (pid {a.meta.get('pid', '?')} on {a.meta.get('hostname', '?')}) stopped: "
                   f"no heartbeat since {when} UTC")
    return a


def heartbeat_stale(now: float, beat: float, heartbeat_s: float) -> bool:
    """No sign of life for longer than one heartbeat interval: time to ask the run's lock whether the writer lives.
    (A live writer beats every interval; a slow one still holds the lock, so this only decides when to look.)"""
    return now - beat > heartbeat_s


def _writer_alive(layout: Layout, a: Attempt) -> bool:
    lock = layout.lock_file(a.run_id)
    if not lock_is_held(lock):
        return False
    # The lock may be held by a newer attempt of the same run; then this one's writer is gone.
    try:
        holder = json.loads(lock.read_bytes() or b"{}")
    except (OSError, ValueError):
        return True
    return int(holder.get("attempt", a.attempt)) == a.attempt


# --- the snapshot -----------------------------------------------------------------------------------------------

def _listdir(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return [e for e in it if not e.name.startswith(".")]
    except FileNotFoundError:
        return []


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
    m1 = read_manifest(layout)
    now = time.time()
    live: list[Attempt] = []
    for e in _listdir(layout.live):
        if not e.is_dir():
            continue
        try:
            a = read_live_attempt(cache, layout, Path(e.path), now, problems)
        except FileNotFoundError:
            continue  # sealed and removed while we looked; the sealed listing below sees it
        if a is not None:
            live.append(a)
    sealed = _listdir(layout.sealed)
    studies = _listdir(layout.studies)
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
                    superseded, tuple(problems), m.seq)


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
    """attempt -> status of every attempt of one run, without DuckDB (the writer's door check, under the lock)."""
    for _ in range(8):
        m1 = read_manifest(layout)
        found: dict[int, str] = {}
        now = time.time()
        for e in _listdir(layout.live):
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
        n, misses = 1, 0
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
        if read_manifest(layout).seq == m1.seq:
            return found
    return found


def store_version(layout: Layout) -> str:
    """Changes whenever anything is written: folder mtimes, the manifest, and each live log's size and liveness."""
    bits = []
    for d in (layout.sealed, layout.live, layout.studies, layout.parts, layout.checkpoints):
        try:
            bits.append(str(os.stat(d).st_mtime_ns))
        except FileNotFoundError:
            bits.append("-")
    try:
        bits.append(str(os.stat(layout.manifest).st_mtime_ns))
    except FileNotFoundError:
        bits.append("-")
    now = time.time()
    for e in sorted(_listdir(layout.live), key=lambda e: e.name):
        try:
            size = os.stat(os.path.join(e.path, "epochs.jsonl")).st_size
            beat = os.stat(os.path.join(e.path, "heartbeat")).st_mtime
            hb = json.loads(Path(e.path, "start.json").read_bytes()).get("heartbeat_s", 5.0)
        except (OSError, ValueError):
            continue
        bits.append(f"{e.name}:{size}:{int(heartbeat_stale(now, beat, hb))}")
    return "|".join(bits)
