"""Running a study: train only the missing cells, stacked, in parallel worker processes, through the store.

``run_study`` is the one entry point (CLI, reproduce, tests, bench):

1. plan: which runs the store already has (completed or diverged: never retrained) and which are missing;
2. record study membership of every run (cached ones too) with ``store.add_to_study``;
3. group the missing runs into stacks (``group_into_stacks``: runs that differ only in seed, lr, ... train as one
   model), halve the largest while that balances the workers better, and order them longest first;
4. train them: ``local`` runs one worker process per core (one torch thread each; forked where that is safe, else
   spawned: see ``start_method``) pulling stacks from a queue, each writing its runs through the store (the store's
   per-run locks make concurrent writers safe); with ``--workers 1`` or on a GPU the stacks run one after the other
   in this process instead; ``ray`` hands stacks to Ray tasks and writes their results from here
   (see ray_executor.py);
5. report: every run's outcome, diverged and failed ones with their reason, and the study's winner so far.

A progress bar (tqdm) counts run-epochs over the whole study, fed by the workers' progress events.

Ctrl-C: the workers get SIGINT too (forwarded when the signal reached only this process); ``train_stack`` then
finishes their open runs as ``cancelled``; this process waits for that, prints the summary and the CLI exits 130.
Finished runs are in the store, so a restart trains only what is still missing (cancelled runs are retried).
"""
from __future__ import annotations

import os
import queue
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.config import RunConfig
from engine.study.plan import Plan, make_plan, stack_cost
from engine.study.spec import StudySpec
from engine.sinks import StoreSink
from engine.train import group_into_stacks

EXECUTORS = ("local", "ray")
WORKER_JOIN_S = 120.0  # after Ctrl-C: how long to wait for workers to record their runs as cancelled


