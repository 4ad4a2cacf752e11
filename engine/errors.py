"""Which exceptions are the user's to act on, and the one guard every entry point puts around a command.

Every exception class defined inside ``engine`` (ConfigError, DataNotAvailableError, RunLockedError, QueryError,
StudyError, ...) is raised with a message that names what is wrong and what is allowed; the CLI and the dashboard
show those messages without a traceback. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable


def is_user_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] == "engine"


def report_user_errors(command: Callable[[], int]) -> int:
    """Run ``command`` (which returns an exit code); the project's own errors become one ``error: ...`` line on
    stderr and exit code 2. Used by ``python -m engine`` and by the job supervisor's entry point."""
    try:
        return command()
    except Exception as exc:
        if not is_user_error(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
