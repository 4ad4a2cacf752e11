"""Jobs: runs and studies launched from the dashboard (or ``python -m engine jobs``), executed outside Streamlit.

    queue.py       crash-safe job records under <store>/jobs/ (JobQueue: submit, cancel, requeue, jobs)
    supervisor.py  the supervisor process, one per store: `python -m engine.jobs.supervisor --store DIR`
    service.py     starting, finding and stopping it from the dashboard, the CLI and tests
    processes.py   the job processes as the supervisor sees them (alive? signal the group)
    runner.py      the process that executes one job (its own process group)
    limits.py      concurrency, queue cap, wall-clock limit
    device.py      what the machine has (CUDA devices and memory, MPS, CPU cores)

``python -m engine jobs ...`` is engine/cli/jobs.py. Nothing here imports streamlit.
"""
from .errors import JobError, JobNotFoundError, JobValidationError, QueueFullError
from .limits import Limits, load_limits
from .queue import ACTIVE_STATES, FINAL_STATES, STATES, Job, JobQueue, Submitted

__all__ = ["JobQueue", "Job", "Submitted", "Limits", "load_limits", "JobError", "JobNotFoundError",
           "JobValidationError", "QueueFullError", "STATES", "ACTIVE_STATES", "FINAL_STATES"]