def train_one_stack(store, configs: list[RunConfig], device, extra_meta: dict[str, Any],
                    progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Train one stack into the store; returns one outcome dict per run. KeyboardInterrupt propagates after the
    open runs were finished as cancelled (by train_stack)."""
    from engine.train import train_stack
    sinks = [StoreSink(store, extra_meta) for _ in configs]
    try:
        train_stack(configs, sinks, device=device, progress=progress)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # the stack's open runs are already finished as failed; report, go on
        message = f"{type(exc).__name__}: {exc}"
        for sink in sinks:  # a sink that failed to start stops train_stack before its try: close the others
            if sink.writer is not None and sink.status == "running":
                try:
                    sink.finish("failed", error=message)
                except Exception:
                    pass
        out = []
        for config, sink in zip(configs, sinks):
            o = sink.outcome() if sink.run_id else {"run_id": config.run_id, "status": "failed", "summary": {}}
            if o["status"] in ("failed", "cancelled", "pending") and not o.get("error"):
                o["status"], o["error"] = "failed", message
            out.append(o)
        return out
    return [s.outcome() for s in sinks]


# --- results -----------------------------------------------------------------------------------------------------------

@dataclass
class StudyResult:
    spec: StudySpec
    plan: Plan
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)  # run_id -> outcome of what ran now
    interrupted: bool = False
    elapsed_s: float = 0.0
    executor: str = "local"
    workers: int = 1

    @property
    def n_trained(self) -> int:
        return sum(1 for o in self.outcomes.values() if o["status"] in ("completed", "diverged"))

    def statuses(self) -> dict[str, str]:
        """run_id -> status for every run of the study: cached ones, what ran now, 'not started' for the rest."""
        out = {}
        for cell in self.spec.runs:
            rid = cell.run_id
            if rid in self.plan.cached:
                out[rid] = self.plan.cached[rid]["status"]
            elif rid in self.outcomes:
                out[rid] = self.outcomes[rid]["status"]
            else:
                out[rid] = "not started"
        return out

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(s in ("completed", "diverged") for s in self.statuses().values())


# --- the driver ------------------------------------------------------------------------------------------------------

def default_workers() -> int:
    return os.cpu_count() or 1


def _makespan(costs: list[float], workers: int) -> float:
    loads = [0.0] * max(1, workers)
    for c in sorted(costs, reverse=True):
        loads[loads.index(min(loads))] += c
    return max(loads)


def order_stacks(configs: list[RunConfig], workers: int, max_stack: int = 64) -> list[list[RunConfig]]:
    """Stacks of the missing runs, longest first, for ``workers`` workers pulling from one queue.

    A stack's cost is modelled as epochs x samples x (K + 2): the 2 stands for the per-step overhead that stacking
    shares, so halving a stack costs something. The largest stack is halved while that shortens the longest-first
    schedule noticeably (e.g. 3 stacks of 16 on 2 workers become 16, 16, 8, 8: both workers get the same work).
    """
    stacks = group_into_stacks(configs, max_stack)
    if workers > 1 and stacks:
        def cost(stack):
            return stack_cost(stack) / len(stack) * (len(stack) + 2)
        for _ in range(4 * workers):
            stacks.sort(key=cost, reverse=True)
            big = stacks[0]
            if len(big) < 2:
                break
            half = (len(big) + 1) // 2
            trial = [big[:half], big[half:]] + stacks[1:]
            if _makespan([cost(s) for s in trial], workers) < 0.97 * _makespan([cost(s) for s in stacks], workers):
                stacks = trial
            else:
                break
    return sorted(stacks, key=stack_cost, reverse=True)


def run_study(spec: StudySpec, store, executor: str = "local", workers: int | None = None, device: str = "auto",
              address: str | None = None, show_progress: bool = True, max_stack: int = 64,
              out=None, pool: "WorkerPool | None" = None) -> StudyResult:
    """Train the study's missing runs; see the module docstring. Never raises for a failed or diverged run.

    ``pool``: a running WorkerPool to use (several studies in a row); by default the local executor starts its own.
    """
    from engine.train import resolve_device

    out = out if out is not None else sys.stderr
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    started = time.perf_counter()
    dev = resolve_device(device) if executor == "local" else None
    if executor == "ray":
        n_workers = workers or 0  # 0: as many as the cluster has CPUs (decided once connected)
    elif dev.type != "cpu":
        n_workers = 1  # one GPU: the stacks run one after the other in this process
    else:
        n_workers = pool.n if pool is not None else (workers or default_workers())
    own_pool = None
    use_pool = executor == "local" and dev.type == "cpu" and n_workers > 1
    try:
        plan = make_plan(spec, store, estimate=False)
        store.add_to_study(spec.study_name, [c.run_id for c in spec.runs])
        missing = [c.config for c in plan.missing]
        stacks = order_stacks(missing, max(n_workers, 1), max_stack)
        result = StudyResult(spec, plan, executor=executor,
                             workers=min(n_workers, len(stacks)) if use_pool else max(n_workers, 1))
        extra_meta = {"study": spec.study_name}
        total = sum(len(s) * s[0].epochs for s in stacks)
        bar = _progress_bar(total, show_progress, out, spec.study_name)
        try:
            if not stacks:
                pass
            elif executor == "ray":
                from engine.study.ray_executor import run_stacks_ray
                result.interrupted, result.workers = run_stacks_ray(stacks, store, device, address, extra_meta,
                                                                    bar, result.outcomes, workers)
            elif not use_pool:
                result.interrupted = _run_in_process(stacks, store, dev, extra_meta, bar, result.outcomes)
            else:
                if pool is None:
                    # Started now, after planning: forked workers inherit the imports and the task data that
                    # planning loaded (stack_cost), so they start training at once.
                    _warm_up()
                    own_pool = pool = WorkerPool(min(n_workers, len(stacks)))
                result.interrupted = pool.run(stacks, store, dev, extra_meta, bar, result.outcomes)
        finally:
            bar.close()
    finally:
        if own_pool is not None:
            own_pool.close()
    if result.interrupted or any(c.run_id not in result.outcomes for c in plan.missing):
        _settle_from_store(store, plan, result.outcomes)
    result.elapsed_s = time.perf_counter() - started
    return result


def _warm_up() -> None:
    """Import in this process what every worker needs, so that forked workers do not each import it again."""
    import pyarrow.parquet  # noqa: F401  (the store seals runs into Parquet)

    import engine.store.writer  # noqa: F401
    import engine.train  # noqa: F401


def _settle_from_store(store, plan: Plan, outcomes: dict[str, dict[str, Any]]) -> None:
    """The store has the last word on how a run that ran now ended (a worker's message can be lost to Ctrl-C)."""
    from engine.store import CACHED_STATUSES
    from engine.study.plan import read_runs
    ids = [c.run_id for c in plan.missing]
    records = read_runs(store, ids)
    for rid in ids:
        rec, o = records.get(rid), outcomes.get(rid)
        if rec is None or rec["status"] == "running":
            continue
        if o is not None and o["status"] != "skipped":
            outcomes[rid] = {**o, "status": rec["status"], "error": rec["error"] or o.get("error"),
                             "summary": rec["summary"] or o.get("summary") or {}}
        elif o is None and rec["status"] in CACHED_STATUSES:
            outcomes[rid] = {"run_id": rid, "status": rec["status"], "error": rec["error"],
                             "summary": rec["summary"]}


class _NoBar:
    n = 0

    def update(self, k: int = 1) -> None:
        self.n += k

    def close(self) -> None:
        pass


def _progress_bar(total: int, show: bool, out, name: str):
    if not show or total == 0:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, unit="run-epoch", file=out, desc=name, dynamic_ncols=True, smoothing=0.05)


def _run_in_process(stacks, store, dev, extra_meta, bar, outcomes) -> bool:
    for stack in stacks:
        done = [0]

        def progress(event, stack=stack, done=done):
            n = event["epoch"] * len(stack)
            bar.update(n - done[0])
            done[0] = n
        try:
            for o in train_one_stack(store, stack, dev, extra_meta, progress):
                outcomes[o["run_id"]] = o
        except KeyboardInterrupt:
            # train_stack finished this stack's open runs as cancelled; the stacks after it never started.
            for config in stack:
                outcomes.setdefault(config.run_id, {"run_id": config.run_id, "status": "cancelled",
                                                    "error": "cancelled by the user", "summary": {}})
            return True
        bar.update(len(stack) * stack[0].epochs - done[0])
    return False


# --- worker processes ---------------------------------------------------------------------------------------------

def start_method() -> str:
    """How worker processes start. ``fork`` where it is safe (Linux, no CUDA context, no Ray session in this process):
    a forked worker inherits the imported torch, engine and loaded data, so it starts in milliseconds, where a
    ``spawn``ed one spends seconds importing torch, pyarrow and scikit-learn again (on 2 cores that would be most of a
    small study). Workers use one torch thread and never touch CUDA or DuckDB (their store writes use pyarrow, whose
    thread pool and allocator are fork-aware), which is what makes fork safe here, as for PyTorch's own DataLoader
    workers. Elsewhere, ``spawn``. ``ABLATION_LAB_START_METHOD`` overrides."""
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


def _worker_sigint(signum, frame):
    # The first SIGINT stops the training loop; later ones (the terminal's and the driver's forwarded one) are
    # ignored so that they cannot interrupt the store writes that record the runs as cancelled.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _worker_main(wid: int, tasks, results) -> None:
    """A worker process: pull tasks until None; report start, progress and outcomes of each stack."""
    signal.signal(signal.SIGINT, _worker_sigint)
    try:
        import torch
        torch.set_num_threads(1)
        from engine.store import RunStore
        stores: dict[str, Any] = {}
        while True:
            task = tasks.get()
            if task is None:
                break
            tid, store_root, device, extra_meta, dicts = task
            store = stores.get(store_root) or stores.setdefault(store_root, RunStore(Path(store_root)))
            configs = [RunConfig.from_dict(d) for d in dicts]
            results.put(("start", wid, tid))

            def progress(event, tid=tid):
                results.put(("progress", tid, event["epoch"] * event["runs"]))
            try:
                outcome = train_one_stack(store, configs, device, extra_meta, progress)
            except KeyboardInterrupt:
                results.put(("done", tid, [{"run_id": c.run_id, "status": "cancelled",
                                            "error": "cancelled by the user", "summary": {}} for c in configs]))
                break
            except BaseException as exc:  # a bug outside train_stack: report it rather than die silently
                err = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                outcome = [{"run_id": c.run_id, "status": "failed", "error": err, "summary": {}} for c in configs]
            results.put(("done", tid, outcome))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        results.put(("exit", wid, None))


class WorkerPool:
    """``n`` worker processes (one torch thread each) that train stacks pulled from a shared queue, longest first.

    One pool can serve several studies in turn (``reproduce`` does): workers stay up between them. Use it as a
    context manager; ``close`` stops idle workers. After Ctrl-C the workers have stopped and the pool is spent.
    """

    def __init__(self, n: int, method: str | None = None):
        import multiprocessing as mp
        self.n, self.method = n, method or start_method()
        ctx = mp.get_context(self.method)
        self.tasks, self.results = ctx.Queue(), ctx.Queue()
        self.procs = [ctx.Process(target=_worker_main, name=f"study-worker-{w}", args=(w, self.tasks, self.results),
                                  daemon=True) for w in range(n)]
        for p in self.procs:
            p.start()
        self.exited: set[int] = set()
        self.running: dict[int, int] = {}  # worker id -> task id
        self._next_tid = 0
        self.spent = False

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def alive(self) -> int:
        return sum(1 for w, p in enumerate(self.procs) if w not in self.exited and p.is_alive())

    def run(self, stacks, store, device, extra_meta, bar, outcomes) -> bool:
        """Train the stacks (already ordered); fills ``outcomes``; returns True when stopped by Ctrl-C."""
        if self.spent:
            raise RuntimeError("this worker pool was stopped by Ctrl-C; start a new one")
        base = self._next_tid
        self._next_tid += len(stacks)
        mine = {base + i: stack for i, stack in enumerate(stacks)}
        for tid, stack in mine.items():
            self.tasks.put((tid, str(store.root), str(device), extra_meta, [c.to_dict() for c in stack]))
        state = _DriverState(mine, bar, outcomes, self)
        try:
            state.drain()
        except KeyboardInterrupt:
            self.spent = True
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abandon the workers
            try:
                for w, p in enumerate(self.procs):
                    if w not in self.exited and p.is_alive():
                        with _suppress_oserror():
                            os.kill(p.pid, signal.SIGINT)
                state.drain(until_exit=True, deadline=time.monotonic() + WORKER_JOIN_S)
            finally:
                for p in self.procs:
                    if p.is_alive():  # a worker that did not stop in time: its runs show as interrupted
                        p.terminate()
                signal.signal(signal.SIGINT, previous)
            return True
        return False

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


class _suppress_oserror:
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return exc_type is not None and issubclass(exc_type, OSError)


class _DriverState:
    """Bookkeeping of one ``WorkerPool.run``: progress per stack, outcomes, workers that died."""

    def __init__(self, stacks: dict[int, list[RunConfig]], bar, outcomes, pool: WorkerPool):
        self.stacks, self.bar, self.outcomes, self.pool = stacks, bar, outcomes, pool
        self.counted: dict[int, int] = {}  # task id -> run-epochs already on the bar
        self.open = set(stacks)             # task ids without a result yet

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
                    for tid in list(self.open):  # every worker is gone: nothing will run these
                        self._done(tid, [{"run_id": c.run_id, "status": "failed", "summary": {},
                                          "error": "no worker process left to run it"} for c in self.stacks[tid]])
                continue
            if kind == "start":
                pool.running[a] = b
            elif kind == "progress":
                if a in self.open:
                    self.bar.update(b - self.counted.get(a, 0))
                    self.counted[a] = b
            elif kind == "done":
                for w, t in list(pool.running.items()):
                    if t == a:
                        del pool.running[w]
                if a in self.open:
                    self._done(a, b)
            elif kind == "exit":
                pool.exited.add(a)

    def _done(self, tid: int, outcome: list[dict]) -> None:
        for o in outcome:
            self.outcomes[o["run_id"]] = o
        stack = self.stacks[tid]
        self.bar.update(len(stack) * stack[0].epochs - self.counted.get(tid, 0))
        self.counted[tid] = len(stack) * stack[0].epochs
        self.open.discard(tid)

    def _check_dead(self) -> None:
        pool = self.pool
        for wid, p in enumerate(pool.procs):
            if wid in pool.exited or p.is_alive():
                continue
            # Died without saying goodbye (killed, out of memory, crashed interpreter).
            pool.exited.add(wid)
            tid = pool.running.pop(wid, None)
            if tid is not None and tid in self.open:
                reason = f"worker process died (exit code {p.exitcode})"
                self._done(tid, [{"run_id": c.run_id, "status": "failed", "error": reason, "summary": {}}
                                 for c in self.stacks[tid]])


# --- the end-of-study report ----------------------------------------------------------------------------------------

def format_result(result: StudyResult) -> str:
    """What `study run` prints at the end: counts, every run that did not complete with its reason, the winner."""
    from engine.study.plan import cell_table, read_runs
    spec, plan = result.spec, result.plan
    statuses = result.statuses()
    counts: dict[str, int] = {}
    for s in statuses.values():
        counts[s] = counts.get(s, 0) + 1
    how = (f" ({result.executor}, {result.workers} worker{'s' if result.workers != 1 else ''})"
           if result.outcomes else "")
    lines = [f"study {spec.study_name}: {len(spec.runs)} runs in {len(spec.cell_labels())} cells; "
             f"{len(plan.cached)} were cached, {len(result.outcomes)} ran now{how} in {result.elapsed_s:.1f}s"]
    lines.append("status: " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items())))
    records = read_runs(result.plan.store, [c.run_id for c in spec.runs])
    by_id = {c.run_id: c for c in spec.runs}
    problems = []
    for rid, status in statuses.items():
        if status in ("completed",):
            continue
        cell = by_id[rid]
        rec = records.get(rid, {})
        if status == "diverged":
            summ = rec.get("summary") or result.outcomes.get(rid, {}).get("summary") or {}
            why = f"diverged at epoch {summ.get('diverged_epoch', '?')} (step {summ.get('diverged_step', '?')})"
        elif status == "not started":
            why = "not started (stopped before it)"
        else:
            err = (result.outcomes.get(rid) or {}).get("error") or rec.get("error") or ""
            why = f"{status}: {err}" if err else status
        problems.append(f"  {rid}  {cell.label} seed={cell.seed}: {why}")
    if problems:
        lines.append(f"runs that did not complete ({len(problems)}):")
        lines.extend(problems[:50])
        if len(problems) > 50:
            lines.append(f"  ... and {len(problems) - 50} more")
    table = cell_table(spec, records)
    if table:
        best = table[0]
        if best["n"]:
            lines.append(f"winner by {spec.metric} ({spec.goal}, final epoch, mean over seeds): {best['label']}: "
                         f"{best['mean']:.4g} +- {best['std']:.2g} (n={best['n']})")
    if result.interrupted:
        lines.append("interrupted: finished runs are kept in the store; running ones were marked cancelled. "
                     "Run the same command again to train what is missing.")
    return "\n".join(lines)
