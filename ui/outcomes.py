"""What happened to each run, in words and numbers (no Streamlit): the Runs page's table of the selection, the
Overview's recent runs, and the Overview's best cell per study read from here.

A diverged run reports where it blew up (``diverged_epoch``, ``diverged_step``, from engine/train/loop.py's finish
summary), not "0 epochs" or a missing checkpoint; a failed one its error.
"""
from __future__ import annotations

import math

import pandas as pd

from engine import analysis
from ui.filters import fmt_series


def _num(value) -> int | None:
    try:
        return None if value is None or math.isnan(float(value)) else int(value)
    except (TypeError, ValueError):
        return None


def what_happened(row: pd.Series) -> str:
    """One line per run: 'completed 10 epochs', 'diverged at epoch 4, step 37', 'failed: <error>'."""
    status = str(row.get("status"))
    if status == "diverged":
        epoch, step = _num(row.get("diverged_epoch")), _num(row.get("diverged_step"))
        where = ", ".join(p for p in (f"epoch {epoch}" if epoch is not None else "",
                                      f"step {step}" if step is not None else "") if p)
        return f"diverged at {where} (loss became non-finite)" if where else "diverged (loss became non-finite)"
    epochs = _num(row.get("n_epochs"))
    if status in ("completed", "running"):
        return f"{status} · {epochs or 0} epoch(s) logged"
    error = row.get("error")
    return f"{status}: {error}" if isinstance(error, str) and error else status


def run_table(runs: pd.DataFrame, metric: str | None, factors: list[str]) -> pd.DataFrame:
    """One row per run: id, status, what happened, the varying factors as text, the final metric (a number)."""
    out = pd.DataFrame({"run_id": runs["run_id"], "status": runs["status"]}, index=runs.index)
    for f in factors:
        out[f] = fmt_series(runs[f])
    if metric and f"final_{metric}" in runs:
        out[metric] = pd.to_numeric(runs[f"final_{metric}"], errors="coerce")
    out["what happened"] = runs.apply(what_happened, axis=1)
    return out.reset_index(drop=True)


def ranked(table: pd.DataFrame, metric: str | None, goal: str) -> list[str]:
    """Run ids from best to worst by the final metric (runs without a finite value left out)."""
    if not metric or metric not in table:
        return []
    finite = table[table[metric].map(lambda v: isinstance(v, (int, float)) and math.isfinite(v))]
    return list(finite.sort_values(metric, ascending=goal != "max", kind="stable")["run_id"])


def best_cells(runs: pd.DataFrame, study_metrics: dict[str, tuple[str, str]]) -> pd.DataFrame:
    """Per study: its best cell (mean over seeds of the headline metric) as text and value.

    ``study_metrics``: study -> (metric, goal). Columns: study, metric, best cell, best value."""
    rows = []
    for study, (metric, goal) in study_metrics.items():
        members = runs[runs["studies"].map(lambda s, name=study: name in s)]
        finished = members[members["status"].isin(analysis.FINISHED)]
        col = f"final_{metric}"
        if finished.empty or col not in finished:
            continue
        factors = [f for f in analysis.FACTORS if f in finished and fmt_series(finished[f]).nunique() > 1]
        values = pd.to_numeric(finished[col], errors="coerce")
        keys = (pd.DataFrame({f: fmt_series(finished[f]) for f in factors}).agg(" · ".join, axis=1)
                if factors else pd.Series("all runs", index=finished.index))
        means = values.groupby(keys).mean().dropna()
        if means.empty:
            continue
        best = means.idxmax() if goal == "max" else means.idxmin()
        label = " · ".join(f"{f}={v}" for f, v in zip(factors, best.split(" · "))) if factors else best
        rows.append({"study": study, "metric": metric, "best cell": label, "best value": float(means[best])})
    return pd.DataFrame(rows, columns=["study", "metric", "best cell", "best value"])
