"""Child program of tests/test_store_chaos.py (no tests here): writes runs and prints one line after each step
returns, so the parent knows which epochs were durable when it sent SIGKILL.

    python tests/store_child.py train ROOT PREFIX N_RUNS EPOCHS SLEEP_S COMPACT_EVERY THRESHOLD
    python tests/store_child.py hold ROOT RUN_ID        open a run, log two epochs, wait to be killed
    python tests/store_child.py try ROOT RUN_ID         try to open a run; exit 3 when it is locked
    python tests/store_child.py annotate ROOT RUN_ID    tag the run t0, t1, ... (one record each) until killed
"""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HB = 0.1  # heartbeat of the children: "interrupted" shows 2 heartbeats (0.2 s) after a kill


def child_main(argv: list[str]) -> int:
    from engine.store import RunLockedError, RunStore

    mode, root = argv[0], argv[1]
    say = lambda *parts: print(*parts, flush=True)  # noqa: E731  (one line per durable step)
    if mode == "train":
        prefix, n_runs, epochs, sleep_s, compact_every, threshold = argv[2], *map(float, argv[3:8])
        store = RunStore(root, durable=False, compact_threshold=int(threshold) or None)
        say("READY")
        for k in range(int(n_runs)):
            rid = f"{prefix}{k:04d}"
            w = store.open_run(rid, {"task": "points", "seed": k, "lr": 0.01}, {"device": "cpu", "pid": os.getpid()},
                               heartbeat_s=HB)
            say("O", rid)
            for e in range(int(epochs)):
                w.log_epoch(e, {"train_loss": 1.0 / (e + 1), "val_accuracy": e / 100})
                say("E", rid, e)
                if sleep_s:
                    time.sleep(sleep_s)
            say("S", rid)
            w.finish("completed", {"n_params": 10})
            say("F", rid)
            if compact_every and (k + 1) % int(compact_every) == 0:
                say("C")
                store.compact()
                say("D")
        say("END")
        return 0
    if mode == "hold":
        rid = argv[2]
        store = RunStore(root, durable=False)
        w = store.open_run(rid, {"seed": 1}, {"device": "cpu", "pid": os.getpid()}, heartbeat_s=HB)
        w.log_epoch(0, {"loss": 1.0})
        w.log_epoch(1, {"loss": 0.5})
        say("READY")
        threading.Event().wait(timeout=60)  # hold the lock until the test kills us (at most a minute)
        return 0
    if mode == "try":
        store = RunStore(root, durable=False)
        t = time.monotonic()
        try:
            store.open_run(argv[2], {"seed": 1}, {"device": "cpu"})
        except RunLockedError as e:
            say(f"LOCKED after {time.monotonic() - t:.3f}s: {e}")
            return 3
        say("OPENED")
        return 0
    if mode == "annotate":
        rid = argv[2]
        store = RunStore(root, durable=True)
        say("READY")
        for i in range(100_000):  # until the test kills us
            store.annotate("tag", [rid], tag=f"t{i}")
            say("A", i)
        return 0
    raise SystemExit(f"unknown mode {mode}")



if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1:]))
