"""The store at the edge of the app, and the one way pages turn the engine's errors into messages.

The store root is read from the environment (``ABLATION_LAB_STORE``, default ``./runs``) here and nowhere else, so
tests and the browser run point the app at a temporary store through the environment.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from engine.errors import is_user_error
from engine.store import RunStore, default_store_root
from ui import url


def store_root() -> str:
    return str(default_store_root())


@st.cache_resource(show_spinner=False)
def _store(root: str) -> RunStore:
    # One RunStore per root and process: it memoises file checks between reruns and sessions.
    return RunStore(root)


def get_store() -> RunStore:
    return _store(store_root())


def read_only_reason() -> str | None:
    """Why the store cannot be written (read-only mount, no permission), or None: pages then only read, and every
    button that would write is disabled with this reason."""
    return get_store().read_only_reason()


def store_version() -> str:
    """Changes on every write to the store: the key of every cached frame."""
    with guard("reading the store"):
        return get_store().version()


@contextmanager
def guard(what: str) -> Iterator[None]:
    """Show the engine's errors (bad filter, damaged store, refused query) as a message and stop the page; anything
    else is a bug and keeps its traceback."""
    try:
        yield
    except Exception as exc:  # st.stop() and st.rerun() raise their own exceptions: they are not user errors
        if is_user_error(exc) or isinstance(exc, OSError):
            st.error(f"Error while {what}: {exc}")
            st.stop()
        raise


def ensure_router() -> None:
    """Make sure dashboard.py's ``st.navigation`` router is in charge. Call first thing on every page.

    Streamlit keeps a process-wide flag that starts as "this app uses the pages/ folder" (v1 multipage apps) and is
    cleared only when a script calls ``st.navigation``. A fresh server whose first visitor opens a deep link
    (``/tables?...``) would run the page on its own, in v1 mode: no Overview in the menu, the page layout lost, and
    every later session the same until someone opened the root URL. Clearing the flag and rerunning makes that first
    run go through dashboard.py like every other one."""
    url.clear_notices()  # the notice area of ui.url belongs to one page's run
    try:
        from streamlit import runtime
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the flag has no v1 fallback to escape
        return
    # Only under a real server: AppTest (a mock runtime) resets the flag before every run, and a rerun there would
    # eat the button click that started it.
    if not runtime.exists() or type(runtime.get_instance()) is not runtime.Runtime:
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()
