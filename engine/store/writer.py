"""Writing one attempt of a run: the lock, the append-only epoch log, the heartbeat, and sealing into Parquet.

Durability model (process crashes, SIGKILL included; no fsync on the hot path):

* ``log_epoch`` appends one JSON line with a single ``write()`` to a file opened O_APPEND. Once it returns the
  bytes are in the OS page cache, which survives the death of the process. A kill in the middle of the write can
  leave a torn last line; readers only take complete lines.
* ``finish`` first records its result in ``final.json`` (so a kill while sealing cannot lose the status), then
  writes the epochs and the run row as Parquet (temp file + ``os.replace``; the run row last, as the commit
  point), then removes the live folder and releases the lock.
* The lock is an ``flock`` on ``locks/<run_id>.lock``: the OS drops it when the process dies, so a dead writer
  never blocks a retry, and a live one always blocks a second writer.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
import time
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

from engine.faults import disk_full_point, pause_point

from .errors import RunAlreadyFinishedError, StoreError, StoreValidationError
from .layout import (LIVE_RE, HeldLock, atomic_write_bytes, atomic_write_json, atomic_write_table, check_run_id,
                     holder_info, try_lock)
from .files import StoreFiles
from .livelog import EPOCHS, FINAL, HEARTBEAT, START, encode_epoch_line, read_live_attempt
from .snapshot import deleted_through, existing_attempts
from .schema import (CACHED_STATUSES, FINISH_STATUSES, MAX_METRICS, RESERVED_METRIC_NAMES, Attempt, check_config,
                     check_meta, check_name, check_summary, split_value)


class RunCancelled(Exception):
    """Raise inside a ``with store.open_run(...)`` block (e.g. from a SIGTERM handler) to end the run as cancelled."""


@contextmanager
def sigterm_cancels() -> Iterator[None]:
    """Within this block SIGTERM raises RunCancelled in the main thread, so a ``with store.open_run(...)`` block
    records ``cancelled`` instead of the run turning ``interrupted`` when its process is stopped politely."""
    def handler(signum, frame):
        raise RunCancelled("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class RunWriter:
    """The open attempt of one run. Not thread-safe: one training loop logs to it."""

    def __init__(self, store: StoreFiles, attempt: Attempt, lock: HeldLock, live_dir: Path, log_fd: int) -> None:
        self._store = store
        self._attempt = attempt
        self._lock = lock
        self._live_dir = live_dir
        self._fd = log_fd
        self._last_epoch: int | None = None
        self._names: set[str] = set()
        self._status: str | None = None
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name=f"heartbeat-{attempt.run_id}", daemon=True)
        self._beat.start()

    # --- identity ---------------------------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self._attempt.run_id

    @property
    def attempt(self) -> int:
        return self._attempt.attempt

    @property
    def status(self) -> str:
        return self._status or "running"

    @property
    def n_epochs(self) -> int:
        return len(self._attempt.epochs)

    # --- heartbeat --------------------------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        beat = self._live_dir / HEARTBEAT
        while not self._stop.wait(self._attempt.heartbeat_s):
            with suppress(OSError):
                os.utime(beat)

    # --- logging ----------------------------------------------------------------------------------------------
    def log_epoch(self, epoch: int, metrics: dict[str, float | int | None]) -> None:
        """Append one epoch; durable against SIGKILL once this returns. Epochs must increase."""
        if self._status is not None:
            raise StoreError(f"run {self.run_id} attempt {self.attempt} is already finished ({self._status}); "
                             "open a new run to log more epochs")
        if isinstance(epoch, bool) or not hasattr(epoch, "__index__"):
            raise StoreValidationError(f"epoch must be an integer, got {epoch!r}")
        epoch = int(epoch)
        if epoch < 0 or (self._last_epoch is not None and epoch <= self._last_epoch):
            raise StoreValidationError(
                f"run {self.run_id}: epoch {epoch} must be >= 0 and after the last logged epoch "
                f"({self._last_epoch}); each epoch is logged once, in order")
        if not isinstance(metrics, dict):
            raise StoreValidationError(f"metrics must be a dict of name -> number, got {type(metrics).__name__}")
        vals: dict[str, float | None] = {}
        nonfinite: dict[str, str] = {}
        for name, v in metrics.items():
            if name not in self._names:
                check_name(name, "metric", RESERVED_METRIC_NAMES)
                if len(self._names) >= MAX_METRICS:
                    raise StoreValidationError(f"run {self.run_id}: more than {MAX_METRICS} metric names")
                self._names.add(name)
            # fast path: a finite float (inf - inf and nan - nan are nan, which is != 0.0)
            if type(v) is float and v - v == 0.0:
                vals[name] = v
                continue
            num, marker = split_value(name, v, "metric")
            vals[name] = num
            if marker:
                nonfinite[name] = marker
        t = time.time() - self._attempt.started_at
        data = encode_epoch_line(epoch, t, vals, nonfinite)
        disk_full_point("log-epoch", (self.run_id,))
        # one write() per record; loop only in the (never seen on local disks) case of a short write
        while data:
            n = os.write(self._fd, data)
            data = data[n:]
        self._attempt.epochs.append((epoch, t, vals, nonfinite))
        self._last_epoch = epoch

    # --- finishing --------------------------------------------------------------------------------------------
    def finish(self, status: str, summary: dict | None = None, checkpoint: bytes | None = None,
               error: str | None = None) -> None:
        """Seal the attempt with a terminal status; it can never be overwritten afterwards."""
        if self._status is not None:
            raise StoreError(f"run {self.run_id} attempt {self.attempt} already finished as {self._status}; "
                             "a terminal status is never overwritten")
        if status not in FINISH_STATUSES:
            raise StoreValidationError(f"finish status must be one of {', '.join(FINISH_STATUSES)}, got {status!r}"
                                       " (running and interrupted are set by the store, not by the caller)")
        s = check_summary(summary)
        if checkpoint is not None and not isinstance(checkpoint, (bytes, bytearray, memoryview)):
            raise StoreValidationError(f"checkpoint must be bytes (torch.save into io.BytesIO), "
                                       f"got {type(checkpoint).__name__}")
        if error is not None:
            error = str(error)[:20_000]
        store = self._store
        layout = store.layout
        a = self._attempt
        self._stop.set()
        ended = time.time()
        try:  # a failed write (a full disk) still releases the lock: the attempt is then left for check --repair
            if checkpoint is not None:
                atomic_write_bytes(layout.checkpoint(a.run_id, a.attempt), bytes(checkpoint), store.durable)
            a.status, a.error, a.summary = status, error, s
            a.ended_at, a.heartbeat_at, a.has_checkpoint = ended, ended, checkpoint is not None
            # The result first (cheap, no fsync): from here on a kill cannot turn this run into "interrupted".
            atomic_write_json(self._live_dir / FINAL, final_record(a), durable=False)
            self._status = status
            pause_point("sealing")
            seal(store, a)
        finally:
            self._close()
        self._beat.join(timeout=1.0)

    def _close(self) -> None:
        with suppress(OSError):
            os.close(self._fd)
        self._fd = -1
        self._lock.release()

    # --- context manager ------------------------------------------------------------------------------------------
    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._status is not None:
            return False
        try:
            if exc_type is None:
                self.finish("failed", error="the with-block ended without writer.finish(...); "
                                            "a run is only cached when the training loop says how it ended")
            elif issubclass(exc_type, (KeyboardInterrupt, RunCancelled, SystemExit)):
                self.finish("cancelled", error=f"cancelled ({exc_type.__name__}{': ' + str(exc) if str(exc) else ''})")
            else:
                self.finish("failed", error=f"{exc_type.__name__}: {exc}")
        except Exception as e:  # never mask the training loop's own exception
            warnings.warn(f"run {self.run_id}: could not record the end of the run: {e}", stacklevel=2)
        return False


def final_record(a: Attempt) -> dict:
    return {"status": a.status, "error": a.error, "summary": a.summary.values,
            "summary_nonfinite": a.summary.nonfinite, "summary_columns": a.summary.columns,
            "ended_at": a.ended_at, "has_checkpoint": a.has_checkpoint}


def seal(store: StoreFiles, a: Attempt) -> None:
    """Epochs file, then run row (the commit point), then the live folder goes. Caller holds the run's lock."""
    from .schema import epochs_table, runs_table

    layout = store.layout
    run_path = layout.sealed_run(a.run_id, a.attempt)
    if run_path.exists():
        raise StoreError(f"run {a.run_id} attempt {a.attempt} is already sealed ({run_path}); "
                         "a terminal status is never overwritten")
    atomic_write_table(layout.sealed_epochs(a.run_id, a.attempt), epochs_table([a]), store.durable)
    atomic_write_table(run_path, runs_table([a]), store.durable)
    shutil.rmtree(layout.live_dir(a.run_id, a.attempt), ignore_errors=True)


