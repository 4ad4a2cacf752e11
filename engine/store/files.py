"""The store's files as a reader meets them: the small context every store module works with (root, durability,
memo caches), what is wrong with a file (``Problem``), and cheap, memoised checks and reads of Parquet files.

A file that passes the cheap check (magic bytes, footer) but fails when read is marked damaged here, so the next
snapshot leaves it out and one bad file never hides the rest.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .layout import Layout


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
class StoreFiles:
    """What the store's modules need of a store: where it is, whether writes are fsynced, and the memo caches.
    RunStore is one; the writer, the reader, compaction and check take this rather than the whole RunStore."""

    root: Path
    durable: bool = True
    cache: ReaderCache = field(default_factory=ReaderCache, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def layout(self) -> Layout:
        return Layout(self.root)


def listdir(path: Path) -> list[os.DirEntry]:
    """The entries of a store folder, without dot-named temp files; [] when the folder does not exist yet."""
    try:
        with os.scandir(path) as it:
            return [e for e in it if not e.name.startswith(".")]
    except FileNotFoundError:
        return []


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

