"""Run store under real processes: the lock between writers, SIGKILL at random moments (while logging, while
sealing, while compacting), and a reader querying while four writers train.

The child program is tests/store_child.py. Children print a line after each step *returns*, so the parent
knows exactly which epochs were durable when it killed them.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHILD = str(Path(__file__).resolve().parent / "store_child.py")

from tests.waiting import wait_for  # noqa: E402

HB = 0.1  # the children's heartbeat (store_child.HB): "interrupted" shows one heartbeat interval after a kill


# --- parent helpers -----------------------------------------------------------------------------------------------

class Child:
    """A child process whose stdout lines are collected by a thread, so the parent can wait for markers."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, CHILD, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.lines: list[str] = []
        self._cv = threading.Condition()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cv:
                self.lines.append(line.rstrip("\n"))
                self._cv.notify_all()
        with self._cv:
            self.lines.append("<EOF>")
            self._cv.notify_all()

    def wait_for(self, prefix: str, start: int = 0, timeout: float = 30.0) -> int:
        """Index of the first line at or after `start` beginning with prefix."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for i in range(start, len(self.lines)):
                    if self.lines[i].startswith(prefix):
                        return i
                    if self.lines[i] == "<EOF>":
                        raise AssertionError(f"child ended before {prefix!r}: {self.proc.stderr.read()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {prefix!r}; last lines {self.lines[-5:]}")
                self._cv.wait(left)

    def kill(self) -> list[str]:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._t.join(timeout=10)  # everything the child printed before dying is still in the pipe
        return [line for line in self.lines if line != "<EOF>"]

    def finish(self, timeout: float = 60) -> list[str]:
        self.proc.wait(timeout=timeout)
        self._t.join(timeout=10)
        err = self.proc.stderr.read()
        assert self.proc.returncode == 0, err
        return [line for line in self.lines if line != "<EOF>"]


# --- tests --------------------------------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_second_writer_fails_at_once_naming_the_holder(tmp_path):
    from engine import queries
    from engine.store import RunLockedError, RunStore

    root = str(tmp_path / "runs")
    rid = "abcdef0123456789"
    holder = Child("hold", root, rid)
    try:
        holder.wait_for("READY")
        store = RunStore(root, durable=False)
        with pytest.raises(RunLockedError) as err:
            store.open_run(rid, {"seed": 1}, {"device": "cpu"})
        msg = str(err.value)
        assert rid in msg and f"pid {holder.proc.pid}" in msg and socket.gethostname() in msg
        other = subprocess.run([sys.executable, CHILD, "try", root, rid], capture_output=True, text=True,
                               env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
        assert other.returncode == 3 and f"pid {holder.proc.pid}" in other.stdout, other.stdout + other.stderr
        assert store.get(rid).status == "running"
    finally:
        holder.kill()
    # the OS released the dead holder's lock: a retry starts attempt 2 at once, attempt 1 keeps its epochs
    store = RunStore(root, durable=False)
    w = store.open_run(rid, {"seed": 1}, {"device": "cpu"}, heartbeat_s=HB)
    assert w.attempt == 2
    attempts = lambda: queries.sql(
        store, "SELECT attempt, status, n_epochs FROM attempts ORDER BY attempt").values.tolist()
    # attempt 1 reads interrupted once its last heartbeat is one interval old (its writer's lock is gone)
    wait_for(lambda: attempts() == [[1, "interrupted", 2], [2, "running", 0]], 30, what="attempt 1 interrupted",
             show=attempts)
    w.finish("completed")


def _verify(store, reported: dict[str, set[int]], finished: set[str], sealing: set[str]) -> None:
    from engine import queries

    runs = queries.list_runs(store)
    assert runs.run_id.is_unique
    statuses = dict(zip(runs.run_id, runs.status))
    # after the heartbeat window nothing is "running": every run either completed or shows interrupted
    assert set(statuses.values()) <= {"completed", "interrupted"}, Counter(statuses.values())
    ep = queries.sql(store, "SELECT run_id, attempt, epoch FROM all_epochs")
    assert not ep.duplicated().any(), "an epoch is counted twice"
    have: dict[str, set[int]] = {}
    for rid, e in zip(ep.run_id, ep.epoch):
        have.setdefault(rid, set()).add(int(e))
    for rid, epochs in reported.items():
        missing = epochs - have.get(rid, set())
        assert not missing, f"run {rid}: logged epochs {sorted(missing)} are missing"
        assert rid in statuses, f"run {rid} is missing from the run list"
    for rid in finished:
        assert statuses[rid] == "completed", (rid, statuses[rid])
    for rid in set(reported) - finished:
        # killed mid-run: interrupted; killed inside finish() after its result was recorded: completed
        assert statuses[rid] == "interrupted" or (rid in sealing and statuses[rid] == "completed"), \
            (rid, statuses[rid])
    counts = dict(zip(runs.run_id, runs.n_epochs))
    for rid, epochs in reported.items():
        assert counts[rid] >= len(epochs)


@pytest.mark.timeout(180)
def test_chaos_sigkill_at_random_moments(tmp_path):
    from engine import queries
    from engine.store import RunStore

    root = tmp_path / "runs"
    store = RunStore(root, durable=False, compact_threshold=None)
    rng = random.Random(20240611)
    reported: dict[str, set[int]] = {}
    finished: set[str] = set()
    sealing: set[str] = set()
    where = Counter()
    i = 0
    # at least 30 kills; keep going (up to 60) until enough landed inside compaction and inside finish()
    while i < 30 or ((where["compaction"] < 6 or where["sealing"] < 4) and i < 60):
        target = ("compaction", "sealing", "anywhere")[i % 3]
        child = Child("train", str(root), f"{i:08x}", "40", str(rng.randint(3, 10)), "0.002", "3", "0")
        try:
            child.wait_for("READY")
            if target == "compaction":
                child.wait_for("C", timeout=30)
                time.sleep(rng.uniform(0, 0.03))
            elif target == "sealing":
                child.wait_for("S", timeout=30)
                time.sleep(rng.uniform(0, 0.004))
            else:
                time.sleep(rng.uniform(0, 0.25))
        finally:
            lines = child.kill()
        last_marker = next((line for line in reversed(lines) if line[:1] in "CDSFE"), "")
        where[{"C": "compaction", "S": "sealing"}.get(last_marker[:1], "logging")] += 1
        for line in lines:
            parts = line.split()
            if parts[0] == "E":
                reported.setdefault(parts[1], set()).add(int(parts[2]))
            elif parts[0] == "O":
                reported.setdefault(parts[1], set())
            elif parts[0] == "S":
                sealing.add(parts[1])
            elif parts[0] == "F":
                finished.add(parts[1])
        # the killed writer's runs read interrupted once their last heartbeat is one interval old
        wait_for(lambda: "running" not in set(queries.list_runs(store).status), 30, every=HB / 4,
                 what="no run reading running after the kill", show=lambda: Counter(queries.list_runs(store).status))
        _verify(store, reported, finished, sealing)
        i += 1
    print(f"{i} kills; last step before each kill: {dict(where)}")
    assert i >= 30 and where["compaction"] >= 6 and where["sealing"] >= 4, where

    report = store.check(repair=True)
    assert report.ok, str(report)
    _verify(store, reported, finished, sealing)
    assert store.check().ok
    store.compact(full=True)
    _verify(store, reported, finished, sealing)
    assert len(queries.list_runs(store)) >= len(reported)


@pytest.mark.timeout(120)
def test_reader_never_errors_or_goes_backwards_while_four_writers_train(tmp_path):
    from engine import queries
    from engine.store import RunStore

    root = tmp_path / "runs"
    # auto-compaction every 4 sealed runs, triggered by whichever writer finishes: compaction races the reader
    writers = [Child("train", str(root), f"w{k}", "8", "15", "0.004", "0", "4") for k in range(4)]
    store = RunStore(root)
    epochs_seen: dict[str, int] = {}
    rows_seen: dict[str, int] = {}
    n_reads = 0
    try:
        for w in writers:
            w.wait_for("READY")
        while any(w.proc.poll() is None for w in writers) or n_reads < 5:
            runs = queries.list_runs(store)
            counts = queries.sql(store, "SELECT run_id, count(*) AS n FROM epochs GROUP BY run_id")
            now_epochs = dict(zip(counts.run_id, counts.n))
            now_rows = dict(zip(runs.run_id, runs.n_epochs))
            for rid, n in epochs_seen.items():
                assert now_epochs.get(rid, 0) >= n, f"run {rid}: epoch count went down {n} -> {now_epochs.get(rid)}"
            for rid, n in rows_seen.items():
                assert now_rows.get(rid, 0) >= n, f"run {rid}: n_epochs went down {n} -> {now_rows.get(rid)}"
            epochs_seen, rows_seen = now_epochs, now_rows
            n_reads += 1
    finally:
        outputs = [w.finish() for w in writers]
    assert all(o[-1] == "END" for o in outputs)
    runs = queries.list_runs(store)
    assert len(runs) == 32 and set(runs.status) == {"completed"} and set(runs.n_epochs) == {15}
    print(f"{n_reads} consistent reads while 4 writers trained")
    assert n_reads >= 5
    assert len(queries.sql(store, "SELECT * FROM epochs")) == 32 * 15
    assert store.check().ok
