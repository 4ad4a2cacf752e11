"""The one training driver: ``run_configs`` trains what the store lacks, stack by stack, and says how every run ended.

Every way of training goes through it: ``python -m engine train``, the jobs the dashboard launches
(engine/jobs/runner.py) and studies (engine/study/executor.py). It

1. drops duplicate configs and answers the ones the store already has (completed or diverged) from the cache;
2. groups the rest into stacks (runs that differ only in seed, lr, ... train as one model), or lets the caller
   order them (a study balances them over its processes: engine/study/schedule.py);
3. hands the stacks to an executor: ``InProcess`` (one after the other here: a GPU, one process, a job), a pool of
   training processes (engine/study/pool.py) or Ray (engine/study/ray_executor.py);
4. reports progress in run-epochs over the whole call and each stack's outcomes as the stack ends, and returns one
   ``RunOutcome`` per config.

Ctrl-C (or SIGTERM turned into KeyboardInterrupt): the open runs end as ``cancelled`` in the store and
``TrainingInterrupted`` (a KeyboardInterrupt) carries the outcomes of every run that ended.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Protocol

from engine.config import RunConfig
from engine.sinks import RunOutcome, StoreSink
from engine.train.loop import stack_key, train_stack

Schedule = Callable[[list[RunConfig]], list[list[RunConfig]]]


class TrainingInterrupted(KeyboardInterrupt):
    """Training was stopped; ``outcomes`` are those of every run that ended, the stopped ones as cancelled."""

    def __init__(self, outcomes: list[RunOutcome]) -> None:
        super().__init__("training interrupted")
        self.outcomes = outcomes


@dataclass
class StackWork:
    """What an executor is asked: train stacks into ``store``, and report back through ``progress(i, event)``
    (train_stack's events of stack i), ``done(i, outcomes)`` when stack i ended, ``stopped(i, outcomes)`` for a
    stack that a Ctrl-C ended."""
    store: Any
    device: Any                      # a torch.device for this process, a device name for other processes
    extra_meta: dict[str, Any]
    sink_factory: Callable[..., StoreSink]
    progress: Callable[[int, dict[str, Any]], None]
    done: Callable[[int, list[RunOutcome]], None]
    stopped: Callable[[int, list[RunOutcome]], None]


class StackExecutor(Protocol):
    """Where stacks train. ``run`` trains every stack, reporting through ``work``; on Ctrl-C it lets the runs in
    progress end as cancelled, reports them through ``work.stopped`` and raises KeyboardInterrupt. ``parallelism``:
    how many stacks its last ``run`` trained at once."""
    parallelism: int

    def run(self, stacks: list[list[RunConfig]], work: StackWork) -> None: ...


def group_into_stacks(configs: Iterable[RunConfig], max_stack: int = 64) -> list[list[RunConfig]]:
    """Group configs by stack key, preserving order, in stacks of at most ``max_stack`` runs."""
    groups: dict[tuple, list[RunConfig]] = {}
    for config in configs:
        groups.setdefault(stack_key(config), []).append(config)
    return [group[i:i + max_stack] for group in groups.values() for i in range(0, len(group), max_stack)]


def stack_outcomes(configs: list[RunConfig], sinks: list[StoreSink], error: str | None = None) -> list[RunOutcome]:
    """How each run of a trained stack ended. With ``error`` (the stack crashed) every run that did not finish
    fails with it, including those whose sink never started (a sink that fails to start stops train_stack before
    it can finish the others)."""
    out = []
    for config, sink in zip(configs, sinks):
        if error is not None and sink.writer is not None and sink.status == "running":
            try:
                sink.finish("failed", error=error)
            except Exception:  # the run then reads as interrupted in the store; the outcome still says why
                pass
        o = sink.outcome() if sink.run_id else RunOutcome(config.run_id, "failed" if error else "cancelled")
        if error is not None and o.status in ("failed", "cancelled") and not o.error:
            o = replace(o, status="failed", error=error)
        out.append(o)
    return out


def train_and_report(configs: list[RunConfig], sinks: list[StoreSink], device: Any,
                     progress: Callable[[dict[str, Any]], None] | None = None,
                     keep_going: bool = True) -> list[RunOutcome]:
    """Train one stack; how each run ended. With ``keep_going`` a crash of the stack fails its unfinished runs with
    the message instead of raising. KeyboardInterrupt propagates (train_stack has finished the open runs)."""
    try:
        train_stack(configs, sinks, device=device, progress=progress)
    except Exception as exc:
        if not keep_going:
            raise
        return stack_outcomes(configs, sinks, error=f"{type(exc).__name__}: {exc}")
    return stack_outcomes(configs, sinks)


class InProcess:
    """The stacks one after the other in this process. ``keep_going``: a stack that crashes fails its runs and the
    next one starts (a study); without it the exception propagates (a job fails with it)."""
    parallelism = 1

    def __init__(self, keep_going: bool = False) -> None:
        self.keep_going = keep_going

    def run(self, stacks: list[list[RunConfig]], work: StackWork) -> None:
        for i, stack in enumerate(stacks):
            sinks = [work.sink_factory(work.store, work.extra_meta) for _ in stack]
            try:
                outcomes = train_and_report(stack, sinks, work.device, lambda event, i=i: work.progress(i, event),
                                            self.keep_going)
            except KeyboardInterrupt:
                work.stopped(i, stack_outcomes(stack, sinks))
                raise
            work.done(i, outcomes)


def run_configs(configs: Iterable[RunConfig], store, device: Any = "auto",
                progress: Callable[[dict[str, Any]], None] | None = None, extra_meta: dict | None = None,
                max_stack: int = 64, sink_factory: Callable[..., StoreSink] = StoreSink,
                on_outcomes: Callable[[list[RunOutcome]], None] | None = None,
                executor: StackExecutor | None = None, schedule: Schedule | None = None) -> list[RunOutcome]:
    """Train every config whose result is not cached in ``store``; a cached or duplicate config trains nothing.

    ``progress`` events carry ``run_epochs_done`` / ``run_epochs_total`` over all runs of this call (cached ones
    counted as done), and train_stack's own fields (epoch, epochs, runs, active, run_ids) when a training loop sent
    them. ``on_outcomes`` hears the cached runs first, then each stack's runs as the stack ends. ``sink_factory(store,
    extra_meta)`` makes each run's sink for stacks trained in this process. ``executor``: where the stacks train
    (default ``InProcess()``); ``schedule(missing_configs)``: the stacks, in the order to train them (default
    ``group_into_stacks``). Raises TrainingInterrupted on Ctrl-C.
    """
    unique = list({c.run_id: c for c in configs}.values())
    outcomes: dict[str, RunOutcome] = {}
    missing = []
    for config in unique:
        record = store.cached(config.run_id)
        if record is not None:
            outcomes[config.run_id] = RunOutcome(config.run_id, record.status, cached=True)
        else:
            missing.append(config)
    if on_outcomes is not None:
        on_outcomes(list(outcomes.values()))
    stacks = schedule(missing) if schedule is not None else group_into_stacks(missing, max_stack)
    total = sum(c.epochs for c in unique)
    finished = total - sum(c.epochs for c in missing)  # run-epochs of cached runs and of stacks that ended
    in_flight: dict[int, int] = {}                      # stack -> run-epochs done so far

    def report(event: dict[str, Any]) -> None:
        if progress is not None:
            progress({**event, "run_epochs_done": finished + sum(in_flight.values()), "run_epochs_total": total})

    def on_progress(i: int, event: dict[str, Any]) -> None:
        in_flight[i] = event["epoch"] * event["runs"]
        report(event)

    def record(i: int, finished_now: list[RunOutcome]) -> None:
        nonlocal finished
        outcomes.update((o.run_id, o) for o in finished_now)
        in_flight.pop(i, None)
        finished += len(stacks[i]) * stacks[i][0].epochs

    def done(i: int, finished_now: list[RunOutcome]) -> None:
        record(i, finished_now)
        if on_outcomes is not None:
            on_outcomes(finished_now)
        report({})

    work = StackWork(store, device, dict(extra_meta or {}), sink_factory, on_progress, done, record)
    try:
        if stacks:
            (executor or InProcess()).run(stacks, work)
    except KeyboardInterrupt:
        raise TrainingInterrupted(list(outcomes.values())) from None
    return [outcomes[c.run_id] for c in unique]
