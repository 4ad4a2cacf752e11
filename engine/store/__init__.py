"""Ablation Lab's run store: crash-safe append-only epoch logs sealed into Parquet, read through DuckDB.

Public surface (see docs/store.md): RunStore, RunWriter, RunRecord, default_store_root, the statuses, the store's
exceptions, and for engine/queries.py the views it queries (``RunStore.read(fn)`` hands ``fn`` a ``Views``). The
modules behind it are internals: nothing outside engine/store/ imports them. Nothing here imports torch or streamlit.
"""
from .errors import QueryError, RunAlreadyFinishedError, RunLockedError, StoreError, StoreValidationError
from .files import Problem
from .layout import RUN_ID_RE, atomic_write_json, tmp_path_for
from .runstore import (COMPACT_THRESHOLD_ENV, ENV_VAR, RunRecord, RunStore, compact_threshold_from_env,
                       default_store_root)
from .schema import CACHED_STATUSES, EPOCH_FIXED, FINISH_STATUSES, STATUSES
from .snapshot import Snapshot
from .views import VIEWS, Views, define_views
from .writer import RunCancelled, RunWriter, sigterm_cancels

__all__ = ["RunStore", "RunWriter", "RunRecord", "RunCancelled", "sigterm_cancels", "default_store_root", "ENV_VAR",
           "COMPACT_THRESHOLD_ENV", "compact_threshold_from_env",
           "STATUSES", "FINISH_STATUSES", "CACHED_STATUSES", "EPOCH_FIXED", "StoreError", "StoreValidationError",
           "RunLockedError", "RunAlreadyFinishedError", "QueryError", "Problem", "Snapshot", "Views", "VIEWS",
           "define_views", "RUN_ID_RE", "tmp_path_for", "atomic_write_json"]
