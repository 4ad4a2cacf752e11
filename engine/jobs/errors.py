"""The job queue's own exceptions. Each message says what is wrong and what the user can do; the dashboard and the
CLI show them without a traceback (engine.errors.is_user_error)."""
from __future__ import annotations


class JobError(Exception):
    """Base class of everything the job queue raises on purpose."""


class JobValidationError(JobError, ValueError):
    """A submitted job is malformed (kind, study name, device, wall-clock limit); configs raise ConfigError."""


class QueueFullError(JobError):
    """The queue already holds as many queued jobs as its cap allows."""


class JobNotFoundError(JobError, KeyError):
    """No job with this id exists under the store."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else "job not found"
