"""Which exceptions are the user's to act on.

Every exception class defined inside ``engine`` (ConfigError, DataNotAvailableError, RunLockedError, QueryError,
StudyError, ...) is raised with a message that names what is wrong and what is allowed; the CLI and the dashboard
show those messages without a traceback. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


def is_user_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] == "engine"
