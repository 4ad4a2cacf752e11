"""Merging sealed attempts' small Parquet files into a few large part files, crash-safe at every step.

Steps, each one safe to be killed after:

1. write ``parts/g<N>-runs.parquet`` and ``parts/g<N>-epochs.parquet`` (temp file + os.replace each);
   a part not named in the manifest is invisible to readers;
2. commit: replace ``parts/MANIFEST.json`` with the new part list and the names of the small files it
   "absorbed"; readers now read the part and skip those names, so nothing is counted twice;
3. delete the absorbed small files and any parts the new one replaced;
4. replace the manifest again with an empty absorbed list.

A compaction killed anywhere is finished by the next one (or by ``check --repair``): leftovers of step 3 are
deleted, parts missing from the manifest are removed (their data is still in the files they were built from).
Only one compaction runs at a time (``locks/.compaction.lock``); a second one returns at once.

Deleted attempts (annotations.py) are dropped here: their sealed files, live folders and checkpoints are removed
(readers already skip them), and every part holding one of their rows is merged again without it.
"""
from __future__ import annotations

import os
import secrets
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from .errors import RunLockedError, StoreError
from .files import StoreFiles, check_parquet
from .annotations import read_annotations
from .layout import (CHECKPOINT_RE, LIVE_RE, PART_RE, SEALED_RE, TMP_SUFFIX, atomic_write_json, fsync_dir, fsync_file,
                     tmp_path_for, try_lock)
from .manifest import Manifest, PartEntry, part_index, read_manifest

MAX_PARTS = 8            # above this many parts, the smallest are merged together
MERGE_DOWN_TO = 4
# Small row groups let DuckDB skip groups by min/max of run_id (parts are sorted by run id) when fetching a few
# runs' curves; snappy decodes faster than zstd, and decoding dominates a scan on two cores.
ROW_GROUP_ROWS = 16_384
COMPRESSION = "snappy"


@dataclass(frozen=True)
class CompactionResult:
    """What one compaction did; ``notes`` name every file it removed and why that lost no data."""

    done: bool
    merged_attempts: int = 0
    merged_parts: int = 0
    generation: int | None = None
    notes: tuple[str, ...] = ()
    skipped: str | None = None


def _delete(path: Path, notes: list[str], why: str) -> None:
    try:
        if path.is_dir():
            import shutil
            shutil.rmtree(path)
        else:
            path.unlink()
        notes.append(f"removed {path}: {why}")
    except FileNotFoundError:
        pass


def finish_previous(store: StoreFiles, m: Manifest, notes: list[str]) -> Manifest:
    """Complete a compaction that was killed part way. Caller holds the compaction lock."""
    layout = store.layout
    for name in sorted(m.absorbed):
        _delete(layout.sealed / name, notes, "merged into a compacted part by an interrupted compaction")
    listed = {p.runs for p in m.parts} | {p.epochs for p in m.parts}
    try:
        entries = list(os.scandir(layout.parts))
    except FileNotFoundError:
        entries = []
    for e in entries:
        if e.name.endswith(TMP_SUFFIX):
            _delete(Path(e.path), notes, "temp file of an interrupted compaction (never committed)")
        elif PART_RE.match(e.name) and e.name not in listed:
            _delete(Path(e.path), notes, "part not in the manifest (left by an interrupted compaction; "
                                         "its data is in the files it was built from)")
    if m.absorbed:
        m = Manifest(m.seq + 1, m.generation, m.parts, frozenset())
        atomic_write_json(layout.manifest, m.to_json(), store.durable)
    return m


