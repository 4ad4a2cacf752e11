"""Deleting runs for real: what a deletion would free, and the deletion itself.

A deletion is one ``delete`` record in annotations/ (annotations.py), written while holding every named run's
lock: from that moment no reader sees the deleted attempts, and a run being trained cannot be deleted (its writer
holds the lock). The files go at the next compaction (compaction.py drops deleted attempts from the parts it
rewrites and removes their sealed files, live folders and checkpoints), which ``RunStore.delete`` runs at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import RunLockedError, StoreError
from .files import StoreFiles
from .layout import check_run_id, holder_info, try_lock
from .manifest import read_manifest


@dataclass(frozen=True)
class DeletionPlan:
    """What deleting these runs means: the runs found, their attempts, roughly how many bytes it frees."""

    attempts: dict[str, int]      # run_id -> highest attempt (every attempt up to it goes)
    unknown: tuple[str, ...]      # named runs the store does not hold
    bytes: int

    @property
    def n_runs(self) -> int:
        return len(self.attempts)

    def describe(self) -> str:
        return f"{self.n_runs} run(s), about {human_bytes(self.bytes)} on disk"


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def plan(store: StoreFiles, attempts_view: "list[tuple[str, int, int]]", run_ids: list[str]) -> DeletionPlan:
    """``attempts_view``: (run_id, attempt, n_epochs) of every stored attempt of these runs (the attempts view)."""
    layout = store.layout
    wanted = list(dict.fromkeys(check_run_id(r) for r in run_ids))
    newest: dict[str, int] = {}
    epochs: dict[tuple[str, int], int] = {}
    for rid, att, n in attempts_view:
        newest[rid] = max(newest.get(rid, 0), int(att))
        epochs[(rid, int(att))] = int(n or 0)
    m = read_manifest(layout)
    per_run_row = sum(_size(layout.parts / p.runs) / max(p.n_runs, 1) for p in m.parts) / max(len(m.parts), 1)
    per_epoch = sum(_size(layout.parts / p.epochs) / max(p.n_epochs, 1) for p in m.parts) / max(len(m.parts), 1)
    total = 0
    for (rid, att), n in epochs.items():
        files = [layout.sealed_run(rid, att), layout.sealed_epochs(rid, att), layout.live_dir(rid, att)]
        local = sum(_size(f) for f in files)
        # a compacted attempt's share of its part, estimated from the parts' bytes per run row and per epoch
        total += local if local else int(per_run_row + per_epoch * n)
        total += _size(layout.checkpoint(rid, att))
    return DeletionPlan({r: newest[r] for r in wanted if r in newest},
                        tuple(r for r in wanted if r not in newest), total)


def delete(store: StoreFiles, p: DeletionPlan, durable: bool) -> None:
    """Record the deletion under every run's lock; raises RunLockedError naming a run that is being trained."""
    from .annotations import write_record
    from .snapshot import existing_attempts

    if p.unknown:
        raise StoreError(f"no such run(s) in the store: {', '.join(p.unknown)}; nothing was deleted")
    held = []
    attempts = dict(p.attempts)
    try:
        for rid in p.attempts:
            try:
                held.append(try_lock(store.layout.lock_file(rid), f"run {rid}", retries=0,
                                     holder_info=dict(holder_info(rid, -1), purpose="deleting the run")))
            except RunLockedError as e:
                raise RunLockedError(f"run {rid} is running and cannot be deleted; stop it first ({e})") from None
            # under the lock no attempt can start: take one that started since the plan too
            attempts[rid] = max(attempts[rid], max(existing_attempts(store.cache, store.layout, rid), default=0))
        if attempts:
            write_record(store.layout, "delete", runs=list(attempts), durable=durable, attempts=attempts)
    finally:
        for lock in held:
            lock.release()
