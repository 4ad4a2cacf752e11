"""`python -m engine check [--repair]`: find what a crash or a damaged disk left behind, and fix what can be fixed.

What it looks for, and what --repair does about it (every removal is reported, with why no data is lost):

* temp files (``.*.tmp``) older than a minute: unfinished writes; removed (the data they were meant to hold is
  still in the live log or the small files they were built from);
* attempts without a final status whose writer is gone: sealed into Parquet as ``interrupted`` (all their epochs
  kept), or with the status ``finish()`` had recorded when it was stopped while sealing;
* live folders of attempts that are already sealed: removed once the sealed epochs are checked to hold them all;
* damaged Parquet files: re-sealed from the live log when it still exists, else moved to ``quarantine/``;
* sealed files already merged into a compacted part, and leftovers of an interrupted compaction: removed;
* a damaged compaction manifest: rebuilt from the part files.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .annotations import read_annotations
from .errors import RunLockedError, StoreError
from .files import StoreFiles, check_parquet
from .layout import LIVE_RE, PART_RE, SEALED_RE, TMP_SUFFIX, atomic_write_json, try_lock
from .livelog import read_live_attempt
from .manifest import Manifest, PartEntry, part_index, read_manifest
from .snapshot import take_snapshot

TMP_AGE_S = 60.0


@dataclass(frozen=True)
class Finding:
    """One thing check found: what, where, and what --repair did (or would do) about it."""

    kind: str      # temp | unfinished | running | leftover | damaged | orphan | manifest
    path: str
    message: str
    action: str = ""   # filled in when --repair acted
    fixed: bool = False

    @property
    def is_problem(self) -> bool:
        return self.kind != "running" and not self.fixed

    def __str__(self) -> str:
        s = f"[{self.kind}] {self.path}: {self.message}"
        return s + (f"\n    -> {self.action}" if self.action else "")


@dataclass(frozen=True)
class CheckReport:
    findings: tuple[Finding, ...]
    repaired: bool

    @property
    def ok(self) -> bool:
        return not any(f.is_problem for f in self.findings)

    def __str__(self) -> str:
        if not self.findings:
            return "store is clean"
        return "\n".join(str(f) for f in self.findings)


def _quarantine(store: StoreFiles, path: Path) -> Path:
    dest = store.layout.quarantine / f"{time.strftime('%Y%m%dT%H%M%S')}-{path.name}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, dest)
    return dest


def _temp_files(store: StoreFiles) -> list[Path]:
    out = []
    for d in (store.layout.live, store.layout.sealed, store.layout.parts, store.layout.checkpoints,
              store.layout.studies, store.layout.annotations, store.layout.root):
        try:
            with os.scandir(d) as it:
                out += [Path(e.path) for e in it if e.name.startswith(".") and e.name.endswith(TMP_SUFFIX)]
        except FileNotFoundError:
            pass
    return out


def check(store: StoreFiles, repair: bool = False, tmp_age_s: float = TMP_AGE_S) -> CheckReport:
    layout = store.layout
    findings: list[Finding] = []
    now = time.time()

    # --- compaction leftovers and the manifest (under the compaction lock when repairing) -------------------------
    comp_lock = None
    if repair:
        try:
            comp_lock = try_lock(layout.compaction_lock, "the store's compaction", {"pid": os.getpid()}, retries=0)
        except RunLockedError:
            findings.append(Finding("running", str(layout.compaction_lock), "a compaction is running; its files "
                                    "were left alone"))
    try:
        m = read_manifest(layout)
        if m.problem:
            f = Finding("manifest", str(layout.manifest), m.problem)
            if comp_lock is not None:
                m, action = _rebuild_manifest(store)
                f = Finding(f.kind, f.path, f.message, action, True)
            findings.append(f)
        if m.absorbed:
            f = Finding("leftover", str(layout.sealed), f"{len(m.absorbed)} small files merged by an interrupted "
                        "compaction are still present (readers already skip them)")
            if comp_lock is not None:
                from .compaction import finish_previous
                notes: list[str] = []
                m = finish_previous(store, m, notes)
                f = Finding(f.kind, f.path, f.message, "finished the compaction: " + "; ".join(notes), True)
            findings.append(f)
        listed = {p.runs for p in m.parts} | {p.epochs for p in m.parts}
        try:
            part_files = [e for e in os.scandir(layout.parts) if PART_RE.match(e.name) and e.name not in listed]
        except FileNotFoundError:
            part_files = []
        for e in part_files:
            f = Finding("leftover", e.path, "part file not in the manifest (an interrupted compaction); ignored "
                        "by readers, its data is in the files it was built from")
            if comp_lock is not None:
                os.unlink(e.path)
                f = Finding(f.kind, f.path, f.message, "removed (no data lost: see above)", True)
            findings.append(f)

        # --- temp files ---------------------------------------------------------------------------------------------
        for p in _temp_files(store):
            try:
                age = now - p.stat().st_mtime
            except FileNotFoundError:
                continue
            if age < tmp_age_s:
                findings.append(Finding("running", str(p), f"temp file {age:.0f} s old: a write in progress"))
                continue
            if p.parent == layout.parts and comp_lock is None and repair:
                continue
            f = Finding("temp", str(p), f"unfinished write from {age:.0f} s ago; never visible to readers")
            if repair:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                f = Finding(f.kind, f.path, f.message, "removed (it held no committed data: the live log or the "
                                                       "source files still have it)", True)
            findings.append(f)

        # --- damaged, orphan and leftover files (before live attempts: a damaged sealed file whose live log
        # still exists is moved aside here and re-sealed from the log below) ------------------------------------
        snap = take_snapshot(store.cache, layout)
        for p in snap.problems:
            if p.kind == "bad_line":
                findings.append(Finding("damaged", p.path, p.message + " (the other lines are kept)"))
                continue
            if p.kind == "manifest":
                continue
            findings.append(_fix_file(store, p, repair, comp_lock is not None))

        # --- live attempts --------------------------------------------------------------------------------------
        committed = _committed_keys(store, read_manifest(layout))
        try:
            live_dirs = [Path(e.path) for e in os.scandir(layout.live) if e.is_dir() and LIVE_RE.match(e.name)]
        except FileNotFoundError:
            live_dirs = []
        deleted = read_annotations(store.cache, layout).deleted
        for d in sorted(live_dirs):
            mm = LIVE_RE.match(d.name)
            if int(mm.group(2)) <= deleted.get(mm.group(1), 0):
                continue  # a deleted run's files: hidden from readers, removed by the next compaction
            findings.extend(_check_live(store, d, committed, repair, now))
    finally:
        if comp_lock is not None:
            comp_lock.release()
    return CheckReport(tuple(findings), repair)


def _committed_keys(store: StoreFiles, m: Manifest) -> dict[tuple[str, int], str]:
    """(run_id, attempt) -> the Parquet file holding its epochs, for every sealed or compacted attempt."""
    layout = store.layout
    keys: dict[tuple[str, int], str] = {}
    for p in m.parts:
        rp = layout.parts / p.runs
        if check_parquet(store.cache, rp).ok:
            for k in part_index(store.cache, rp):
                keys[k] = str(layout.parts / p.epochs)
    try:
        for e in os.scandir(layout.sealed):
            mm = SEALED_RE.match(e.name)
            if mm and mm.group(3) == "run" and check_parquet(store.cache, Path(e.path)).ok:
                key = (mm.group(1), int(mm.group(2)))
                keys.setdefault(key, str(layout.sealed_epochs(*key)))
    except FileNotFoundError:
        pass
    return keys


def _sealed_epoch_count(store: StoreFiles, path: str, key: tuple[str, int]) -> int | None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    try:
        if not check_parquet(store.cache, Path(path)).ok:
            return None
        t = pq.read_table(path, columns=["run_id", "attempt"])
    except (OSError, FileNotFoundError):
        return None
    mask = pc.and_(pc.equal(t.column("run_id"), key[0]), pc.equal(t.column("attempt"), key[1]))
    return int(pc.sum(mask.cast("int64")).as_py() or 0)


def _check_live(store: StoreFiles, d: Path, committed: dict, repair: bool, now: float) -> list[Finding]:
    from .writer import seal_abandoned

    layout = store.layout
    problems: list = []
    try:
        a = read_live_attempt(store.cache, layout, d, now, problems)
    except FileNotFoundError:
        return []  # sealed meanwhile
    if a is None:
        f = Finding("damaged", str(d), "live folder without a readable start record")
        if repair:
            dest = _quarantine(store, d)
            f = Finding(f.kind, f.path, f.message, f"moved to {dest} (kept for inspection)", True)
        return [f]
    key = (a.run_id, a.attempt)
    if key in committed:
        n_sealed = _sealed_epoch_count(store, committed[key], key)
        f = Finding("leftover", str(d), f"attempt {a.attempt} of run {a.run_id} is sealed but its live folder "
                    f"remains (finish was stopped before cleaning up); {len(a.epochs)} epochs in the log, "
                    f"{n_sealed} sealed")
        if repair:
            if n_sealed is not None and n_sealed >= len(a.epochs):
                shutil.rmtree(d, ignore_errors=True)
                f = Finding(f.kind, f.path, f.message, "removed: every epoch of its log is in the sealed file", True)
            else:
                f = Finding(f.kind, f.path, f.message, "kept: the sealed file holds fewer epochs than the log; "
                            "inspect it by hand")
        return [f]
    if a.status == "running":
        return [Finding("running", str(d), f"run {a.run_id} attempt {a.attempt} is being written "
                        f"({len(a.epochs)} epochs so far)")]
    why = ("finish() recorded its result but was stopped while sealing" if a.status != "interrupted"
           else a.error or "its writer is gone")
    f = Finding("unfinished", str(d), f"run {a.run_id} attempt {a.attempt} has no sealed final status: {why}; "
                f"{len(a.epochs)} epochs in the live log")
    if not repair:
        return [f]
    try:
        sealed = seal_abandoned(store, d, "interrupted", a.error or "its writer is gone", "check --repair")
    except RunLockedError:
        return [Finding(f.kind, f.path, f.message, "left alone: a process holds the run's lock right now")]
    except StoreError as e:
        return [Finding(f.kind, f.path, f.message, f"not sealed: {e}")]
    if sealed is None:
        return [f]
    return [Finding(f.kind, f.path, f.message, f"sealed as {sealed.status} with all {len(sealed.epochs)} epochs",
                    True)]


def _fix_file(store: StoreFiles, p, repair: bool, have_comp_lock: bool) -> Finding:
    layout = store.layout
    path = Path(p.path)
    f = Finding(p.kind if p.kind in ("orphan", "leftover", "damaged") else "damaged", p.path, p.message)
    if not repair or not path.exists():
        return f
    mm = SEALED_RE.match(path.name)
    if p.kind == "leftover" and mm and path.parent == layout.sealed:
        path.unlink()
        return Finding(f.kind, f.path, f.message, "removed: the same attempt is in a compacted part", True)
    if mm and path.parent == layout.sealed and p.kind == "damaged":
        live = layout.live_dir(mm.group(1), int(mm.group(2)))
        if live.exists():
            # the live log still has the data: drop the bad file; the attempt reads from the log until the
            # live-attempt repair (or the next check) seals it again
            dest = _quarantine(store, path)
            return Finding(f.kind, f.path, f.message, f"moved to {dest}; the attempt's live log still holds its "
                           "data and is sealed again from it below", True)
    if PART_RE.match(path.name) and path.parent == layout.parts:
        if not have_comp_lock:
            return Finding(f.kind, f.path, f.message, "left alone: a compaction is running")
        m = read_manifest(layout)
        entry = next((e for e in m.parts if path.name in (e.runs, e.epochs)), None)
        dest = _quarantine(store, path)
        if entry is not None:
            atomic_write_json(layout.manifest, Manifest(m.seq + 1, m.generation,
                                                        tuple(e for e in m.parts if e is not entry)).to_json(),
                              store.durable)
            other = layout.parts / (entry.epochs if path.name == entry.runs else entry.runs)
            if other.exists():
                _quarantine(store, other)
        return Finding(f.kind, f.path, f.message, f"moved to {dest} with its companion part; THE "
                       f"{entry.n_runs if entry else '?'} RUNS IN IT ARE NO LONGER IN THE STORE (nothing was "
                       "deleted: restore the file from a backup, or retrain them)", True)
    dest = _quarantine(store, path)
    return Finding(f.kind, f.path, f.message, f"moved to {dest} (nothing deleted; the attempt can be retried)", True)


def _rebuild_manifest(store: StoreFiles) -> tuple[Manifest, str]:
    """Newest generation first; a part is taken only if it adds attempts no newer part holds (merged parts are
    supersets of what they replaced, so leftovers of a merge are skipped)."""
    layout = store.layout
    gens: dict[int, dict[str, str]] = {}
    for e in os.scandir(layout.parts):
        mm = PART_RE.match(e.name)
        if mm:
            gens.setdefault(int(mm.group(1)), {})[mm.group(2)] = e.name
    taken: list[PartEntry] = []
    seen: set = set()
    skipped = []
    for g in sorted(gens, reverse=True):
        pair = gens[g]
        if set(pair) != {"runs", "epochs"}:
            continue
        rp = layout.parts / pair["runs"]
        if not check_parquet(store.cache, rp).ok:
            skipped.append(pair["runs"])
            continue
        keys = set(part_index(store.cache, rp))
        if keys & seen:
            skipped.append(pair["runs"])
            continue
        seen |= keys
        n_ep = check_parquet(store.cache, layout.parts / pair["epochs"]).num_rows
        taken.append(PartEntry(pair["runs"], pair["epochs"], len(keys), n_ep))
    m = Manifest(int(time.time()), max(gens, default=0), tuple(reversed(taken)))
    atomic_write_json(layout.manifest, m.to_json(), store.durable)
    return m, (f"rebuilt from {len(taken)} part(s) holding {len(seen)} attempts"
               + (f"; skipped {', '.join(skipped)}" if skipped else ""))
