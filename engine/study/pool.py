"""Training processes for a study on the CPU: ``TrainerPool``, a StackExecutor (engine/train/driver.py) whose
processes (one torch thread each) pull stacks from a shared queue, longest first, and write their runs to the store
themselves (the store's per-run locks make concurrent writers safe).

They are called trainers, not workers: "worker" would be confused with the job supervisor (engine/jobs/).

Ctrl-C: the trainers get SIGINT too (forwarded when the signal reached only the parent); ``train_stack`` finishes
their open runs as ``cancelled``; the parent waits for that (at most TRAINER_JOIN_S), then raises KeyboardInterrupt.
"""
from __future__ import annotations

import os
import queue
import signal
import sys
import time
import traceback
from contextlib import suppress
from pathlib import Path
from typing import Any

from engine.config import RunConfig
from engine.sinks import RunOutcome, StoreSink
from engine.train import StackWork, stack_outcomes, train_and_report

TRAINER_JOIN_S = 120.0  # after Ctrl-C: how long to wait for trainers to record their runs as cancelled


def start_method() -> str:
    """How trainer processes start. ``fork`` where it is safe (Linux, no CUDA context, no Ray session in this
    process): a forked trainer inherits the imported torch, engine and loaded data, so it starts in milliseconds,
    where a ``spawn``ed one spends seconds importing torch, pyarrow and scikit-learn again (on 2 cores that would be
    most of a small study). Trainers use one torch thread and never touch CUDA or DuckDB (their store writes use
    pyarrow, whose thread pool and allocator are fork-aware), which is what makes fork safe here, as for PyTorch's
    own DataLoader workers. Elsewhere, ``spawn``. ``ABLATION_LAB_START_METHOD`` overrides."""
    import multiprocessing as mp
    forced = os.environ.get("ABLATION_LAB_START_METHOD")
    if forced:
        if forced not in mp.get_all_start_methods():
            raise ValueError(f"ABLATION_LAB_START_METHOD must be one of {', '.join(mp.get_all_start_methods())}, "
                             f"got {forced!r}")
        return forced
    if sys.platform != "linux" or "fork" not in mp.get_all_start_methods():
        return "spawn"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "spawn"
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return "spawn"
    return "fork"


def _trainer_sigint(signum, frame):
    # The first SIGINT stops the training loop; later ones (the terminal's and the parent's forwarded one) are
    # ignored so that they cannot interrupt the store writes that record the runs as cancelled.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _trainer_main(wid: int, tasks, results) -> None:
    """A trainer process: pull stacks until None; report start, progress and outcomes of each."""
    signal.signal(signal.SIGINT, _trainer_sigint)
    try:
        import torch
        torch.set_num_threads(1)
        from engine.store import RunStore
        stores: dict[str, Any] = {}
        while True:
            try:
                # Wake now and then: Ctrl-C's SIGINT may be handed to another thread of this process (the results
                # queue's feeder), and its handler then runs only when this thread runs Python again.
                task = tasks.get(timeout=0.5)
            except queue.Empty:
                continue
            if task is None:
                break
            tid, store_root, device, extra_meta, dicts = task
            store = stores.get(store_root) or stores.setdefault(store_root, RunStore(Path(store_root)))
            configs = [RunConfig.from_dict(d) for d in dicts]
            results.put(("start", wid, tid))
            sinks = [StoreSink(store, extra_meta) for _ in configs]
            try:
                outcome = train_and_report(configs, sinks, device, lambda event, tid=tid: results.put(
                    ("progress", tid, event)))
            except KeyboardInterrupt:
                results.put(("done", tid, stack_outcomes(configs, sinks)))
                break
            except BaseException as exc:  # a bug outside train_stack: report it rather than die silently
                err = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                outcome = [RunOutcome(c.run_id, "failed", error=err) for c in configs]
            results.put(("done", tid, outcome))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        results.put(("exit", wid, None))