def seal_abandoned(store: StoreFiles, live_dir: Path, status: str, error: str, purpose: str,
                   owner: dict | None = None) -> Attempt | None:
    """Seal a live attempt whose writer is gone. A result that ``finish`` recorded (final.json) stands; an attempt
    that was still open ends as ``status`` with ``error``. Returns the sealed attempt, or None when there was nothing
    to seal: the folder is gone (sealed meanwhile) or unreadable, or its meta does not match ``owner`` (only the
    runs a given job opened are its to seal). Raises RunLockedError when a live process holds the run's lock."""
    m = LIVE_RE.match(live_dir.name)
    if not m:
        return None
    lock = try_lock(store.layout.lock_file(m.group(1)), f"run {m.group(1)}", retries=0,
                    holder_info=dict(holder_info(m.group(1), -1), purpose=purpose))
    try:
        # read under the lock (and as if long after the last heartbeat): the log cannot grow any more
        try:
            a = read_live_attempt(store.cache, store.layout, live_dir, time.time() + 1e9, [])
        except FileNotFoundError:
            return None
        if a is None or any(a.meta.get(k) != v for k, v in (owner or {}).items()):
            return None
        if a.status in ("running", "interrupted"):
            a.status, a.error = status, error
        if a.ended_at is None:
            a.ended_at = a.heartbeat_at
        seal(store, a)
        return a
    finally:
        lock.release()


