"""The Overview's studies table: every study, how far it got, its best cell, and one click to each page on it.

Links are relative page paths with the study as the sidebar filter (``curves?f.study=NAME``), the same links a
user would share. The Factors and Report pages (issue 9) take the same filter.
"""
from __future__ import annotations

from urllib.parse import quote

import pandas as pd
import streamlit as st

from engine.metrics import goal
from engine.store import STATUSES
from ui import data
from ui.defaults import metric_for, study_runs
from ui.outcomes import best_cells
from ui.shape import is_fraction

PAGES = ("curves", "tables", "runs", "factors", "report")


def study_link(page: str, study: str) -> str:
    return f"{page}?f.study={quote(study, safe='')}"


def studies_table(runs: pd.DataFrame, progress: pd.DataFrame) -> pd.DataFrame:
    """One row per study: runs, completion, the count of every status that occurs, the best cell by the study's
    headline metric (as text in the metric's format, and as a number), and a link per page."""
    metrics = {}
    for study in progress["study"]:
        members = study_runs(runs, study)
        metric = metric_for(members, data.metrics_of(members))
        if metric:
            metrics[study] = (metric, goal(metric))
    best = best_cells(runs, metrics).set_index("study")
    # The links come right after the name (what a reader acts on, never cut off at the right), then the answer.
    out = progress[["study"]].copy()
    for page in PAGES:
        out[page] = [study_link(page, s) for s in out["study"]]
    out["best"] = [_value_text(best, s) for s in out["study"]]
    out["best cell"] = out["study"].map(best["best cell"]).fillna("")
    out[["n_runs", "done_fraction"]] = progress[["n_runs", "done_fraction"]]
    for status in STATUSES + ("not_started",):
        if status in progress and progress[status].sum() > 0:
            out[status] = progress[status]
    # Newest study first: the one a user most likely came to see.
    newest = runs[["studies", "started_at"]].explode("studies").groupby("studies")["started_at"].max()
    out["_newest"] = out["study"].map(newest)
    return out.sort_values("_newest", ascending=False, na_position="last").drop(columns="_newest")


def _value_text(best: pd.DataFrame, study: str) -> str:
    if study not in best.index:
        return ""
    metric, value = best.at[study, "metric"], float(best.at[study, "best value"])
    return f"{metric} {value:.2%}" if is_fraction(metric) else f"{metric} {value:.4g}"


def show_studies(table: pd.DataFrame) -> None:
    """All studies (no inner scroll box), completion in green, the page links as one-click links."""
    config = {"done_fraction": st.column_config.ProgressColumn("complete", format="percent", min_value=0.0,
                                                               max_value=1.0, color="green"),
              "n_runs": "runs", "not_started": "not started",
              "best cell": st.column_config.TextColumn("best cell (mean over seeds)", width="medium")}
    for page in PAGES:
        config[page] = st.column_config.LinkColumn(page.capitalize(), display_text=page.capitalize(), width=64)
    st.dataframe(table, hide_index=True, column_config=config, key="studies", height=full_height(len(table)))


def full_height(n_rows: int) -> int:
    """A dataframe height that shows every row (Streamlit's default box scrolls after ten)."""
    return 38 + 35 * n_rows
