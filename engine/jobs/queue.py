"""Crash-safe job records: one small JSON file per job under ``<store>/jobs/``.

    <store>/jobs/<job_id>.json     the job (see Job); replaced atomically (temp file + os.replace) on every change
    <store>/jobs/<job_id>.log      stdout/stderr of the process that ran it (tracebacks of bugs end up here)
    <store>/jobs/.queue.lock       flock held for the few microseconds of each read-modify-write
    <store>/jobs/.supervisor.lock  flock held by the one live supervisor of this store (its pid inside)
    <store>/jobs/supervisor.log    the supervisor's log

Why files and not SQLite: the run store next to it is files written the same way, so a job record can be read,
copied and repaired with the same tools (``cat``), a reader never needs a lock (it sees the old or the new file
whole), a kill at any instant leaves either the old or the new record, and one damaged record hides one job, never
the queue. Writers (the page that submits or cancels, the supervisor, the job's own process reporting progress)
serialise their read-modify-writes with an flock, which the OS drops when a holder dies, however it dies.

Submitting is idempotent: the job id is a hash of what the job trains (the run ids, the study, the device, the
limit) and the client's token (the dashboard form's submission nonce), so a double click, a Streamlit rerun or a
page reload hands back the job that already exists instead of queueing a second one.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import time
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from engine.config import ConfigError, RunConfig
from engine.store import atomic_write_json

from .device import check_device
from .errors import JobNotFoundError, JobValidationError, QueueFullError
from .limits import ENV, Limits, check_timeout, load_limits

FORMAT = 1
KINDS = ("run", "study")
STATES = ("queued", "running", "completed", "failed", "cancelled", "timed_out", "interrupted")
ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("completed", "failed", "cancelled", "timed_out", "interrupted")
REQUEUEABLE = ("interrupted", "failed", "cancelled", "timed_out")
JOB_ID_RE = re.compile(r"^[0-9a-f]{16}$")
STUDY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # the study spec's name rule (engine/study/spec.py)
MAX_CONFIGS = 100_000
MAX_TOKEN = 128


@dataclass(frozen=True)
class Job:
    id: str
    kind: str                              # run | study
    configs: tuple[dict, ...]              # canonical RunConfig.to_dict() of each distinct run, in order
    run_ids: tuple[str, ...]
    study: str | None
    device: str                            # what the user asked for: auto | cpu | cuda[:N] | mps
    timeout_s: float                       # wall-clock limit of one attempt
    created_at: float
    label: str = ""
    state: str = "queued"
    started_at: float | None = None
    finished_at: float | None = None
    progress_done: int = 0                 # run-epochs done (cached runs count as done)
    progress_total: int = 0                # run-epochs of all the job's runs
    outcomes: dict = field(default_factory=dict)   # run_id -> completed | diverged | failed | cancelled | cached
    error: str | None = None
    pid: int | None = None                 # the process executing the job (its own process group)
    pid_started: float | None = None       # its start time (psutil), so a reused pid is never mistaken for it
    supervisor_pid: int | None = None
    slot: int | None = None                # which of the max_running slots it holds (picks the GPU under auto)
    device_used: str | None = None         # what the runs train on, e.g. "cuda:NVIDIA H100 80GB HBM3" or "cpu"
    cancel_requested: bool = False
    client_token: str | None = None
    attempts: int = 0                      # how many times it started (re-queued jobs start again)
    spec: str | None = None                # a study job's spec as TOML (python -m engine study run FILE reruns it)
    ray_address: str | None = None         # train on this Ray cluster (docs/cluster.md) instead of this machine
    updated_at: float = 0.0
    format: int = FORMAT

    # --- derived ------------------------------------------------------------------------------------------------
    @property
    def fraction(self) -> float:
        if self.state == "completed":
            return 1.0
        return min(1.0, self.progress_done / self.progress_total) if self.progress_total else 0.0

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def n_runs(self) -> int:
        return len(self.run_ids)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["configs"], d["run_ids"] = list(self.configs), list(self.run_ids)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Job":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}  # a newer writer's extra keys are ignored
        d["configs"] = tuple(d.get("configs", ()))
        d["run_ids"] = tuple(d.get("run_ids", ()))
        return cls(**d)


@dataclass(frozen=True)
class Submitted:
    job: Job
    created: bool  # False: the same submission (same content and token) already existed; nothing new queued


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
        raise JobNotFoundError(f"job id {job_id!r} is not a job id (16 hex digits, as `python -m engine jobs ls` "
                               "shows them)")
    return job_id


def validate_configs(configs: Iterable[RunConfig | dict]) -> list[RunConfig]:
    """Every config built through RunConfig (so a crafted dict gets the form's exact ConfigError); duplicates of a
    run id are dropped, order kept."""
    if isinstance(configs, (RunConfig, dict)) or not isinstance(configs, (list, tuple)):
        raise JobValidationError("configs must be a list of run configs (dicts of RunConfig fields), "
                                 f"got {type(configs).__name__}")
    configs = list(configs)
    if not configs:
        raise JobValidationError("a job needs at least one run config")
    if len(configs) > MAX_CONFIGS:
        raise JobValidationError(f"a job may hold at most {MAX_CONFIGS} runs, got {len(configs)}")
    out: dict[str, RunConfig] = {}
    for i, c in enumerate(configs):
        if isinstance(c, RunConfig):
            c = c.to_dict()  # rebuilt below: a RunConfig mutated behind its frozen back is validated again
        if not isinstance(c, dict):
            raise JobValidationError(f"run config #{i + 1} must be a dict of RunConfig fields, got {type(c).__name__}")
        try:
            cfg = RunConfig.from_dict(c)
        except ConfigError as e:
            if len(configs) == 1:
                raise
            raise ConfigError(f"run config #{i + 1} of {len(configs)}: {e}") from None
        except TypeError as e:  # not reachable through from_dict's key check, kept as a clear message anyway
            raise ConfigError(f"run config #{i + 1}: {e}") from None
        out.setdefault(cfg.run_id, cfg)
    return list(out.values())


def check_study_name(study: str | None, kind: str) -> str | None:
    if study is None:
        if kind == "study":
            raise JobValidationError("a study job needs a study name (1-64 letters, digits, _ . -)")
        return None
    if not isinstance(study, str) or not STUDY_RE.match(study):
        raise JobValidationError(f"study name must be 1-64 characters of letters, digits, _ . - (starting with a "
                                 f"letter or digit), got {study!r}")
    return study


def job_id_for(kind: str, run_ids: list[str], study: str | None, device: str, timeout_s: float,
               client_token: str | None, ray_address: str | None = None) -> str:
    content = {"v": FORMAT, "kind": kind, "run_ids": run_ids, "study": study, "device": device,
               "timeout_s": timeout_s, "token": client_token}
    if ray_address is not None:  # only then: the ids of jobs on this machine stay what they were
        content["ray_address"] = ray_address
    payload = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _label(kind: str, configs: list[RunConfig], study: str | None) -> str:
    if kind == "study":
        return f"study {study}: {len(configs)} run{'s' if len(configs) != 1 else ''}"
    c = configs[0]
    arch = f"hidden={','.join(map(str, c.hidden))}" if c.model == "mlp" else f"cnn {','.join(map(str, c.channels))}"
    more = f" (+{len(configs) - 1} more)" if len(configs) > 1 else ""
    return f"{c.task}/{c.dataset} {arch} {c.activation} {c.optimizer} lr={c.lr:g} seed={c.seed}{more}"


# path -> ((inode, mtime_ns, size), Job): every write replaces the file (a new inode), so an unchanged key means
# an unchanged record; the supervisor and the page's jobs panel list the queue every second.
_READ_CACHE: dict[str, tuple[tuple[int, int, int], Job]] = {}


def _read_cached(path: Path) -> Job | None:
    try:
        st = os.stat(path)
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        hit = _READ_CACHE.get(str(path))
        if hit is not None and hit[0] == key:
            return hit[1]
        job = Job.from_dict(json.loads(path.read_bytes()))
    except (OSError, ValueError, TypeError):
        return None
    if len(_READ_CACHE) > 20_000:
        _READ_CACHE.clear()
    _READ_CACHE[str(path)] = (key, job)
    return job


class JobQueue:
    """The jobs of one store root. Cheap to create; every method reads the files afresh."""

    def __init__(self, store_root: str | Path, durable: bool = True) -> None:
        self.root = Path(store_root)
        self.dir = self.root / "jobs"
        self.durable = durable

    def __repr__(self) -> str:
        return f"JobQueue({str(self.root)!r})"

    # --- paths ----------------------------------------------------------------------------------------------------
    def path(self, job_id: str) -> Path:
        return self.dir / f"{check_job_id(job_id)}.json"

    def store(self):
        """The run store whose jobs these are."""
        from engine.store import RunStore
        return RunStore(self.root)

    def log_path(self, job_id: str) -> Path:
        return self.dir / f"{check_job_id(job_id)}.log"

    @property
    def supervisor_lock(self) -> Path:
        return self.dir / ".supervisor.lock"

    @property
    def supervisor_log(self) -> Path:
        return self.dir / "supervisor.log"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Serialises read-modify-writes of job records across threads and processes (an flock per open file
        description: two threads of one process exclude each other too)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / ".queue.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    # --- reading --------------------------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        try:
            raw = self.path(job_id).read_bytes()
        except FileNotFoundError:
            return None
        try:
            return Job.from_dict(json.loads(raw))
        except (ValueError, TypeError) as e:
            raise JobNotFoundError(f"job {job_id}: its record {self.path(job_id)} is damaged ({e}); move it "
                                   "aside to drop the job") from None

    def require(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job is None:
            raise JobNotFoundError(f"no job {job_id} under {self.dir}")
        return job

    def jobs(self, states: Iterable[str] | None = None) -> list[Job]:
        """All jobs, oldest first. Damaged records are skipped (see ``problems``)."""
        wanted = set(states) if states is not None else None
        out = []
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        for name in names:
            if name.startswith(".") or not name.endswith(".json") or not JOB_ID_RE.match(name[:-5]):
                continue
            job = _read_cached(self.dir / name)
            if job is None:
                continue
            if wanted is None or job.state in wanted:
                out.append(job)
        out.sort(key=lambda j: (j.created_at, j.id))
        return out

    def problems(self) -> list[str]:
        """Job records that cannot be read, with the reason."""
        out = []
        with suppress(FileNotFoundError):
            for name in sorted(os.listdir(self.dir)):
                if name.startswith(".") or not name.endswith(".json"):
                    continue
                try:
                    Job.from_dict(json.loads((self.dir / name).read_bytes()))
                except (OSError, ValueError, TypeError) as e:
                    out.append(f"{self.dir / name}: {e}")
        return out

    # --- pruning --------------------------------------------------------------------------------------------------
    def prune(self, retention, now: float | None = None) -> list[str]:
        """Remove finished jobs (record and log) that ``retention`` (limits.Retention) no longer keeps, and logs
        whose record is gone; returns the ids removed. Queued and running jobs stay whatever their age."""
        now = time.time() if now is None else now
        cutoff = now - retention.max_age_days * 86400.0
        removed: list[str] = []
        with self.locked():
            done = sorted((j for j in self.jobs(FINAL_STATES)),
                          key=lambda j: (j.finished_at or j.updated_at or j.created_at, j.id), reverse=True)
            for i, job in enumerate(done):
                ended = job.finished_at or job.updated_at or job.created_at
                if i >= retention.keep or ended < cutoff:
                    # the record first: a kill between the two leaves only a log, which the loop below removes
                    with suppress(FileNotFoundError):
                        self.path(job.id).unlink()
                    with suppress(FileNotFoundError):
                        self.log_path(job.id).unlink()
                    removed.append(job.id)
            with suppress(FileNotFoundError):
                for name in os.listdir(self.dir):
                    orphan = name.endswith(".log") and JOB_ID_RE.match(name[:-4]) and \
                        not (self.dir / f"{name[:-4]}.json").exists()
                    if orphan and os.stat(self.dir / name).st_mtime < now - 60:  # not a job being submitted
                        with suppress(FileNotFoundError):
                            (self.dir / name).unlink()
        return removed

    # --- writing --------------------------------------------------------------------------------------------------
    def _write(self, job: Job, durable: bool | None = None) -> Job:
        job = replace(job, updated_at=time.time())
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path(job.id), job.to_dict(), self.durable if durable is None else durable)
        return job

    def submit(self, kind: str, configs: Iterable[RunConfig | dict], study: str | None = None,
               device: str = "auto", timeout_s: float | None = None, client_token: str | None = None,
               limits: Limits | None = None, spec: str | None = None, ray_address: str | None = None) -> Submitted:
        """Validate and queue a job; the same submission twice returns the first job (``created`` False).

        Raises ConfigError (the config's own message), JobValidationError, or QueueFullError when the queue holds
        ``limits.max_queued`` queued jobs already. ``ray_address``: the job trains on that Ray cluster; it counts
        against the same limits as a job on this machine."""
        if kind not in KINDS:
            raise JobValidationError(f"job kind must be one of {', '.join(KINDS)}, got {kind!r}")
        cfgs = validate_configs(configs)
        if kind == "run" and len(cfgs) != 1:
            raise JobValidationError(f"a run job trains one config, got {len(cfgs)}; submit a study job for more")
        study = check_study_name(study, kind)
        check_device(device)
        limits = limits or load_limits(probe=False)
        timeout_s = limits.timeout_s if timeout_s is None else check_timeout(timeout_s)
        if client_token is not None and (not isinstance(client_token, str) or len(client_token) > MAX_TOKEN):
            raise JobValidationError(f"client_token must be a string of at most {MAX_TOKEN} characters")
        if spec is not None and (not isinstance(spec, str) or len(spec) > 1_000_000):
            raise JobValidationError("spec must be the study's TOML text (at most 1 MB)")
        if ray_address is not None:
            from engine.study.ray_executor import check_address
            check_address(ray_address)
        run_ids = [c.run_id for c in cfgs]
        job_id = job_id_for(kind, run_ids, study, device, timeout_s, client_token, ray_address)
        with self.locked():
            existing = self.get(job_id)
            if existing is not None:
                return Submitted(existing, created=False)
            queued = self.jobs(["queued"])
            if len(queued) >= limits.max_queued:
                raise QueueFullError(
                    f"job refused: the queue is full ({len(queued)} jobs waiting; the cap is {limits.max_queued} "
                    f"queued jobs, set by {ENV['max_queued']}). Wait for queued jobs to start, or cancel one, "
                    "then launch again.")
            now = time.time()
            total = sum(c.epochs for c in cfgs)
            job = Job(id=job_id, kind=kind, configs=tuple(c.to_dict() for c in cfgs), run_ids=tuple(run_ids),
                      study=study, device=device, timeout_s=timeout_s, created_at=now,
                      label=_label(kind, cfgs, study), progress_total=total, client_token=client_token, spec=spec,
                      ray_address=ray_address)
            job = self._write(job)
        return Submitted(job, created=True)

    def update(self, job_id: str, change: Callable[[Job], Job | None] | None = None, durable: bool | None = None,
               **values: Any) -> Job | None:
        """Read-modify-write one job under the lock. ``change(job)`` returns the new job, or None to leave it as
        it is; keyword values are set on top. Returns the job as stored (None when it does not exist)."""
        with self.locked():
            job = self.get(job_id)
            if job is None:
                return None
            new = change(job) if change is not None else job
            if new is None:
                return job
            if values:
                new = replace(new, **values)
            if new == job:
                return job
            return self._write(new, durable)

    def cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one is flagged and the supervisor stops it (its open runs
        end as cancelled in the store). Cancelling a finished job changes nothing."""
        def change(job: Job) -> Job | None:
            if job.state == "queued":
                return replace(job, state="cancelled", finished_at=time.time(), error="cancelled before it started")
            if job.state == "running" and not job.cancel_requested:
                return replace(job, cancel_requested=True)
            return None
        job = self.update(job_id, change)
        if job is None:
            raise JobNotFoundError(f"no job {job_id} under {self.dir}")
        return job

    def requeue(self, job_id: str, limits: Limits | None = None) -> Job:
        """Queue an interrupted, failed, cancelled or timed-out job again; runs it already finished are cached in
        the store and do not train again."""
        limits = limits or load_limits(probe=False)
        with self.locked():
            job = self.require(job_id)
            if job.state in ACTIVE_STATES:
                return job
            if job.state not in REQUEUEABLE:
                raise JobValidationError(f"job {job_id} is {job.state}; only {', '.join(REQUEUEABLE)} jobs can be "
                                         "queued again")
            queued = self.jobs(["queued"])
            if len(queued) >= limits.max_queued:
                raise QueueFullError(
                    f"job refused: the queue is full ({len(queued)} jobs waiting; the cap is {limits.max_queued} "
                    f"queued jobs, set by {ENV['max_queued']}). Wait for queued jobs to start, or cancel one.")
            return self._write(replace(job, state="queued", started_at=None, finished_at=None, error=None, pid=None,
                                       pid_started=None, supervisor_pid=None, slot=None, cancel_requested=False,
                                       created_at=time.time()))

    # --- the supervisor's lock ------------------------------------------------------------------------------------
    def supervisor(self) -> dict | None:
        """{"pid": ..., "started_at": ..., "hostname": ...} of the live supervisor, or None when none holds the lock."""
        try:
            fd = os.open(self.supervisor_lock, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    return json.loads(os.pread(fd, 4096, 0).decode() or "{}") or {"pid": None}
                except ValueError:
                    return {"pid": None}
            return None
        finally:
            os.close(fd)

    def take_supervisor_lock(self) -> int | None:
        """The fd holding the supervisor lock, or None when another live process holds it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.supervisor_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        # A few short retries: ``supervisor()`` probes the lock with a shared flock for a microsecond, and such a
        # probe must not be mistaken for a live supervisor.
        for attempt in range(5):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == 4:
                    os.close(fd)
                    return None
                time.sleep(0.005)
        info = json.dumps({"pid": os.getpid(), "started_at": time.time(), "hostname": socket.gethostname()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        return fd


__all__ = ["Job", "JobQueue", "Submitted", "KINDS", "STATES", "ACTIVE_STATES", "FINAL_STATES", "REQUEUEABLE",
           "validate_configs", "check_job_id", "job_id_for"]