class TrainerPool:
    """Up to ``n`` trainer processes that train stacks pulled from a shared queue, in the order given.

    Processes start at the first ``run`` that needs them (after the study was planned: forked trainers then inherit
    the data planning loaded), as many as there are stacks, at most ``n``. One pool can serve several studies in
    turn (``reproduce`` does): trainers stay up between them. Use it as a context manager; ``close`` stops idle
    trainers. After Ctrl-C the trainers have stopped and the pool is spent.
    """

    def __init__(self, n: int, method: str | None = None):
        import multiprocessing as mp
        self.n, self.method = n, method or start_method()
        self._ctx = mp.get_context(self.method)
        self.tasks, self.results = self._ctx.Queue(), self._ctx.Queue()
        self.procs: list = []
        self.exited: set[int] = set()
        self.running: dict[int, int] = {}  # trainer id -> task id
        self._next_tid = 0
        self.spent = False
        self.parallelism = 0

    def __enter__(self) -> "TrainerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _grow(self, size: int) -> None:
        for w in range(len(self.procs), size):
            p = self._ctx.Process(target=_trainer_main, name=f"study-trainer-{w}", args=(w, self.tasks, self.results),
                                  daemon=True)
            p.start()
            self.procs.append(p)

    def alive(self) -> int:
        return sum(1 for w, p in enumerate(self.procs) if w not in self.exited and p.is_alive())

    def run(self, stacks: list[list[RunConfig]], work: StackWork) -> None:
        """Train the stacks (already ordered), reporting through ``work``; KeyboardInterrupt after Ctrl-C."""
        if self.spent:
            raise RuntimeError("this trainer pool was stopped by Ctrl-C; start a new one")
        self.parallelism = min(self.n, len(stacks))
        self._grow(self.parallelism)
        base = self._next_tid
        self._next_tid += len(stacks)
        mine = {base + i: stack for i, stack in enumerate(stacks)}
        for tid, stack in mine.items():
            self.tasks.put((tid, str(work.store.root), str(work.device), work.extra_meta,
                            [c.to_dict() for c in stack]))
        state = _PoolRun(mine, base, work, self)
        try:
            state.drain()
        except KeyboardInterrupt:
            self.spent = True
            state.stopping = True
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abandon trainers
            try:
                for w, p in enumerate(self.procs):
                    if w not in self.exited and p.is_alive():
                        with suppress(OSError):
                            os.kill(p.pid, signal.SIGINT)
                state.drain(until_exit=True, deadline=time.monotonic() + TRAINER_JOIN_S)
            finally:
                for p in self.procs:
                    if p.is_alive():  # a trainer that did not stop in time: its runs show as interrupted
                        p.terminate()
                signal.signal(signal.SIGINT, previous)
            raise

    def close(self) -> None:
        if not self.spent:
            for _ in self.procs:
                self.tasks.put(None)
        deadline = time.monotonic() + 10
        for p in self.procs:
            p.join(timeout=max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.terminate()
                p.join(timeout=1)
        self.tasks.cancel_join_thread()
        self.results.cancel_join_thread()
        self.spent = True


class _PoolRun:
    """Bookkeeping of one ``TrainerPool.run``: which stacks are open, trainers that died, where reports go."""

    def __init__(self, stacks: dict[int, list[RunConfig]], base: int, work: StackWork, pool: TrainerPool):
        self.stacks, self.base, self.work, self.pool = stacks, base, work, pool
        self.open = set(stacks)  # task ids without a result yet
        self.stopping = False    # after Ctrl-C: outcomes are reported as stopped

    def drain(self, until_exit: bool = False, deadline: float | None = None) -> None:
        pool = self.pool
        while (len(pool.exited) < len(pool.procs)) if until_exit else self.open:
            if deadline is not None and time.monotonic() > deadline:
                return
            try:
                kind, a, b = pool.results.get(timeout=0.2)
            except queue.Empty:
                self._check_dead()
                if not until_exit and self.open and len(pool.exited) == len(pool.procs):
                    for tid in list(self.open):  # every trainer is gone: nothing will run these
                        self._done(tid, [RunOutcome(c.run_id, "failed", error="no training process left to run it")
                                         for c in self.stacks[tid]])
                continue
            if kind == "start":
                pool.running[a] = b
            elif kind == "progress":
                if a in self.open:
                    self.work.progress(a - self.base, b)
            elif kind == "done":
                for w, t in list(pool.running.items()):
                    if t == a:
                        del pool.running[w]
                if a in self.open:
                    self._done(a, b)
            elif kind == "exit":
                pool.exited.add(a)

    def _done(self, tid: int, outcomes: list[RunOutcome]) -> None:
        self.open.discard(tid)
        (self.work.stopped if self.stopping else self.work.done)(tid - self.base, outcomes)

    def _check_dead(self) -> None:
        pool = self.pool
        for wid, p in enumerate(pool.procs):
            if wid in pool.exited or p.is_alive():
                continue
            # Died without saying goodbye (killed, out of memory, crashed interpreter).
            pool.exited.add(wid)
            tid = pool.running.pop(wid, None)
            if tid is not None and tid in self.open:
                reason = f"training process died (exit code {p.exitcode})"
                self._done(tid, [RunOutcome(c.run_id, "failed", error=reason) for c in self.stacks[tid]])
