"""The job queue: validation and idempotent submission, the queue cap under 50 rapid submissions, the concurrency
limit, cancel and wall-clock limit without leftover processes, kill -9 of the supervisor and recovery, and (on a
CUDA machine) runs on the GPU.

Supervisors run as real processes (``python -m engine.jobs.supervisor``) on a temporary store; every job runs in its own
process, as in production. Jobs are tiny points runs, except the "long" ones that are stopped on purpose.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from engine.config import ConfigError, RunConfig
from engine.jobs import JobQueue, JobValidationError, Limits, QueueFullError
from engine.jobs.processes import PROJECT_ROOT
from engine.jobs.service import ensure_supervisor, stop_supervisor
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(120)


def tiny(seed: int = 0, epochs: int = 2, **kw) -> dict:
    values = {"task": "points", "n_samples": 200, "batch_size": 50, "hidden": [8], "epochs": epochs, "seed": seed}
    return RunConfig.from_dict({**values, **kw}).to_dict()


def long_run(seed: int = 0, **kw) -> dict:
    # ~700 steps per epoch for 10000 epochs: never finishes within a test
    return tiny(seed, epochs=10_000, n_samples=1000, batch_size=1, **kw)


def queue_state(root: Path) -> str:
    """What the queue and the store hold: printed when a wait times out."""
    from engine.store import RunStore
    store = RunStore(root)
    lines = []
    for job in JobQueue(root).jobs():
        runs = {r: (rec.status, rec.n_epochs) if (rec := store.get(r)) else None for r in job.run_ids}
        lines.append(f"job {job.id} {job.state} pid={job.pid} error={job.error!r} runs={runs}")
    err = root / "supervisor.err"
    tail = err.read_text()[-1500:] if err.exists() else ""
    return "\n".join(lines) + "\nsupervisor log:\n" + tail


class Supervisor:
    """A supervisor process on a test store; killed (with any job process it left) at teardown."""

    def __init__(self, root: Path, max_running: int = 1, grace_s: float = 3.0, env: dict | None = None):
        self.root, self.max_running, self.grace_s, self.env = root, max_running, grace_s, env or {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Supervisor":
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.jobs.supervisor", "--store", str(self.root), "--max-running",
             str(self.max_running), "--poll-s", "0.05", "--grace-s", str(self.grace_s)],
            cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(self.root / "supervisor.err", "ab"))
        wait_for(lambda: JobQueue(self.root).supervisor(), 60, what="the supervisor's lock",
                 show=lambda: (self.root / "supervisor.err").read_text()[-2000:])
        return self

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for job in JobQueue(self.root).jobs():  # belt and braces: no job process survives a test
            if job.pid and psutil.pid_exists(job.pid):
                try:
                    os.killpg(job.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


@pytest.fixture
def store_root(tmp_path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


@pytest.fixture
def supervisors(store_root):
    made: list[Supervisor] = []

    def make(**kw) -> Supervisor:
        s = Supervisor(store_root, **kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def group_alive(pid: int) -> list[psutil.Process]:
    """Processes still in the process group led by ``pid``."""
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            pass
    return out


# --- submission ---------------------------------------------------------------------------------------------------

def test_crafted_invalid_config_gets_the_forms_error_and_nothing_is_queued(store_root):
    queue = JobQueue(store_root)
    crafted = {"task": "points", "model": "cnn"}
    with pytest.raises(ConfigError) as direct:
        RunConfig.from_dict(crafted)
    with pytest.raises(ConfigError) as via_queue:
        queue.submit("run", [crafted], client_token="t")
    assert str(via_queue.value) == str(direct.value)
    assert "model=cnn needs an image task" in str(via_queue.value)
    for bad, kind, message in (([{"task": "points", "momentum": 0.9}], "run", "momentum applies only to"),
                               ([{"task": "points", "bogus": 1}], "run", "unknown key(s) bogus"),
                               ([{"lr": -1}], "run", "lr must be > 0")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            queue.submit(kind, bad)
    with pytest.raises(JobValidationError, match="device must be"):
        queue.submit("run", [tiny()], device="tpu")
    with pytest.raises(JobValidationError, match="needs a study name"):
        queue.submit("study", [tiny()])
    with pytest.raises(JobValidationError, match="wall-clock limit"):
        queue.submit("run", [tiny()], timeout_s=-5)
    assert queue.jobs() == []


def test_same_submission_queues_once(store_root):
    queue = JobQueue(store_root)
    first = queue.submit("study", [tiny(0), tiny(1)], study="s1", client_token="nonce-1")
    again = queue.submit("study", [tiny(0), tiny(1)], study="s1", client_token="nonce-1")
    assert first.created and not again.created and again.job.id == first.job.id
    other = queue.submit("study", [tiny(0), tiny(1)], study="s1", client_token="nonce-2")
    assert other.created and other.job.id != first.job.id
    job = queue.require(first.job.id)
    assert job.state == "queued" and job.run_ids == tuple(RunConfig.from_dict(tiny(s)).run_id for s in (0, 1))
    assert job.progress_total == 4 and job.kind == "study" and job.study == "s1"
    assert len(queue.jobs()) == 2


def test_cancel_and_requeue_of_queued_jobs(store_root):
    queue = JobQueue(store_root)
    job = queue.submit("run", [tiny()]).job
    assert queue.cancel(job.id).state == "cancelled"
    assert queue.cancel(job.id).state == "cancelled"  # cancelling twice changes nothing
    assert queue.requeue(job.id).state == "queued"


def test_fifty_rapid_submissions_respect_the_cap_and_the_concurrency_limit(store_root, supervisors):
    queue = JobQueue(store_root)
    limits = Limits(max_running=2, max_queued=4)
    accepted, refused, errors = [], [], []

    def submit(i: int) -> None:
        try:
            s = JobQueue(store_root).submit("run", [tiny(seed=i)], client_token=f"tab-{i}", limits=limits)
            accepted.append(s.job.id) if s.created else errors.append("not created")
        except QueueFullError as e:
            refused.append(str(e))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(accepted) == 4 and len(refused) == 46
    assert all("the cap is 4 queued jobs" in r for r in refused)
    assert len(queue.jobs(["queued"])) == 4

    supervisors(max_running=2).start()
    most = 0

    def all_done() -> bool:
        nonlocal most
        states = [j.state for j in queue.jobs()]
        most = max(most, states.count("running"))
        return all(s == "completed" for s in states)
    wait_for(all_done, 90, every=0.02, what="all four jobs to complete")
    assert most == 2, f"expected two jobs at once at some point and never more, saw at most {most}"
    from engine.store import RunStore
    store = RunStore(store_root)
    for job in queue.jobs():
        assert job.fraction == 1.0 and job.outcomes == {job.run_ids[0]: "completed"}
        assert store.get(job.run_ids[0]).status == "completed"


# --- stopping jobs ----------------------------------------------------------------------------------------------------

def test_cancel_stops_the_job_and_leaves_no_processes(store_root, supervisors):
    queue = JobQueue(store_root)
    supervisors(max_running=1, grace_s=5.0).start()
    to_cancel = queue.submit("run", [long_run(0)]).job
    from engine.store import RunStore
    store = RunStore(store_root)
    show = lambda: queue_state(store_root)

    def training(job_id: str) -> bool:
        job = queue.require(job_id)
        return job.state == "running" and job.pid and store.attempts(job.run_ids[0])
    wait_for(lambda: training(to_cancel.id), 60, what="the first job to train", show=show)
    pid = queue.require(to_cancel.id).pid
    queue.cancel(to_cancel.id)
    job = wait_for(lambda: (j := queue.require(to_cancel.id)).state != "running" and j, 60, what="cancel", show=show)
    assert job.state == "cancelled" and "cancelled by the user" in job.error
    assert group_alive(pid) == []
    # The stop signal became StopTraining inside train_stack: the open run was recorded as cancelled
    assert store.get(job.run_ids[0]).status == "cancelled", show()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


# How a job ends at a given moment of its run -> (the job's state, the run's status in the store right after).
STOP_MOMENTS = {
    # cancelled while the model is built and no epoch has run
    "cancel before the first epoch": ("before-first-epoch", "cancel", "cancelled", "cancelled"),
    # cancelled in the middle of training (the run has logged an epoch; the signal lands inside the next one)
    "cancel during an epoch": (None, "cancel", "cancelled", "cancelled"),
    # cancelled, and the job's process hangs while sealing the cancelled run: the supervisor kills it after the
    # grace period and seals the run itself, with the result it had recorded
    "cancel, then killed while sealing": ("sealing", "cancel", "cancelled", "cancelled"),
    # the job's process killed from outside the queue (OOM killer, kill -9) mid-training
    "kill -9 during an epoch": (None, "kill9", "interrupted", "interrupted"),
    # the wall-clock limit passes while the run is open (held before its first epoch, so that a slow start on a
    # loaded machine cannot make the limit pass before the run exists)
    "wall-clock limit": ("before-first-epoch", "timeout", "timed_out", "timed_out"),
}
TIMEOUT_S = 30.0  # far above a job process's start-up: a few seconds, 10-17 s measured at load 19 on 2 cores


@pytest.mark.parametrize("moment", list(STOP_MOMENTS))
def test_a_job_ends_only_after_its_runs_are_recorded_ended(store_root, supervisors, tmp_path, moment):
    pause_at, how, job_state, run_status = STOP_MOMENTS[moment]
    env = {"ABLATION_LAB_PAUSE_AT": pause_at or "", "ABLATION_LAB_PAUSE_DIR": str(tmp_path)}
    supervisors(max_running=1, grace_s=2.0, env=env).start()
    queue = JobQueue(store_root)
    from engine.store import RunStore
    store = RunStore(store_root)
    show = lambda: queue_state(store_root) + f"\npause markers: {sorted(p.name for p in tmp_path.glob('paused-*'))}"
    job = queue.submit("run", [long_run(0)], **({"timeout_s": TIMEOUT_S} if how == "timeout" else {})).job
    run_id = job.run_ids[0]
    paused = lambda point: any(tmp_path.glob(f"paused-{point}-*"))

    if pause_at == "before-first-epoch":
        wait_for(lambda: paused(pause_at), 60, what="the job's process to reach its first epoch", show=show)
    else:
        wait_for(lambda: (r := store.get(run_id)) is not None and r.n_epochs >= 1, 60,
                 what="the run to log an epoch", show=show)
    pid = queue.require(job.id).pid
    if how == "cancel":
        queue.cancel(job.id)
    elif how == "kill9":
        os.killpg(pid, signal.SIGKILL)
    if pause_at == "sealing":
        wait_for(lambda: paused("sealing"), 60, what="the job's process to hang while sealing", show=show)

    ended = wait_for(lambda: (j := queue.require(job.id)).state not in ("queued", "running") and j, 60,
                     what="the job to end", show=show)
    record = store.get(run_id)  # right after the job reports its end: never "running"
    assert (ended.state, record.status) == (job_state, run_status), show()
    if how == "timeout":
        assert "wall-clock limit" in ended.error and "wall-clock limit" in record.error
    assert not store.layout.live_dir(run_id, record.attempt).exists(), "the run must be sealed, not left live"
    assert ended.outcomes.get(run_id, run_status) == run_status
    if pause_at == "before-first-epoch":
        assert record.n_epochs == 0
    else:
        assert record.n_epochs >= 1  # every epoch logged before the stop is kept
    assert group_alive(pid) == []
    assert store.check().ok, store.check()
    # A stopped run is not a result: queued again, it trains again (here: until cancelled once more).
    assert store.cached(run_id) is None


# --- crash safety -----------------------------------------------------------------------------------------------------

def test_kill9_of_the_supervisor_mid_job_then_restart_recovers(store_root, supervisors):
    from engine.store import RunStore
    queue = JobQueue(store_root)
    store = RunStore(store_root)
    # Two stacks (different widths): the short first run completes, then the long one trains.
    short, long_ = tiny(0, epochs=2), long_run(0, hidden=[9])
    killed = queue.submit("study", [short, long_], study="crash").job
    waiting = queue.submit("run", [tiny(5)]).job
    first = supervisors(max_running=1).start()
    short_id, long_id = killed.run_ids
    wait_for(lambda: store.cached(short_id) is not None and store.attempts(long_id), 40,
             what="the first run to complete and the second to start")
    child = queue.require(killed.id).pid
    first.kill9()
    # The job's process dies with its supervisor (PR_SET_PDEATHSIG / watchdog): nothing trains on unsupervised.
    wait_for(lambda: not group_alive(child), 10, what="the orphaned job process to die")
    assert queue.require(killed.id).state == "running"  # nobody has looked yet
    assert queue.require(waiting.id).state == "queued"

    supervisors(max_running=1).start()
    job = wait_for(lambda: (j := queue.require(killed.id)).state != "running" and j, 10, what="recovery")
    assert job.state == "interrupted" and "queue it again" in job.error
    assert store.get(short_id).status == "completed"  # finished runs are kept
    assert store.get(long_id).status != "completed"
    done = wait_for(lambda: (j := queue.require(waiting.id)).state == "completed" and j, 40,
                    what="the queued job to resume")
    assert store.get(done.run_ids[0]).status == "completed"
    # An interrupted job can be queued again; its finished run is not trained again.
    assert queue.requeue(killed.id).state == "queued"
    queue.cancel(killed.id)


def test_ensure_supervisor_starts_one_detached_supervisor_per_store(store_root):
    infos = [ensure_supervisor(store_root, idle_exit_s=30) for _ in range(3)]
    try:
        assert infos[0] and infos[0]["pid"] and all(i["pid"] == infos[0]["pid"] for i in infos)
        proc = psutil.Process(infos[0]["pid"])
        assert proc.ppid() != os.getpid()  # nobody's child: a Streamlit restart does not touch it
        assert os.getsid(proc.pid) != os.getsid(0)
    finally:
        assert stop_supervisor(store_root)


# --- GPU --------------------------------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_auto_device_job_trains_on_the_gpu(store_root, supervisors):
    import torch
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine (torch.cuda.is_available() is False)")
    from engine.store import RunStore
    queue = JobQueue(store_root)
    supervisors(max_running=1).start()
    job = queue.submit("run", [tiny(epochs=3)], device="auto").job
    job = wait_for(lambda: (j := queue.require(job.id)).state not in ("queued", "running") and j, 120,
                   what="the GPU job")
    assert job.state == "completed", job.error
    assert job.device_used.startswith("cuda")
    record = RunStore(store_root).get(job.run_ids[0])
    assert record.meta["device"].startswith("cuda")
