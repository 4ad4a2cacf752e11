"""``--executor ray``: ``RayExecutor``, a StackExecutor (engine/train/driver.py) that trains the study's stacks as
Ray tasks; results are written to the store here, by the driver.

Each task trains one stack into ``MemorySink``s and returns them (epochs, status, summary, checkpoint bytes); the
driver replays each into the store (``engine.sinks.replay``), so Ray's nodes need no shared filesystem and no store.
When this process connects (``ray.init``), the ``engine`` package travels with the job (``py_modules``), so the
cluster's nodes need only torch and the data dependencies installed. If Ray is already initialised (a notebook, a
test), that session is used as it is.

At most one task per cluster CPU is in flight (longest first, as the local executor), so Ctrl-C knows which stacks
were running: those are cancelled in Ray and recorded as ``cancelled``; the ones not yet submitted never started.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from engine.config import RunConfig
from engine.sinks import RunOutcome
from engine.train import StackWork


def _train_stack_task(config_dicts: list[dict], device: str) -> list[dict[str, Any]]:
    """Runs on a Ray worker: train one stack in memory; return every run as plain data."""
    import torch

    from engine.sinks import MemorySink
    from engine.train import train_stack
    torch.set_num_threads(1)
    configs = [RunConfig.from_dict(d) for d in config_dicts]
    sinks = [MemorySink() for _ in configs]
    error = None
    try:
        train_stack(configs, sinks, device=device)
    except Exception as exc:  # train_stack finished the open runs as failed; send them back with the reason
        error = f"{type(exc).__name__}: {exc}"
    out = []
    for config, s in zip(configs, sinks):
        status = s.status if s.status not in ("pending", "running") else "failed"
        out.append({"config": config.to_dict(), "meta": {**s.meta, "executor": "ray"}, "epochs": s.epochs,
                    "status": status, "summary": s.summary, "checkpoint": s.checkpoint,
                    "error": s.error or (error if status == "failed" else None)})
    return out


def _connect(address: str | None) -> None:
    import ray
    if ray.is_initialized():
        return
    engine_dir = str(Path(__file__).resolve().parents[1])
    ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
             runtime_env={"py_modules": [engine_dir], "excludes": ["__pycache__", "*.pyc"]})


def _write(store, run: dict[str, Any], extra_meta: dict[str, Any]) -> RunOutcome:
    """Replay one returned run into the store; returns its outcome."""
    from engine.sinks import MemorySink, replay
    from engine.sinks import StoreSink
    memory = MemorySink(config=RunConfig.from_dict(run["config"]), meta=run["meta"], epochs=run["epochs"],
                        status=run["status"], summary=run["summary"], checkpoint=run["checkpoint"],
                        error=run["error"])
    sink = StoreSink(store, extra_meta)
    replay(memory, sink)
    return sink.outcome()


def _record_without_result(store, configs: list[RunConfig], status: str, error: str,
                           extra_meta: dict[str, Any]) -> list[RunOutcome]:
    """Runs whose task produced no result (cancelled, or lost with its node): record why, so they are retried."""
    from engine.sinks import StoreSink
    out = []
    for config in configs:
        sink = StoreSink(store, {**extra_meta, "executor": "ray"})
        sink.start(config, {"device": "ray", "stack_size": len(configs)})
        sink.finish(status, error=error)
        out.append(sink.outcome())
    return out


class RayExecutor:
    """Stacks as Ray tasks, at most ``workers`` (default: the cluster's CPUs) in flight at once."""

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        self.address, self.workers = address, workers
        self.parallelism = 0

    def run(self, stacks: list[list[RunConfig]], work: StackWork) -> None:
        """Train the stacks on Ray, reporting each as it returns; KeyboardInterrupt after Ctrl-C."""
        import ray

        _connect(self.address)
        cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
        self.parallelism = limit = self.workers or cpus
        device, store, extra_meta = str(work.device), work.store, work.extra_meta
        options: dict[str, Any] = {"num_cpus": 1, "max_retries": 0}
        if device.startswith("cuda"):
            options = {"num_cpus": 1, "num_gpus": 1, "max_retries": 0}
        remote = ray.remote(**options)(_train_stack_task)
        pending = list(enumerate(stacks))
        in_flight: dict[Any, int] = {}
        try:
            while pending or in_flight:
                while pending and len(in_flight) < limit:
                    tid, stack = pending.pop(0)
                    in_flight[remote.remote([c.to_dict() for c in stack], device)] = tid
                done, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
                for ref in done:
                    tid = in_flight.pop(ref)
                    try:
                        runs = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        first = str(exc).splitlines()[0] if str(exc) else ""
                        message = f"ray task lost: {type(exc).__name__}: {first}"
                        work.done(tid, _record_without_result(store, stacks[tid], "failed", message, extra_meta))
                    else:
                        work.done(tid, [_write(store, run, extra_meta) for run in runs])
        except KeyboardInterrupt:
            import signal
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                for ref in in_flight:
                    ray.cancel(ref, force=False)
                deadline = time.monotonic() + 30
                for ref, tid in in_flight.items():
                    try:
                        # A stack that finished anyway is kept; a cancelled one is recorded as cancelled.
                        runs = ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
                        outcomes = [_write(store, run, extra_meta) for run in runs]
                    except Exception:
                        outcomes = _record_without_result(store, stacks[tid], "cancelled", "cancelled by the user",
                                                          extra_meta)
                    work.stopped(tid, outcomes)
            finally:
                signal.signal(signal.SIGINT, previous)
            raise
