"""The job processes as the supervisor sees them: their environment, whether one still lives, signalling its group."""
from __future__ import annotations

import os
import signal
import time
from contextlib import suppress
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def child_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def process_alive(pid: int | None, started: float | None) -> bool:
    """True when ``pid`` runs and is the process that started at ``started`` (not a reused pid)."""
    if not pid:
        return False
    import psutil

    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(p.create_time() - started) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def wait_gone(pid: int, started: float | None, timeout_s: float = 10.0) -> None:
    """Wait until a process we signalled is gone (its run locks are free only then)."""
    deadline = time.monotonic() + timeout_s
    while process_alive(pid, started) and time.monotonic() < deadline:
        time.sleep(0.02)


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a job process's whole group (it leads its own session, so its group id is its pid)."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
