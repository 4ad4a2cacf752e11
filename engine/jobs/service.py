"""Starting, finding and stopping a store's supervisor from the outside (the dashboard, the CLI, tests): the
supervisor runs as its own detached process, ``python -m engine.jobs.supervisor``, one per store."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

from .processes import PROJECT_ROOT, child_env
from .queue import JobQueue

IDLE_EXIT_ENV = "ABLATION_LAB_WORKER_IDLE_S"  # how long a supervisor the dashboard started waits idle [300]


def ensure_supervisor(store_root: str | Path, idle_exit_s: float | None = -1.0, wait_s: float = 5.0,
                      extra_args: list[str] | None = None) -> dict | None:
    """Start a detached supervisor for the store unless one is alive; returns its lock info (pid ...), or None when
    none holds the lock within ``wait_s`` (it may still be starting).

    ``idle_exit_s``: the new supervisor exits after that long with nothing to do (the next launch starts another);
    the default (-1) takes $ABLATION_LAB_WORKER_IDLE_S, else 300 s; None: never.

    The new process is started through ``--detach`` (it forks and its parent exits at once), so it is nobody's
    child: Streamlit never has to reap it and a Streamlit restart does not touch it."""
    queue = JobQueue(store_root)
    info = queue.supervisor()
    if info is not None:
        return info
    if idle_exit_s is not None and idle_exit_s < 0:
        try:
            idle_exit_s = float(os.environ.get(IDLE_EXIT_ENV) or 300.0)
        except ValueError:
            idle_exit_s = 300.0
    queue.dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "engine.jobs.supervisor", "--store", str(Path(store_root).resolve()), "--detach"]
    if idle_exit_s is not None:
        cmd += ["--idle-exit", str(idle_exit_s)]
    cmd += extra_args or []
    with open(queue.supervisor_log, "ab") as log:
        subprocess.run(cmd, cwd=PROJECT_ROOT, env=child_env(), stdin=subprocess.DEVNULL, stdout=log,
                       stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, timeout=60, check=False)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        info = queue.supervisor()
        if info is not None:
            return info
        time.sleep(0.02)
    return queue.supervisor()


def stop_supervisor(store_root: str | Path, timeout_s: float = 30.0) -> bool:
    """SIGTERM the store's supervisor and wait for it to let go of its lock (jobs in progress end interrupted)."""
    queue = JobQueue(store_root)
    info = queue.supervisor()
    if not info or not info.get("pid"):
        return info is None
    with suppress(ProcessLookupError):
        os.kill(int(info["pid"]), signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if queue.supervisor() is None:
            return True
        time.sleep(0.05)
    return False
