"""Where a run's results go: one sink per run, so the training loop never knows about files.

``MemorySink`` keeps everything in memory (tests, and Ray tasks whose driver writes to the store: they then need no
shared filesystem). ``StoreSink`` writes straight to a :class:`engine.store.RunStore` and says how its run ended as
a ``RunOutcome``, the one result shape of every way of training (engine/train/driver.py). ``replay`` copies a
finished ``MemorySink`` into any other sink.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.config import RunConfig


@dataclass(frozen=True)
class RunOutcome:
    """How one run of a training call ended."""
    run_id: str
    status: str          # completed | diverged | failed | cancelled | skipped (another process owned the run),
                         # or the status of the cached result
    cached: bool = False  # True when the store already held the result and nothing trained
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # a diverged run's diverged_epoch and diverged_step


class RunSink(Protocol):
    def start(self, config: RunConfig, meta: dict[str, Any]) -> None: ...
    def log_epoch(self, epoch: int, metrics: dict[str, float | None]) -> None: ...
    def finish(self, status: str, summary: dict[str, Any] | None = None, checkpoint: bytes | None = None,
               error: str | None = None) -> None: ...


@dataclass
class MemorySink:
    config: RunConfig | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    epochs: list[tuple[int, dict[str, float | None]]] = field(default_factory=list)
    status: str = "pending"
    summary: dict[str, Any] = field(default_factory=dict)
    checkpoint: bytes | None = None
    error: str | None = None

    def start(self, config: RunConfig, meta: dict[str, Any]) -> None:
        self.config, self.meta, self.status = config, dict(meta), "running"

    def log_epoch(self, epoch: int, metrics: dict[str, float | None]) -> None:
        self.epochs.append((epoch, dict(metrics)))

    def finish(self, status: str, summary: dict[str, Any] | None = None, checkpoint: bytes | None = None,
               error: str | None = None) -> None:
        self.status, self.summary, self.checkpoint, self.error = status, dict(summary or {}), checkpoint, error

    def metric(self, name: str) -> list[float | None]:
        """One metric's values over the logged epochs."""
        return [m.get(name) for _, m in self.epochs]


def replay(memory: MemorySink, sink: RunSink) -> None:
    """Write a finished in-memory run into another sink (the Ray driver's path into the store)."""
    sink.start(memory.config, memory.meta)
    for epoch, metrics in memory.epochs:
        sink.log_epoch(epoch, metrics)
    sink.finish(memory.status, memory.summary, memory.checkpoint, memory.error)


class StoreSink:
    """Writes one run into a RunStore and remembers how it ended.

    It steps aside (the run trains along in its stack, nothing is written) when the store says another process is
    writing that run right now or has just finished it: parallel studies and jobs that share cells race for them,
    and the loser must neither fail nor overwrite. ``finish`` is idempotent, so clean-up paths may call it again.
    """

    def __init__(self, store, extra_meta: dict[str, Any] | None = None):
        self.store, self.extra_meta = store, dict(extra_meta or {})
        self.writer = None
        self.run_id: str | None = None
        self.status = "pending"
        self.error: str | None = None
        self.summary: dict[str, Any] = {}
        self.skipped: str | None = None

    def start(self, config: RunConfig, meta: dict[str, Any]) -> None:
        from engine.store import RunAlreadyFinishedError, RunLockedError
        self.run_id = config.run_id
        try:
            self.writer = self.store.open_run(config.run_id, config.to_dict(), {**meta, **self.extra_meta})
        except RunAlreadyFinishedError:
            self.skipped = "finished meanwhile by another process (cached)"
        except RunLockedError as e:
            self.skipped = f"being trained by another process ({e})"
        self.status = "running"

    def log_epoch(self, epoch: int, metrics: dict[str, float | None]) -> None:
        if self.writer is None or self.status != "running":
            return  # skipped, or already ended by a failed write: the stack trains on, this run no longer logs
        try:
            self.writer.log_epoch(epoch, metrics)
        except OSError as e:
            # A full disk (ENOSPC) or a store gone read-only: this run stops as failed with the reason; the epochs
            # already appended stay in its log, and the other runs of the stack go on (each meets the disk itself).
            self.finish("failed", error=f"could not write epoch {epoch} to the store ({type(e).__name__}: {e}); "
                                        f"the {self.writer.n_epochs} epochs before it are kept")

    def finish(self, status: str, summary: dict[str, Any] | None = None, checkpoint: bytes | None = None,
               error: str | None = None) -> None:
        if self.status not in ("pending", "running"):
            return  # already finished
        self.status, self.error, self.summary = status, error, dict(summary or {})
        if self.writer is not None:
            try:
                self.writer.finish(status, summary=summary, checkpoint=checkpoint, error=error)
            except OSError as e:
                # Sealing needs disk too. What finish recorded stays in the live folder (readers show it); `engine
                # check --repair` seals it once there is room again.
                self.status = "failed"
                self.error = (f"{error + '; ' if error else ''}could not seal the run ({type(e).__name__}: {e}); "
                              "its epochs are in the store's live folder: free disk space, then run "
                              "`python -m engine check --repair`")

    def outcome(self) -> RunOutcome:
        """How the run ended: 'skipped' when another process owned it, 'cancelled' when it never finished."""
        status = "skipped" if self.skipped else self.status
        if status in ("pending", "running"):
            status = "cancelled"
        return RunOutcome(self.run_id, status, error=self.skipped or self.error,
                          summary={k: v for k, v in self.summary.items() if k in ("diverged_epoch", "diverged_step")})