def _conform(table, schema):
    import pyarrow as pa
    cols = []
    for f in schema:
        i = table.schema.get_field_index(f.name)
        if i < 0:
            cols.append(pa.nulls(table.num_rows, f.type))
        else:
            c = table.column(i)
            cols.append(c if c.type == f.type else c.cast(f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _keep_mask(table, deleted: dict[str, int]):
    """Rows of a run or epochs table whose attempt is not deleted (attempt > the run's deleted-through number)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    ids = list(deleted)
    idx = pc.index_in(table.column("run_id"), value_set=pa.array(ids, pa.string()))
    through = pc.take(pa.array([deleted[r] for r in ids], pa.int64()), idx)
    gone = pc.fill_null(pc.less_equal(table.column("attempt").cast(pa.int64()), through), False)
    return pc.invert(gone)


def merge_files(store: StoreFiles, files: list[Path], out: Path, deleted: dict[str, int] | None = None) -> int:
    """Stream several Parquet files into one (union of columns, missing = null), atomically, leaving out rows of
    ``deleted`` attempts (run_id -> deleted-through attempt). Returns rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = []
    for f in files:
        c = check_parquet(store.cache, f)
        if not c.ok:
            raise StoreError(f"cannot compact: {f} is damaged ({c.reason}); run `python -m engine check --repair`")
        schemas.append(c.schema)
    schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(out)
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression=COMPRESSION) as w:
            buf: list = []
            n = 0
            for f in files:
                # a sealed attempt's file is small: read it whole; a part may be large: stream its row groups
                pieces = ([pq.ParquetFile(f).read()] if f.parent.name == "sealed" else
                          (pa.Table.from_batches([b]) for b in pq.ParquetFile(f).iter_batches(ROW_GROUP_ROWS)))
                for t in pieces:
                    if deleted:
                        t = t.filter(_keep_mask(t, deleted))
                    buf.append(_conform(t, schema))
                    n += t.num_rows
                    # Buffer small inputs so the part gets full row groups, not one tiny group per input file.
                    if n >= ROW_GROUP_ROWS:
                        t = pa.concat_tables(buf)
                        full = (n // ROW_GROUP_ROWS) * ROW_GROUP_ROWS
                        w.write_table(t.slice(0, full), row_group_size=ROW_GROUP_ROWS)
                        rows += full
                        buf, n = [t.slice(full)], n - full
            if n:
                w.write_table(pa.concat_tables(buf), row_group_size=ROW_GROUP_ROWS)
                rows += n
        if store.durable:
            fsync_file(tmp)
        written = pq.read_metadata(tmp).num_rows
        if written != rows:
            raise StoreError(f"compaction wrote {written} rows to {out.name} but read {rows}; nothing was changed")
        os.replace(tmp, out)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise
    return rows


def _sealed_pairs(store: StoreFiles, m: Manifest) -> list[tuple[Path, Path]]:
    """Sealed attempts with a healthy run row and epochs file that no part holds yet."""
    layout = store.layout
    part_keys: set = set()
    for p in m.parts:
        part_keys |= set(part_index(store.cache, layout.parts / p.runs))
    runs: dict = {}
    eps: dict = {}
    try:
        entries = list(os.scandir(layout.sealed))
    except FileNotFoundError:
        return []
    for e in entries:
        mm = SEALED_RE.match(e.name)
        if not mm or e.name in m.absorbed:
            continue
        key = (mm.group(1), int(mm.group(2)))
        if key in part_keys:
            continue  # a leftover copy: check --repair deals with it
        try:
            ok = check_parquet(store.cache, Path(e.path), e.stat()).ok
        except FileNotFoundError:
            continue
        if ok:
            (runs if mm.group(3) == "run" else eps)[key] = Path(e.path)
    return [(runs[k], eps[k]) for k in sorted(runs) if k in eps]


def compact(store: StoreFiles, full: bool = False) -> CompactionResult:
    """Merge sealed attempts into a new part; ``full`` merges every part into one as well."""
    layout = store.layout
    try:
        lock = try_lock(layout.compaction_lock, "the store's compaction", {"pid": os.getpid()}, retries=0)
    except RunLockedError:
        return CompactionResult(False, skipped="another compaction is running")
    notes: list[str] = []
    try:
        m = read_manifest(layout)
        if m.problem:
            raise StoreError(m.problem)
        m = finish_previous(store, m, notes)
        deleted = read_annotations(store.cache, layout).deleted
        removed = _remove_deleted(store, deleted, notes)
        pairs = _sealed_pairs(store, m)
        parts = list(m.parts)
        # parts that hold deleted attempts are rewritten without them: that is what frees a deletion's disk
        dirty = [p for p in parts if deleted and any(
            a <= deleted.get(r, 0) for r, a in part_index(store.cache, layout.parts / p.runs))]
        if full:
            merge = parts
        elif len(parts) + (1 if pairs else 0) > MAX_PARTS:
            merge = sorted(parts, key=lambda p: p.n_epochs)[: len(parts) + 1 - MERGE_DOWN_TO]
        else:
            merge = []
        merge += [p for p in dirty if p not in merge]
        _compact_studies(store, notes)
        if not pairs and len(merge) < 2 and not dirty:
            return CompactionResult(removed > 0, notes=tuple(notes),
                                    skipped=None if removed else "nothing to compact")
        gen = m.generation + 1
        run_inputs = [layout.parts / p.runs for p in merge] + [r for r, _ in pairs]
        ep_inputs = [layout.parts / p.epochs for p in merge] + [e for _, e in pairs]
        n_runs = merge_files(store, run_inputs, layout.part(gen, "runs"), deleted)
        n_epochs = merge_files(store, ep_inputs, layout.part(gen, "epochs"), deleted)
        if store.durable:
            fsync_dir(layout.parts)
        new = PartEntry(layout.part(gen, "runs").name, layout.part(gen, "epochs").name, n_runs, n_epochs)
        keep = [p for p in parts if p not in merge]
        if n_runs == 0:  # everything merged was deleted: no new part (finish_previous removes its files)
            new = None
        absorbed = frozenset(f.name for pair in pairs for f in pair)
        committed = Manifest(m.seq + 1, gen, tuple(keep + ([new] if new else [])), absorbed)
        atomic_write_json(layout.manifest, committed.to_json(), store.durable)  # the commit point
        for f in (f for pair in pairs for f in pair):
            with suppress(FileNotFoundError):
                f.unlink()
        for p in merge:
            for name in (p.runs, p.epochs):
                with suppress(FileNotFoundError):
                    (layout.parts / name).unlink()
        if new is None:
            for kind in ("runs", "epochs"):
                with suppress(FileNotFoundError):
                    layout.part(gen, kind).unlink()
        atomic_write_json(layout.manifest, Manifest(committed.seq + 1, gen, committed.parts).to_json(),
                          store.durable)
        return CompactionResult(True, len(pairs), len(merge), gen, tuple(notes))
    finally:
        lock.release()


def _remove_deleted(store: StoreFiles, deleted: dict[str, int], notes: list[str]) -> int:
    """Remove the sealed files, live folders and checkpoints of deleted attempts. Readers already skip them (the
    delete record came first), so no manifest step is needed. Returns how many were removed."""
    if not deleted:
        return 0
    layout = store.layout
    n = 0
    for folder, pattern in ((layout.sealed, SEALED_RE), (layout.live, LIVE_RE), (layout.checkpoints, CHECKPOINT_RE)):
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for e in entries:
            mm = pattern.match(e.name)
            if mm and int(mm.group(2)) <= deleted.get(mm.group(1), 0):
                _delete(Path(e.path), notes, "the run was deleted")
                n += 1
    return n


def _compact_studies(store: StoreFiles, notes: list[str]) -> None:
    """Membership rows are idempotent, so merging needs no manifest: write the union, then drop the inputs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .layout import atomic_write_table

    layout = store.layout
    try:
        files = sorted(Path(e.path) for e in os.scandir(layout.studies)
                       if e.name.endswith(".parquet") and not e.name.startswith("."))
    except FileNotFoundError:
        return
    healthy = [f for f in files if check_parquet(store.cache, f).ok]
    if len(healthy) < 16:
        return
    tables = [pq.read_table(f, columns=["study", "run_id", "added_at"]) for f in healthy]
    t = pa.concat_tables(tables, promote_options="permissive")
    seen: dict = {}
    for s, r, a in zip(t.column("study").to_pylist(), t.column("run_id").to_pylist(),
                       t.column("added_at").to_pylist()):
        if (s, r) not in seen:
            seen[(s, r)] = a
    out = pa.table({"study": [k[0] for k in seen], "run_id": [k[1] for k in seen],
                    "added_at": pa.array(list(seen.values()), t.schema.field("added_at").type)})
    atomic_write_table(layout.studies / f"merged-{time.time_ns()}-{secrets.token_hex(3)}.parquet", out,
                       store.durable)
    for f in healthy:
        with suppress(FileNotFoundError):
            f.unlink()
