"""A live attempt on disk: its folder's files, the epoch log's line format, and reading it back.

    live/<run_id>.<attempt>/start.json     config, meta, start time, heartbeat interval
                            epochs.jsonl   one line per logged epoch: {"e": epoch, "t": seconds since start,
                                           "m": {metric: value or null}, "x": {metric: "nan"|"inf"|"-inf"}}
                                           ("x" only when a value was not finite)
                            heartbeat      touched every heartbeat_s by the writer
                            final.json     the result finish() recorded before sealing

The writer appends lines made by ``encode_epoch_line``; readers parse them with ``decode_epoch_line``, so the format
is known here only. A line is appended with one write(); a kill can tear the last one, and readers take complete
lines only.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .files import Problem, ReaderCache
from .layout import LIVE_RE, Layout, lock_is_held
from .schema import Attempt, Summary

START, EPOCHS, HEARTBEAT, FINAL = "start.json", "epochs.jsonl", "heartbeat", "final.json"


def encode_epoch_line(epoch: int, t: float, vals: dict[str, float | None], nonfinite: dict[str, str]) -> bytes:
    """One epoch as a log line: ``t`` seconds since the attempt started, ``vals`` the finite values (None where
    not finite), ``nonfinite`` the markers of those that are not."""
    rec: dict[str, Any] = {"e": epoch, "t": round(t, 6), "m": vals}
    if nonfinite:
        rec["x"] = nonfinite
    return (json.dumps(rec, separators=(",", ":")) + "\n").encode()


def decode_epoch_line(line: bytes) -> tuple[int, float, dict[str, float | None], dict[str, str]]:
    """(epoch, t, vals, nonfinite) of one complete line; ValueError when it is not one."""
    try:
        rec = json.loads(line)
        return int(rec["e"]), float(rec.get("t", 0.0)), rec.get("m", {}), rec.get("x", {})
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"not an epoch record: {e}") from None


def parse_log(cache: ReaderCache, log: Path, problems: list[Problem]) -> list:
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
                epoch, t, vals, nf = decode_epoch_line(line)
            except ValueError:
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
        start = json.loads((d / START).read_bytes())
    except FileNotFoundError:
        raise
    except ValueError as e:
        problems.append(Problem(str(d / START), "damaged", f"start record unreadable ({e}); attempt skipped"))
        return None
    epochs = parse_log(cache, d / EPOCHS, problems)
    try:
        beat = os.stat(d / HEARTBEAT).st_mtime
    except FileNotFoundError:
        beat = start["started_at"]
    try:
        beat = max(beat, os.stat(d / EPOCHS).st_mtime)
    except FileNotFoundError:
        pass
    a = Attempt(run_id=start["run_id"], attempt=int(start["attempt"]), config=start["config"],
                meta=start["meta"], started_at=float(start["started_at"]), heartbeat_s=float(start["heartbeat_s"]),
                epochs=epochs, heartbeat_at=beat)
    try:
        final = json.loads((d / FINAL).read_bytes())
    except FileNotFoundError:
        final = None
    except ValueError:
        final = None
        problems.append(Problem(str(d / FINAL), "damaged", "finish record unreadable; ignored"))
    if final is not None:
        # finish() recorded its result but was stopped before sealing: the result stands (terminal)
        a.status = final["status"]
        a.error = final.get("error")
        a.summary = Summary(final.get("summary", {}), final.get("summary_nonfinite", {}),
                            {k: (None if v is None else float(v)) for k, v in final.get("summary_columns", {}).items()})
        a.ended_at = final.get("ended_at")
        a.has_checkpoint = bool(final.get("has_checkpoint"))
        return a
    if heartbeat_stale(now, beat, a.heartbeat_s) and not writer_alive(layout, a):
        a.status = "interrupted"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(beat))
        a.error = (f"the writing process (pid {a.meta.get('pid', '?')} on {a.meta.get('hostname', '?')}) stopped: "
                   f"no heartbeat since {when} UTC")
    return a


def heartbeat_stale(now: float, beat: float, heartbeat_s: float) -> bool:
    """No sign of life for longer than one heartbeat interval: time to ask the run's lock whether the writer lives.
    (A live writer beats every interval; a slow one still holds the lock, so this only decides when to look.)"""
    return now - beat > heartbeat_s


def writer_alive(layout: Layout, a: Attempt) -> bool:
    """True while the process that writes this attempt holds the run's lock."""
    lock = layout.lock_file(a.run_id)
    if not lock_is_held(lock):
        return False
    # The lock may be held by a newer attempt of the same run; then this one's writer is gone.
    try:
        holder = json.loads(lock.read_bytes() or b"{}")
    except (OSError, ValueError):
        return True
    return int(holder.get("attempt", a.attempt)) == a.attempt
