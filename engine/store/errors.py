"""The store's own exceptions: every message names the run, file or value at fault and what the user can do."""
from __future__ import annotations


class StoreError(Exception):
    """Base class of everything the run store raises on purpose."""


class StoreValidationError(StoreError, ValueError):
    """A value handed to the store (run id, metric name, metric value, status, summary key) is not allowed."""


class RunLockedError(StoreError):
    """Another live process is writing this run id right now."""


class RunAlreadyFinishedError(StoreError):
    """The run already has a finished result (completed or diverged); results are a cache and never overwritten."""


class QueryError(StoreError):
    """A query over the store failed: a bad column, metric or filter, or a DuckDB error, with what is allowed."""
