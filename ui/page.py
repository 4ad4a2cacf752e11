"""What every page does first: find the store, load the runs, say what is wrong with the store, stop on empty."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import data, url
from ui.curation import hide_excluded
from ui.state import guard, store_root, store_version

DEMO_HINT = ("Open **Overview** and press *Run the quick demo study*, or train from a terminal: "
             "`python -m engine study run studies/<file>.toml --quick`.")


def show_problems(problems: list[str]) -> None:
    """Damaged or leftover files were skipped: say so, and how to fix it, without hiding the healthy runs."""
    if not problems:
        return
    with st.expander(f"⚠️ {len(problems)} store file(s) skipped as damaged or left over — the runs shown are the "
                     "healthy ones", expanded=False):
        for p in problems[:50]:
            st.text(p)
        if len(problems) > 50:
            st.text(f"... and {len(problems) - 50} more")
        st.markdown("Run `python -m engine check` to see why, and `python -m engine check --repair` to move damaged "
                    "files to the store's quarantine folder.")


def load_runs() -> tuple[str, str, pd.DataFrame]:
    """(store root, store version, the runs: those excluded from analysis only when the sidebar's "show excluded
    runs" toggle is on). Stops the page with a message when the store has no runs."""
    root = store_root()
    version = store_version()
    with guard("reading the runs"):
        runs = data.runs(version, root)
    show_problems(data.problems(runs))
    if runs.empty:
        st.info(f"The run store at `{root}` has no runs yet. {DEMO_HINT}")
        st.stop()
    url.start_notices()
    return root, version, hide_excluded(runs)


def stop_if_empty(runs: pd.DataFrame, what: str = "No runs match the filters") -> None:
    if runs.empty:
        st.warning(f"{what}: widen the filters in the sidebar.")
        st.stop()


def metrics_or_stop(runs: pd.DataFrame) -> list[str]:
    """The metrics these runs logged; a page with none to show says why and stops."""
    metrics = data.metrics_of(runs)
    if not metrics:
        st.warning("These runs logged no metric yet (they may have just started): wait for an epoch, or widen the "
                   "filters.")
        st.stop()
    return metrics
