"""Where everything lives under the store root, how files are named, and the two primitives every write uses:
atomic file replacement and the per-run lock.

    <root>/
      locks/<run_id>.lock                      flock target of the run's writer; holds the holder's pid/host as JSON
      locks/compaction.lock                    flock target of the one compaction allowed at a time
      live/<run_id>.<attempt>/                 an attempt being written, or whose writer died before sealing it
          start.json                           config, meta, start time, heartbeat interval (written before the
                                               folder appears: the folder is renamed into place complete)
          epochs.jsonl                         one JSON line per logged epoch, appended with one write() each
          heartbeat                            its mtime is touched every heartbeat_s by the writer's thread
      sealed/<run_id>.<attempt>.epochs.parquet the sealed attempt's epochs (written first)
      sealed/<run_id>.<attempt>.run.parquet    the sealed attempt's run row (written last: the commit point)
      parts/MANIFEST.json                      which compacted part files are current (atomically replaced)
      parts/g<generation>-{runs,epochs}.parquet  compacted parts: many sealed attempts merged
      checkpoints/<run_id>.<attempt>.pt        small checkpoint bytes of an attempt, written atomically
      studies/*.parquet                        study membership rows (study, run_id), append-only
      annotations/<time_ns>-<pid>-<hex>.json   exclude/tag/note/delete records, one per action (annotations.py)
      quarantine/                              damaged files that check --repair moved aside (never deleted)

Every file is written to a dot-named temp file in its final folder and then ``os.replace``d into place, so a
reader sees either the old state or the new file complete. Readers skip names that start with a dot.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import socket
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from .errors import RunLockedError, StoreValidationError

FORMAT_VERSION = 1

RUN_ID_RE = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
SEALED_RE = re.compile(r"^([0-9A-Za-z_-]{1,64})\.(\d+)\.(run|epochs)\.parquet$")
LIVE_RE = re.compile(r"^([0-9A-Za-z_-]{1,64})\.(\d+)$")
CHECKPOINT_RE = re.compile(r"^([0-9A-Za-z_-]{1,64})\.(\d+)\.pt$")
PART_RE = re.compile(r"^g(\d+)-(runs|epochs)\.parquet$")
TMP_SUFFIX = ".tmp"


def check_run_id(run_id: str) -> str:
    """Run ids become file names, so only a safe alphabet is allowed."""
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        raise StoreValidationError(
            f"run id {run_id!r} is not allowed: use 1-64 characters from 0-9 A-Z a-z _ - "
            "(RunConfig.run_id gives 16 hex digits)")
    return run_id


def attempt_key(run_id: str, attempt: int) -> str:
    return f"{run_id}.{attempt:04d}"


@dataclass(frozen=True)
class Layout:
    """All paths of one store root; pure path arithmetic, touches nothing."""

    root: Path

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def live(self) -> Path:
        return self.root / "live"

    @property
    def sealed(self) -> Path:
        return self.root / "sealed"

    @property
    def parts(self) -> Path:
        return self.root / "parts"

    @property
    def manifest(self) -> Path:
        return self.root / "parts" / "MANIFEST.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def studies(self) -> Path:
        return self.root / "studies"

    @property
    def annotations(self) -> Path:
        return self.root / "annotations"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    def lock_file(self, run_id: str) -> Path:
        return self.locks / f"{run_id}.lock"

    @property
    def compaction_lock(self) -> Path:
        # Dot-prefixed: "compaction" is a legal run id, but no run id starts with a dot, so the names cannot clash.
        return self.locks / ".compaction.lock"

    def live_dir(self, run_id: str, attempt: int) -> Path:
        return self.live / attempt_key(run_id, attempt)

    def sealed_run(self, run_id: str, attempt: int) -> Path:
        return self.sealed / f"{attempt_key(run_id, attempt)}.run.parquet"

    def sealed_epochs(self, run_id: str, attempt: int) -> Path:
        return self.sealed / f"{attempt_key(run_id, attempt)}.epochs.parquet"

    def checkpoint(self, run_id: str, attempt: int) -> Path:
        return self.checkpoints / f"{attempt_key(run_id, attempt)}.pt"

    def part(self, generation: int, kind: str) -> Path:
        return self.parts / f"g{generation:06d}-{kind}.parquet"


def tmp_path_for(final: Path) -> Path:
    """A temp name in the final folder (same file system, so os.replace is atomic); dot-prefixed so readers skip it."""
    return final.parent / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"


def fsync_dir(path: Path) -> None:
    # Makes the rename itself durable against power loss; harmless (and skipped) where directories cannot be opened.
    with suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(final: Path, data: bytes, durable: bool = True) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(final)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(final.parent)


def atomic_write_json(final: Path, obj: object, durable: bool = True) -> None:
    atomic_write_bytes(final, json.dumps(obj, sort_keys=True, allow_nan=False).encode(), durable)


def atomic_write_table(final: Path, table, durable: bool = True, compression: str = "snappy",
                       row_group_size: int | None = None) -> None:
    """Write a pyarrow table as Parquet to a temp file, then os.replace it into place."""
    import pyarrow.parquet as pq

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(final)
    try:
        pq.write_table(table, tmp, compression=compression, row_group_size=row_group_size)
        if durable:
            fsync_file(tmp)
        os.replace(tmp, final)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(final.parent)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- locks -------------------------------------------------------------------------------------------------------

@dataclass
class HeldLock:
    """An exclusive flock on a lock file; the OS releases it when the process dies, however it dies."""

    path: Path
    fd: int

    def write_holder(self, info: dict) -> None:
        """Record who holds the lock so a second writer's error message can name it."""
        data = json.dumps(info).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        if self.fd >= 0:
            with suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            with suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def _read_holder(fd: int) -> dict:
    with suppress(OSError, ValueError):
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw.decode() or "{}")
    return {}


def try_lock(path: Path, what: str, holder_info: dict | None = None, retries: int = 3) -> HeldLock:
    """Take an exclusive non-blocking lock or raise RunLockedError naming the holder.

    Readers probe a stale run's lock for a microsecond (to tell a dead writer from a slow one); the few short retries
    keep such a probe from being mistaken for a live writer, while a real holder still fails the call within ~15 ms.
    """
    import time

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    for i in range(retries + 1):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if i == retries:
                holder = _read_holder(fd)
                os.close(fd)
                who = (f"pid {holder.get('pid', '?')} on host {holder.get('hostname', '?')}"
                       + (f" (attempt {holder['attempt']})" if "attempt" in holder else ""))
                raise RunLockedError(
                    f"{what} is being written by another live process: {who}. Wait for it to finish, or stop that "
                    f"process; if it is gone the lock is released by the OS. (lock file: {path})") from None
            time.sleep(0.005)
    held = HeldLock(path, fd)
    if holder_info is not None:
        held.write_holder(holder_info)
    return held


def lock_is_held(path: Path) -> bool:
    """True when some process holds the lock file's flock now. A missing lock file means nobody holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the shared probe lock at once
    return False


def holder_info(run_id: str, attempt: int) -> dict:
    return {"run_id": run_id, "attempt": attempt, "pid": os.getpid(), "hostname": socket.gethostname()}
