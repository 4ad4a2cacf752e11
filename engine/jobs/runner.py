"""The process that executes one job: ``python -m engine.jobs.runner --store DIR --job ID --attempt N``.

The supervisor (supervisor.py) starts it in its own process group, so stopping it (cancel, wall-clock limit) kills the
whole group and leaves nothing behind. Here:

* the supervisor's stop signals become StopTraining (a KeyboardInterrupt), so ``train_stack`` ends its open runs in
  the store before the process exits: SIGTERM (cancel, supervisor shutdown) as ``cancelled``, SIGUSR1 (wall-clock
  limit) as ``timed_out``; finished runs are already sealed there. A stop that arrives while a run is being opened,
  logged or sealed waits for that to end, so no run is left half-open by it. Whatever this process still leaves
  open (it was killed after the grace period), the supervisor seals before it reports the job's end;
* the process dies with its supervisor (PR_SET_PDEATHSIG on Linux, a parent watchdog elsewhere): a supervisor killed
  with -9 leaves no orphan training on, and its open runs become ``interrupted`` in the store;
* progress (run-epochs done / total) and each run's outcome go into the job record as training goes;
* training is engine.train.run_configs (cached runs are skipped, the rest train in stacks) with JobSink, a store
  sink that a stop landing anywhere, even between opening a stack's runs and the training loop, cannot leave open.

The supervisor decides the job's final state from the exit code and from why it stopped the process.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from typing import Iterator

from engine.sinks import StoreSink
from engine.stop import StopTraining, stop_of

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_STALE = 3     # the job is not ours to run (not running, or another attempt): nothing done
EXIT_STOPPED = 130  # stopped by a stop signal (cancel, wall-clock limit, supervisor shutdown)

PROGRESS_EVERY_S = 0.3

# What each of the supervisor's stop signals means for the runs this process has open.
STOP_SIGNALS = {signal.SIGTERM: ("cancelled", "cancelled by the user (job stopped)"),
                signal.SIGUSR1: ("timed_out", "stopped at the job's wall-clock limit")}


class Stops:
    """Turns the first stop signal into StopTraining in the main thread, except inside ``shielded()`` blocks,
    where it is held until the block ends. (Blocking the signal with pthread_sigmask would not do: the kernel then
    hands it to another thread, and Python still runs the handler in the main thread at its next bytecode.)"""

    def __init__(self) -> None:
        self.depth = 0
        self.pending: StopTraining | None = None

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        # Once: a later signal must not interrupt the writes that record the open runs' end (the supervisor sends
        # SIGKILL after its grace period anyway, and then seals what is left itself).
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        stop = StopTraining(*STOP_SIGNALS[signal.Signals(signum)])
        if self.depth:
            self.pending = stop
            return
        raise stop

    @contextmanager
    def shielded(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if self.depth == 0 and self.pending is not None:
                stop, self.pending = self.pending, None
                raise stop


STOPS = Stops()


def die_with_parent(parent_pid: int) -> None:
    """Never outlive the supervisor that started us."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(EXIT_STALE)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


class Reporter:
    """Writes progress into the job record, at most every PROGRESS_EVERY_S unless forced; only while the record
    still says this attempt of the job is running (a stale process never overwrites a newer attempt)."""

    def __init__(self, queue, job_id: str, attempt: int) -> None:
        self.queue, self.job_id, self.attempt = queue, job_id, attempt
        self.last = 0.0

    def __call__(self, force: bool = False, **values) -> None:
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        from dataclasses import replace

        def change(job):
            if job.state != "running" or job.attempts != self.attempt:
                return None
            return replace(job, **values)
        self.queue.update(self.job_id, change, durable=force)


class JobSink(StoreSink):
    """A store sink that a stop can never leave half-done: opening, logging and finishing a run are shielded from
    the stop signals (the writer is either not created or known to us; an epoch is in the log and in memory or in
    neither; a run is sealed or still open), and ``close`` finishes a run that the training loop did not, wherever
    the stop landed."""

    def start(self, config, meta: dict) -> None:
        with STOPS.shielded():
            super().start(config, meta)

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        with STOPS.shielded():
            super().log_epoch(epoch, metrics)

    def finish(self, status: str, summary: dict | None = None, checkpoint: bytes | None = None,
               error: str | None = None) -> None:
        with STOPS.shielded():
            super().finish(status, summary=summary, checkpoint=checkpoint, error=error)

    def close(self, status: str, error: str) -> None:
        try:
            self.finish(status, error=error)
        except Exception as e:  # the run then shows as interrupted in the store; say why in the job's log
            print(f"could not record run {self.run_id} as {status}: {e}", file=sys.stderr)


