"""Stopping training from outside: the interrupt that says how the runs it stops should end.

Kept free of torch so that a job's process can install its signal handlers before the slow imports.
"""
from __future__ import annotations


class StopTraining(KeyboardInterrupt):
    """A stop from outside (a job's cancel or wall-clock limit, delivered as a signal): ``train_stack`` ends its
    open runs with ``status`` and ``reason``. A plain KeyboardInterrupt (Ctrl-C) ends them as ``cancelled``."""

    def __init__(self, status: str = "cancelled", reason: str = "cancelled by the user") -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def stop_of(interrupt: KeyboardInterrupt) -> tuple[str, str]:
    """(status, reason) that an interrupt gives the runs it stops."""
    if isinstance(interrupt, StopTraining):
        return interrupt.status, interrupt.reason
    return "cancelled", "cancelled by the user"