def open_run(store: StoreFiles, run_id: str, config: dict, meta: dict, heartbeat_s: float = 5.0) -> RunWriter:
    """Open the next attempt of a run (see RunStore.open_run)."""
    check_run_id(run_id)
    config = check_config(config)
    meta = check_meta(meta)
    if isinstance(heartbeat_s, bool) or not isinstance(heartbeat_s, (int, float)) or not (
            math.isfinite(heartbeat_s) and 0.01 <= heartbeat_s <= 3600):
        raise StoreValidationError(f"heartbeat_s must be a number of seconds in [0.01, 3600], got {heartbeat_s!r}")
    layout = store.layout
    lock = try_lock(layout.lock_file(run_id), f"run {run_id}", holder_info(run_id, 0))
    try:
        attempts = existing_attempts(store.cache, layout, run_id)
        done = sorted((att, st) for att, st in attempts.items() if st in CACHED_STATUSES)
        if done:
            att, st = done[-1]
            raise RunAlreadyFinishedError(
                f"run {run_id} already has a {st} result (attempt {att}); finished results are a cache and are "
                "never overwritten: read it with store.cached(run_id), or change the config to train a new run")
        # above deleted attempts too, so that their deletion (annotations.py) never hides the new one
        attempt = max(max(attempts, default=0), deleted_through(store.cache, layout, run_id)) + 1
        lock.write_holder(holder_info(run_id, attempt))
        started = time.time()
        a = Attempt(run_id=run_id, attempt=attempt, config=config, meta=meta, started_at=started,
                    heartbeat_s=float(heartbeat_s))
        live_dir = layout.live_dir(run_id, attempt)
        # Build the folder under a temp name and rename it: readers never see an attempt without its start record.
        layout.live.mkdir(parents=True, exist_ok=True)
        tmp = layout.live / f".{live_dir.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        start = {"format": 1, "run_id": run_id, "attempt": attempt, "config": config, "meta": meta,
                 "started_at": started, "heartbeat_s": float(heartbeat_s)}
        (tmp / START).write_text(json.dumps(start, sort_keys=True))
        (tmp / EPOCHS).touch()
        (tmp / HEARTBEAT).touch()
        if live_dir.exists():
            # Only possible after a crash between this rename and the first record of an earlier attempt number
            # that nothing else knows about; it holds no epochs we could lose, but keep it aside rather than delete.
            raise StoreError(f"run {run_id}: live folder {live_dir} already exists; run `python -m engine check "
                             "--repair` to sort it out")
        os.rename(tmp, live_dir)
        fd = os.open(live_dir / EPOCHS, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except BaseException:
        lock.release()
        raise
    return RunWriter(store, a, lock, live_dir, fd)