def execute(queue, job, store, device: str, report: Reporter, executor=None) -> dict[str, str]:
    """Train the job's runs that the store lacks (engine.train.run_configs: completed or diverged runs are never
    retrained), stack by stack, reporting progress. Returns run_id -> outcome ('cached' for a cache hit).
    ``executor``: where the stacks train (default: here, one after the other; a RayExecutor for a cluster job)."""
    from engine.jobs.queue import validate_configs
    from engine.train import run_configs

    configs = validate_configs(list(job.configs))  # validated again: the record is a file anyone could edit
    epochs = {c.run_id: c.epochs for c in configs}
    if job.study:
        store.add_to_study(job.study, list(epochs))
    outcomes: dict[str, str] = {}
    done = 0

    def record(finished) -> None:
        nonlocal done
        for o in finished:
            outcomes[o.run_id] = "cached" if o.cached else o.status
            done += epochs[o.run_id]
        report(force=True, progress_done=done, progress_total=sum(epochs.values()), outcomes=dict(outcomes))

    opened: list[JobSink] = []

    def sink(store_, meta) -> JobSink:
        opened.append(JobSink(store_, meta))
        return opened[-1]

    meta = {"job_id": job.id, "pid": os.getpid(), **({"study": job.study} if job.study else {})}
    try:
        run_configs(configs, store, device=device, extra_meta=meta, sink_factory=sink, on_outcomes=record,
                    executor=executor, progress=lambda event: report(progress_done=event["run_epochs_done"]))
    except KeyboardInterrupt as stop:
        status, reason = stop_of(stop)
        for s in opened:
            s.close(status, reason)
        raise
    except Exception as exc:
        for s in opened:
            s.close("failed", f"{type(exc).__name__}: {exc}")
        raise
    return outcomes


def main(argv: list[str] | None = None) -> int:
    STOPS.install()  # first thing: a stop during start-up is a stop too
    parser = argparse.ArgumentParser(prog="python -m engine.jobs.runner", description="Run one queued job "
                                     "(started by the supervisor, `python -m engine.jobs.supervisor`).")
    parser.add_argument("--store", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--attempt", type=int, required=True)
    parser.add_argument("--parent", type=int, default=None, help="pid of the supervisor; exit when it dies")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.parent is not None:
        die_with_parent(args.parent)

    from engine.jobs.queue import JobQueue

    queue = JobQueue(args.store)
    job = queue.get(args.job)
    if job is None or job.state != "running" or job.attempts != args.attempt:
        print(f"job {args.job}: not running attempt {args.attempt} ({job.state if job else 'missing'}); "
              "nothing to do", file=sys.stderr)
        return EXIT_STALE
    report = Reporter(queue, job.id, args.attempt)
    try:
        import torch

        if args.threads:
            torch.set_num_threads(max(1, args.threads))
        from engine.jobs.device import job_device
        from engine.jobs.errors import JobValidationError
        from engine.store import RunStore
        from engine.train import device_name, resolve_device

        if job.ray_address:  # each node resolves the device itself; the job's process only drives
            from engine.study.ray_executor import RayExecutor
            executor = RayExecutor(job.ray_address)
            executor.connect()
            report(force=True, device_used=f"ray {job.ray_address} ({job.device})")
            print(f"job {job.id} attempt {args.attempt}: {len(job.run_ids)} run(s) on the Ray cluster at "
                  f"{job.ray_address}", file=sys.stderr, flush=True)
            execute(queue, job, RunStore(args.store), job.device, report, executor)
            return EXIT_OK
        device = job_device(job.device, job.slot or 0)
        try:
            resolved = resolve_device(device)
        except ValueError as e:  # resolve_device's message is clear; make it the project's error
            raise JobValidationError(str(e)) from None
        report(force=True, device_used=device_name(resolved))
        print(f"job {job.id} attempt {args.attempt}: {len(job.run_ids)} run(s) on {device_name(resolved)}",
              file=sys.stderr, flush=True)
        execute(queue, job, RunStore(args.store), str(resolved), report)
    except KeyboardInterrupt:
        print(f"job {job.id}: stopped; finished runs are kept in the store", file=sys.stderr, flush=True)
        return EXIT_STOPPED
    except Exception as exc:
        from engine.errors import is_user_error

        if is_user_error(exc):
            message = str(exc)
        else:
            traceback.print_exc()
            message = f"{type(exc).__name__}: {exc} (a bug; the traceback is in {queue.log_path(job.id)})"
        try:
            report(force=True, error=message)
        except Exception:  # the record could not be written: the supervisor still sees the exit code
            traceback.print_exc()
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
