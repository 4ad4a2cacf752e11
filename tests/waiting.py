"""Waiting on state, never on time: poll what a user would see until it holds, within a generous bound, and on
time-out say what was seen instead."""
from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 60.0, every: float = 0.05, what: str = "condition", show=None):
    """Poll ``predicate`` until it returns something truthy (returned); on time-out raise AssertionError naming
    ``what`` and, when given, what ``show()`` reports instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    seen = f"; instead: {show()}" if show is not None else ""
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{seen}")
