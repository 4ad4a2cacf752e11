"""Ablation Lab's run store: crash-safe append-only epoch logs sealed into Parquet, read through DuckDB.

Public surface (see docs/store.md): RunStore, RunWriter, RunRecord, default_store_root, the statuses, and the
store's exceptions. All SQL lives in engine/queries.py. Nothing here imports torch or streamlit.
"""
from .errors import (QueryError, RunAlreadyFinishedError, RunLockedError, StoreError, StoreValidationError)
from .reader import Problem, Snapshot
from .runstore import ENV_VAR, RunRecord, RunStore, default_store_root
from .schema import CACHED_STATUSES, FINISH_STATUSES, STATUSES
from .writer import RunCancelled, RunWriter, sigterm_cancels

__all__ = ["RunStore", "RunWriter", "RunRecord", "RunCancelled", "sigterm_cancels", "default_store_root", "ENV_VAR",
           "STATUSES", "FINISH_STATUSES", "CACHED_STATUSES", "StoreError", "StoreValidationError", "RunLockedError",
           "RunAlreadyFinishedError", "QueryError", "Problem", "Snapshot"]
