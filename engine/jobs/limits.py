"""How much the queue runs at once, how many jobs may wait, and how long one job may take.

Defaults: one running job per CUDA GPU (or one for Apple's MPS), else one per two CPU cores; 20 queued jobs; a
6-hour wall-clock limit per job. Each can be changed with an environment variable (read where the limit is
enforced: the page that submits for the queue cap, the worker for the rest) or per call:

    ABLATION_LAB_MAX_RUNNING     jobs running at once
    ABLATION_LAB_MAX_QUEUED      jobs waiting in the queue; a submission beyond it is refused with the reason
    ABLATION_LAB_JOB_TIMEOUT_S   default wall-clock limit of a job in seconds (a job may set its own)
    ABLATION_LAB_JOB_GRACE_S     seconds a stopped job gets to close its runs before it is killed
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import JobValidationError

DEFAULT_MAX_QUEUED = 20
DEFAULT_TIMEOUT_S = 6 * 3600.0
DEFAULT_GRACE_S = 10.0
MAX_TIMEOUT_S = 30 * 24 * 3600.0

ENV = {"max_running": "ABLATION_LAB_MAX_RUNNING", "max_queued": "ABLATION_LAB_MAX_QUEUED",
       "timeout_s": "ABLATION_LAB_JOB_TIMEOUT_S", "grace_s": "ABLATION_LAB_JOB_GRACE_S"}


@dataclass(frozen=True)
class Limits:
    max_running: int
    max_queued: int = DEFAULT_MAX_QUEUED
    timeout_s: float = DEFAULT_TIMEOUT_S
    grace_s: float = DEFAULT_GRACE_S

    def __post_init__(self) -> None:
        for name in ("max_running", "max_queued"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 10_000:
                raise JobValidationError(f"{name} must be an integer 1..10000 (set {ENV[name]}), got {v!r}")
        check_timeout(self.timeout_s, f"timeout_s ({ENV['timeout_s']})")
        if isinstance(self.grace_s, bool) or not isinstance(self.grace_s, (int, float)) or not 0 < self.grace_s <= 600:
            raise JobValidationError(f"grace_s must be seconds in (0, 600] (set {ENV['grace_s']}), "
                                     f"got {self.grace_s!r}")


def check_timeout(value, what: str = "the wall-clock limit") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value <= MAX_TIMEOUT_S):
        raise JobValidationError(f"{what} must be a number of seconds in (0, {MAX_TIMEOUT_S:.0f}] "
                                 f"(at most 30 days), got {value!r}")
    return float(value)


def default_max_running(n_gpus: int, mps: bool, cpu_cores: int) -> int:
    """One job per GPU; without one, one job per two CPU cores (at least one)."""
    if n_gpus > 0:
        return n_gpus
    if mps:
        return 1
    return max(1, cpu_cores // 2)


def _env_number(name: str, kind: type):
    raw = os.environ.get(ENV[name])
    if raw is None or not raw.strip():
        return None
    try:
        return kind(raw) if kind is float else int(raw)
    except ValueError:
        raise JobValidationError(f"{ENV[name]} must be a{'n integer' if kind is int else ' number'}, "
                                 f"got {raw!r}") from None


def load_limits(max_running: int | None = None, max_queued: int | None = None, timeout_s: float | None = None,
                grace_s: float | None = None, probe: bool = True) -> Limits:
    """Explicit arguments first, then the environment, then the defaults. ``probe`` asks the machine for its GPUs
    (in a subprocess, see device.py) only when the running limit is not given otherwise."""
    values = {"max_running": max_running, "max_queued": max_queued, "timeout_s": timeout_s, "grace_s": grace_s}
    kinds = {"max_running": int, "max_queued": int, "timeout_s": float, "grace_s": float}
    for name, value in list(values.items()):
        if value is None:
            values[name] = _env_number(name, kinds[name])
    if values["max_running"] is None:
        if probe:
            from .device import probe_machine
            m = probe_machine()
            values["max_running"] = default_max_running(len(m.cuda), m.mps, m.cpu_cores)
        else:
            values["max_running"] = default_max_running(0, False, os.cpu_count() or 1)
    defaults = {"max_queued": DEFAULT_MAX_QUEUED, "timeout_s": DEFAULT_TIMEOUT_S, "grace_s": DEFAULT_GRACE_S}
    for name, default in defaults.items():
        if values[name] is None:
            values[name] = default
    return Limits(**values)


RETENTION_ENV = {"max_age_days": "ABLATION_LAB_JOBS_KEEP_DAYS", "keep": "ABLATION_LAB_JOBS_KEEP"}
DEFAULT_KEEP_DAYS = 14.0
DEFAULT_KEEP = 200


@dataclass(frozen=True)
class Retention:
    """How long finished job records and their logs stay under <store>/jobs/: a finished job goes once it is older
    than ``max_age_days`` or is not among the ``keep`` newest finished jobs (the supervisor prunes between jobs;
    ``engine jobs prune`` on demand). Queued and running jobs are never pruned."""

    max_age_days: float = DEFAULT_KEEP_DAYS
    keep: int = DEFAULT_KEEP

    def __post_init__(self) -> None:
        if isinstance(self.keep, bool) or not isinstance(self.keep, int) or self.keep < 0:
            raise JobValidationError(f"keep must be a whole number of jobs >= 0 (set {RETENTION_ENV['keep']}), "
                                     f"got {self.keep!r}")
        if isinstance(self.max_age_days, bool) or not isinstance(self.max_age_days, (int, float)) or \
                not 0 <= self.max_age_days <= 36500:
            raise JobValidationError(f"max_age_days must be days in [0, 36500] (set "
                                     f"{RETENTION_ENV['max_age_days']}), got {self.max_age_days!r}")


def load_retention(max_age_days: float | None = None, keep: int | None = None) -> Retention:
    """Explicit arguments first, then $ABLATION_LAB_JOBS_KEEP_DAYS / $ABLATION_LAB_JOBS_KEEP, then the defaults."""
    def env(name: str, kind: type):
        raw = os.environ.get(RETENTION_ENV[name], "").strip()
        if not raw:
            return None
        try:
            return kind(raw)
        except ValueError:
            raise JobValidationError(f"{RETENTION_ENV[name]} must be a number, got {raw!r}") from None

    if max_age_days is None:
        max_age_days = env("max_age_days", float)
    if keep is None:
        keep = env("keep", int)
    return Retention(DEFAULT_KEEP_DAYS if max_age_days is None else max_age_days,
                     DEFAULT_KEEP if keep is None else keep)


__all__ = ["Retention", "load_retention", "RETENTION_ENV", "Limits", "load_limits", "default_max_running",
           "check_timeout", "DEFAULT_MAX_QUEUED", "DEFAULT_TIMEOUT_S", "DEFAULT_GRACE_S", "ENV"]
