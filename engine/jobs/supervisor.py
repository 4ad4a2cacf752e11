"""The supervisor: ``python -m engine.jobs.supervisor --store DIR``. One per store (an flock guarantees it).

It lives outside Streamlit (the page starts it detached, in its own session, when none is alive), so reruns,
reloads, closed tabs and a restart of the Streamlit server neither stop it nor start a second one. Every
``poll_s`` it

* starts queued jobs, oldest first, while fewer than ``max_running`` run (a job whose runs overlap a running
  job's waits for it: those runs are then cached); each job runs in its own process group (runner.py);
* stops a job whose cancel flag is set or whose wall-clock limit passed: SIGTERM (cancel) or SIGUSR1 (limit) to its
  group, and the runs it has open end as ``cancelled`` / ``timed_out`` in the store; SIGKILL after ``grace_s``;
* when a job process has ended, however it ended, first seals in the store whatever runs it left open (``cancelled``,
  ``timed_out``, or ``interrupted`` when something else killed it), then records the job's end: ``completed``,
  ``failed`` (with the error), ``cancelled``, ``timed_out`` or ``interrupted``. So a job never reads as ended while
  one of its runs still reads ``running``.

On start it settles what a dead predecessor left: a job still marked ``running`` whose process is gone (or is
killed now: it belonged to the dead supervisor) has its open runs sealed as ``interrupted`` and becomes
``interrupted``; its finished runs are in the store and re-queueing it trains only the rest. ``queued`` jobs simply
start. With ``--idle-exit S`` it exits after S seconds with nothing to do; the page starts a new one when needed.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path

from engine.errors import report_user_errors
from engine.study.plan import format_duration

from .limits import Limits, Retention, load_limits, load_retention
from .processes import PROJECT_ROOT, child_env, kill_group, process_alive, wait_gone
from .queue import Job, JobQueue
from .runner import EXIT_FAILED, EXIT_OK, EXIT_STALE, EXIT_STOPPED


@dataclass
class _Child:
    job_id: str
    popen: subprocess.Popen
    slot: int
    attempt: int
    run_ids: frozenset[str]
    timeout_s: float
    started: float            # time.monotonic()
    stop_reason: str | None = None   # cancelled | timed_out | shutdown
    term_at: float | None = None


class Supervisor:
    def __init__(self, queue: JobQueue, limits: Limits, poll_s: float = 0.2, idle_exit_s: float | None = None,
                 log=None, retention: Retention | None = None, store=None) -> None:
        self.queue, self.limits, self.poll_s, self.idle_exit_s = queue, limits, poll_s, idle_exit_s
        self.retention = retention or Retention()
        self.store = store if store is not None else queue.store()  # compacted between jobs (maybe_compact)
        self.children: dict[str, _Child] = {}
        self._stopping = False
        self._lock_fd: int | None = None
        self._log = log or (lambda msg: print(f"{time.strftime('%H:%M:%S')} [{os.getpid()}] {msg}",
                                              file=sys.stderr, flush=True))
        from .device import cpu_cores

        self.threads = max(1, cpu_cores() // limits.max_running)  # torch threads per job: jobs share the cores

    # --- life cycle -----------------------------------------------------------------------------------------------
    def run(self, lock_fd: int | None = None) -> int:
        """Supervise until stopped (SIGTERM, SIGINT, SIGHUP) or idle for ``idle_exit_s``. ``lock_fd``: the
        supervisor lock, when the caller took it already."""
        self._lock_fd = lock_fd if lock_fd is not None else self.queue.take_supervisor_lock()
        if self._lock_fd is None:
            self._log(f"another supervisor holds {self.queue.supervisor_lock}: {self.queue.supervisor()}; exiting")
            return 0
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self._log(f"supervising {self.queue.dir} (max {self.limits.max_running} running, "
                  f"grace {self.limits.grace_s:g} s)")
        try:
            self.recover()
            idle_since = time.monotonic()
            while not self._stopping:
                try:
                    busy = self.step()
                except Exception as exc:  # a damaged record, a full disk: say so, keep supervising
                    self._log(f"error in a pass over the queue (retrying): {type(exc).__name__}: {exc}")
                    busy = True
                    time.sleep(1.0)
                if busy:
                    idle_since = time.monotonic()
                elif self.idle_exit_s is not None and time.monotonic() - idle_since > self.idle_exit_s:
                    if self._release_if_still_idle():
                        self._log("idle: exiting")
                        return 0
                    idle_since = time.monotonic()
                time.sleep(self.poll_s)
            self.shutdown()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
        return 0

    def _on_signal(self, signum, frame) -> None:
        self._stopping = True

    def _release_if_still_idle(self) -> bool:
        """Give the lock up, then look once more: a job queued by a page that saw us alive a moment ago is taken
        up again (if no new supervisor took the lock meanwhile) instead of waiting for the next page load."""
        os.close(self._lock_fd)
        self._lock_fd = None
        if not self.queue.jobs(["queued"]):
            return True
        self._lock_fd = self.queue.take_supervisor_lock()
        return self._lock_fd is None

    def recover(self) -> None:
        """Jobs left ``running`` by a dead supervisor: kill any process still at it, mark the job interrupted."""
        for job in self.queue.jobs(["running"]):
            if job.id in self.children:
                continue
            if process_alive(job.pid, job.pid_started):
                self._log(f"job {job.id}: killing process group {job.pid} left by a dead supervisor")
                kill_group(job.pid)
                wait_gone(job.pid, job.pid_started)
            stop = "cancelled" if job.cancel_requested else "interrupted"
            sealed = self._seal_runs(job, stop, "the worker stopped while this run trained")

            def change(j: Job) -> Job | None:
                if j.state != "running" or j.id in self.children:
                    return None
                if j.cancel_requested:
                    return replace(j, state="cancelled", finished_at=time.time(), outcomes={**j.outcomes, **sealed},
                                   error="cancelled (the worker stopped while cancelling it)")
                return replace(j, state="interrupted", finished_at=time.time(), outcomes={**j.outcomes, **sealed},
                               error="the worker stopped while this job ran (killed, or the machine restarted); "
                                     "its finished runs are kept in the store: queue it again to train the rest")
            if self.queue.update(job.id, change) is not None:
                self._log(f"job {job.id}: interrupted (found running without a live process)")

    def shutdown(self) -> None:
        """SIGTERM/SIGINT to the supervisor: stop every job process (runs end cancelled), mark jobs interrupted."""
        self._log("stopping: jobs in progress end as interrupted")
        for child in self.children.values():
            self._stop(child, "shutdown")
        deadline = time.monotonic() + self.limits.grace_s
        while self.children and time.monotonic() < deadline:
            self._reap_finished()
            time.sleep(0.05)
        for child in list(self.children.values()):
            kill_group(child.popen.pid)
            child.popen.wait()
        self._reap_finished()

    # --- one pass -------------------------------------------------------------------------------------------------
    def step(self) -> bool:
        """Reap, stop and start jobs. True when there is work (running or waiting)."""
        now = time.monotonic()
        for child in list(self.children.values()):
            if child.popen.poll() is not None:
                continue
            if child.stop_reason is None:
                job = self.queue.get(child.job_id)
                if job is None or job.cancel_requested:
                    self._stop(child, "cancelled")
                elif now - child.started > child.timeout_s:
                    self._stop(child, "timed_out")
            elif now - child.term_at > self.limits.grace_s:
                kill_group(child.popen.pid)
        self._reap_finished()
        queued = self.queue.jobs(["queued"])
        busy = set().union(*(c.run_ids for c in self.children.values())) if self.children else set()
        for job in queued:
            if len(self.children) >= self.limits.max_running:
                break
            if busy & set(job.run_ids):
                continue  # the same runs are training in another job: they will be cached when it ends
            if self._launch(job):
                busy |= set(job.run_ids)
        return bool(self.children) or bool(queued)

    def _stop(self, child: _Child, reason: str) -> None:
        if child.stop_reason is not None:
            return
        child.stop_reason, child.term_at = reason, time.monotonic()
        self._log(f"job {child.job_id}: stopping ({reason})")
        kill_group(child.popen.pid, signal.SIGUSR1 if reason == "timed_out" else signal.SIGTERM)

    def _launch(self, job: Job) -> bool:
        used = {c.slot for c in self.children.values()}
        slot = min(set(range(self.limits.max_running)) - used)
        attempt = job.attempts + 1
        now = time.time()

        def start(j: Job) -> Job | None:
            if j.state != "queued":
                return None
            return replace(j, state="running", started_at=now, finished_at=None, slot=slot, attempts=attempt,
                           cancel_requested=False, supervisor_pid=os.getpid(), error=None, progress_done=0,
                           pid=None, pid_started=None, device_used=None)
        stored = self.queue.update(job.id, start)
        if stored is None or stored.state != "running" or stored.attempts != attempt:
            return False  # cancelled (or removed) meanwhile
        cmd = [sys.executable, "-m", "engine.jobs.runner", "--store", str(self.queue.root), "--job", job.id,
               "--attempt", str(attempt), "--parent", str(os.getpid()), "--threads", str(self.threads)]
        try:
            with open(self.queue.log_path(job.id), "ab") as log:
                popen = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=child_env(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         close_fds=True)
        except OSError as e:
            self.queue.update(job.id, state="failed", finished_at=time.time(),
                              error=f"could not start the job's process: {e}")
            return False
        started = None
        with suppress(Exception):
            import psutil
            started = psutil.Process(popen.pid).create_time()
        self.queue.update(job.id, pid=popen.pid, pid_started=started)
        self.children[job.id] = _Child(job.id, popen, slot, attempt, frozenset(job.run_ids), stored.timeout_s,
                                       time.monotonic())
        self._log(f"job {job.id}: started attempt {attempt} as pid {popen.pid} (slot {slot})")
        return True

    def _reap_finished(self) -> None:
        ended = 0
        for child in list(self.children.values()):
            rc = child.popen.poll()
            if rc is None:
                continue
            kill_group(child.popen.pid)  # anything the job process left in its group goes with it
            del self.children[child.job_id]
            self._finish(child, rc)
            ended += 1
        if ended:
            self.maintain()

    def maintain(self) -> None:
        """Between jobs: compact the store when sealed runs piled up (here, not in a training process's finish,
        which it would pause; compaction's own lock keeps it to one at a time, and readers see every run exactly
        once throughout), and prune finished jobs past their retention. Never fails the supervisor."""
        try:
            self.store.maybe_compact()
            removed = self.queue.prune(self.retention)
            if removed:
                self._log(f"pruned {len(removed)} finished job(s) past their retention")
        except Exception as exc:  # a full or read-only disk: say so, keep supervising
            self._log(f"maintenance failed (the runs are safe): {type(exc).__name__}: {exc}")

    def _seal_runs(self, job: Job, status: str, error: str) -> dict[str, str]:
        """Seal the runs this job's (now dead) process left open, as ``status``; run_id -> sealed status."""
        try:
            sealed = self.queue.store().seal_abandoned(job.run_ids, status, error, owner={"job_id": job.id},
                                                       purpose=f"supervisor of job {job.id}")
        except Exception as exc:  # a damaged or full store: say so; readers still show those runs interrupted
            self._log(f"job {job.id}: could not seal its open runs: {type(exc).__name__}: {exc}")
            return {}
        for run_id, st in sealed.items():
            self._log(f"job {job.id}: sealed run {run_id} left open by its process as {st}")
        return sealed

    def _finish(self, child: _Child, rc: int) -> None:
        log = self.queue.log_path(child.job_id)
        # The runs first, the job after: whoever sees the job ended sees its runs ended too.
        run_status = {"cancelled": "cancelled", "timed_out": "timed_out", "shutdown": "cancelled"}.get(
            child.stop_reason or "", "failed" if rc == EXIT_FAILED else "interrupted")
        job = self.queue.get(child.job_id)
        sealed = self._seal_runs(job, run_status, f"the job's process ended ({child.stop_reason or f'exit {rc}'}) "
                                                  "before it recorded this run's end") if job else {}

        def end(j: Job) -> Job | None:
            if j.state != "running" or j.attempts != child.attempt:
                return None
            kept = "finished runs are kept in the store"
            done = {"finished_at": time.time(), "outcomes": {**j.outcomes, **sealed}}
            if child.stop_reason == "cancelled":
                return replace(j, state="cancelled", error=f"cancelled by the user; {kept}", **done)
            if child.stop_reason == "timed_out":
                return replace(j, state="timed_out", error=f"stopped at its wall-clock limit of "
                                                           f"{format_duration(j.timeout_s)}; {kept}", **done)
            if child.stop_reason == "shutdown":
                return replace(j, state="interrupted", error=f"the worker was stopped while this job ran; {kept}: "
                                                             "queue it again to train the rest", **done)
            if rc == EXIT_OK:
                return replace(j, state="completed", progress_done=j.progress_total, error=None, **done)
            if rc == EXIT_FAILED:
                return replace(j, state="failed", error=j.error or f"the job's process failed; see {log}", **done)
            if rc < 0 or rc == EXIT_STOPPED:
                how = f"signal {signal.Signals(-rc).name}" if rc < 0 else "an interrupt"
                return replace(j, state="interrupted", error=f"the job's process was stopped by {how} from outside "
                                                             f"the queue; {kept}: queue it again to train the rest",
                               **done)
            if rc == EXIT_STALE:
                return replace(j, state="interrupted", error="the job's process found the job changed under it; "
                                                             "queue it again", **done)
            return replace(j, state="failed", error=f"the job's process exited with code {rc}; see {log}", **done)
        job = self.queue.update(child.job_id, end)
        self._log(f"job {child.job_id}: exit {rc} -> {job.state if job else 'gone'}")


