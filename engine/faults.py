"""Named pause points, so tests can stop a process at an exact moment instead of guessing it with sleeps.

A no-op unless ``$ABLATION_LAB_PAUSE_AT`` names the point: comma-separated entries, each ``point`` (every process
that reaches it pauses) or ``point@RUN_ID`` (only where that run is among the runs at hand). A process that reaches
a named point writes ``paused-<point>-<pid>`` into ``$ABLATION_LAB_PAUSE_DIR`` (the state a test waits for) and then waits
for signals for ever: a signal whose handler raises (a job's stop outside a shielded block) ends the wait with that
exception; otherwise only SIGKILL ends it, or a file ``resume-<point>`` in that folder, which a test writes to let
every process paused there (and any that reaches the point later) go on. The points:

* ``before-first-epoch``: ``train_stack`` has opened its runs and built the model, no epoch has run;
* ``sealing``: ``RunWriter.finish`` has recorded the run's result (final.json) and not yet sealed it;
* ``ray-epoch-sent``: a Ray task (engine/study/ray_executor.py) has sent its stack's first epoch to the driver.

``$ABLATION_LAB_DISK_FULL_AT`` (``point[@RUN_ID][:N]``, comma-separated) makes the N-th arrival (default the first)
at a named write point raise ``OSError(ENOSPC)``, as a full disk would, so tests can fill the disk at an exact
write. The points: ``log-epoch`` (``RunWriter.log_epoch``, before its append).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Iterable

PAUSE_ENV = "ABLATION_LAB_PAUSE_AT"
DISK_FULL_ENV = "ABLATION_LAB_DISK_FULL_AT"
PAUSE_DIR_ENV = "ABLATION_LAB_PAUSE_DIR"


def pause_point(name: str, run_ids: Iterable[str] = ()) -> None:
    points = os.environ.get(PAUSE_ENV)
    if not points:
        return
    wanted = {name} | {f"{name}@{run_id}" for run_id in run_ids}
    if not wanted & set(points.split(",")):
        return
    folder = Path(os.environ.get(PAUSE_DIR_ENV) or tempfile.gettempdir())
    resume = folder / f"resume-{name}"
    if resume.exists():
        return
    (folder / f"paused-{name}-{os.getpid()}").write_text(str(os.getpid()))
    while not resume.exists():
        # Not signal.pause(): the kernel may hand the signal to another thread (a run's heartbeat, torch's), and
        # then pause() in this one never returns. Python runs the handler in this thread between two naps.
        time.sleep(0.05)


_arrivals: dict[str, int] = {}


def disk_full_point(name: str, run_ids: Iterable[str] = ()) -> None:
    """Raise OSError(ENOSPC) here when $ABLATION_LAB_DISK_FULL_AT names this point (and this arrival)."""
    spec = os.environ.get(DISK_FULL_ENV)
    if not spec:
        return
    import errno
    for entry in spec.split(","):
        point, _, nth = entry.partition(":")
        if point not in {name} | {f"{name}@{r}" for r in run_ids}:
            continue
        _arrivals[entry] = _arrivals.get(entry, 0) + 1
        if _arrivals[entry] == int(nth or 1):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + f" (simulated at {name})")