def add_supervisor_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-running", type=int, default=None,
                        help="jobs running at once [default: $ABLATION_LAB_MAX_RUNNING, else one per GPU, else one "
                             "per two CPU cores]")
    parser.add_argument("--grace-s", type=float, default=None,
                        help="seconds a stopped job gets to close its runs before it is killed [default: 10]")
    parser.add_argument("--poll-s", type=float, default=0.2, help="seconds between passes [default: 0.2]")
    parser.add_argument("--idle-exit", type=float, default=None, metavar="S",
                        help="exit after S seconds with no job queued or running [default: never]")


def run_supervisor(args: argparse.Namespace, store_root: str | Path) -> int:
    queue = JobQueue(store_root)
    # The lock first, the device probe (a subprocess that imports torch) after: the page may start several
    # supervisors at once, and only the one that holds the lock should pay for it.
    lock_fd = queue.take_supervisor_lock()
    if lock_fd is None:
        print(f"another supervisor is alive for {store_root}: {queue.supervisor()}; exiting", file=sys.stderr)
        return 0
    try:
        from engine.store import RunStore, compact_threshold_from_env
        limits = load_limits(max_running=args.max_running, grace_s=args.grace_s)
        retention = load_retention()
        store = RunStore(store_root, compact_threshold=compact_threshold_from_env())
    except BaseException:
        os.close(lock_fd)
        raise
    return Supervisor(queue, limits, poll_s=args.poll_s, idle_exit_s=args.idle_exit, retention=retention,
                      store=store).run(lock_fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.jobs.supervisor",
                                     description="Supervise the job queue of a run store (one per store).")
    parser.add_argument("--store", default=None, help="run store folder [default: $ABLATION_LAB_STORE, else runs/]")
    parser.add_argument("--detach", action="store_true",
                        help="fork into the background and return at once (how the dashboard starts it)")
    add_supervisor_flags(parser)
    args = parser.parse_args(argv)
    if args.store is None:
        from engine.store import default_store_root
        args.store = str(default_store_root())
    if args.detach:
        if os.fork() > 0:
            os._exit(0)  # the caller reaps this parent at once; the child belongs to init from now on
        os.setsid()
    return report_user_errors(lambda: run_supervisor(args, args.store))


if __name__ == "__main__":
    sys.exit(main())
