"""Pandas shaping for the pages (no Streamlit): curves grouped over seeds, config diffs (the Tables page's cells
are ui/cells.py over engine/analysis.py).

Kept apart from the pages so it is unit-testable and so that every number on screen comes from one place.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from engine.metrics import goal
from ui.data import CONFIG_COLUMNS
from ui.filters import fmt, fmt_series

PERCENT_METRICS = ("accuracy", "within_1std", "within_2std")
DERIVED = ("n_hidden", "width")


def mode_of(metric: str) -> str:
    """'max' for accuracies and coverage, 'min' for losses, errors and NLL (engine.metrics decides)."""
    return goal(metric)


def is_fraction(metric: str) -> bool:
    return any(metric.endswith(k) for k in PERCENT_METRICS)


# --- curves ----------------------------------------------------------------------------------------------------

def label_columns(runs: pd.DataFrame, varying: list[str]) -> list[str]:
    """The varying columns worth naming in a label: a field that only applies to some runs (momentum is n/a for
    adam), or is derived from another (n_hidden and width from hidden), and whose value follows from the other
    fields is left out, so labels read 'optimizer=sgd', not 'optimizer=sgd, momentum=0, nesterov=false'."""
    keep = list(varying)
    texts = pd.DataFrame({c: fmt_series(runs[c]) for c in varying}, index=runs.index)
    for c in reversed(varying):
        others = [o for o in keep if o != c]
        conditional = (texts[c] == "(n/a)").any() or c in DERIVED
        if not others or not conditional:
            continue
        if texts.groupby(others)[c].nunique().max() <= 1:
            keep.remove(c)
    return keep


def config_labels(runs: pd.DataFrame, columns: list[str]) -> pd.Series:
    """'activation=relu, optimizer=adam' per run (vectorised: thousands of runs)."""
    if not columns:
        return pd.Series("all runs", index=runs.index)
    out = None
    for c in columns:
        part = f"{c}=" + fmt_series(runs[c])
        out = part if out is None else out + ", " + part
    return out


def curve_frame(curves: pd.DataFrame, runs: pd.DataFrame, metric: str, x: str, group: bool, band: str,
                smoothing: float, factors: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Lines, bands and divergence markers of one metric.

    Returns (lines, ends, groups):
      lines  one row per (series, epoch): series, x, y, lo, hi, n, config, the factor columns
      ends   one row per diverged run: its last finite point (series, x, y, run_id, config, ...)
      groups one row per series: series, config, n runs, runs diverged, last mean value
    A series is one run, or (group=True) the runs that differ only in seed.
    """
    varying = [c for c in CONFIG_COLUMNS if c in runs and fmt_series(runs[c]).nunique() > 1]
    named = label_columns(runs, [c for c in varying if not group or c != "seed"])
    meta = pd.DataFrame({"run_id": runs["run_id"], "status": runs["status"],
                         "config": config_labels(runs, named)}, index=runs.index)
    meta["series"] = meta["config"] if group else meta["run_id"].str[:8] + " " + meta["config"]
    factors = list(dict.fromkeys(factors))  # colour and facet by one factor: one column
    factor_cols = [f"_{f}" for f in factors]
    for f in factors:
        meta[f"_{f}"] = fmt_series(runs[f])
    # Work on integer ids: joins and group-bys over 10^5 epoch rows stay cheap.
    meta["sid"] = pd.factorize(meta["series"])[0]
    series_info = meta.drop_duplicates("sid").set_index("sid")[["series", "config"] + factor_cols]
    run_info = meta.set_index("run_id")

    df = curves[["run_id", "epoch", "time_s", metric]]
    df = df[df["run_id"].isin(run_info.index)].sort_values(["run_id", "epoch"], kind="stable")
    df = df.assign(sid=df["run_id"].map(run_info["sid"]).to_numpy(),
                   x=df["epoch"] if x == "epoch" else df["time_s"])
    # inf (a blown-up loss) is no value to average or draw: treated as missing, like NaN.
    df[metric] = df[metric].where(np.isfinite(df[metric].astype(float)))
    if smoothing > 0:
        smoothed = df.groupby("run_id", sort=False)[metric].ewm(alpha=1.0 - smoothing, ignore_na=True).mean()
        df["y"] = smoothed.reset_index(level=0, drop=True).where(df[metric].notna())
    else:
        df["y"] = df[metric]

    last = df.dropna(subset=["y"]).groupby("run_id", sort=False).tail(1)
    last = last[last["run_id"].map(run_info["status"]).to_numpy() == "diverged"]
    ends = last[["run_id", "sid", "x", "y", "epoch"]].join(series_info, on="sid").drop(columns="sid")

    if group:
        agg = df.groupby(["sid", "epoch"], sort=False).agg(
            x=("x", "mean"), y=("y", "mean"), std=("y", "std"), lo_mm=("y", "min"), hi_mm=("y", "max"),
            n=("y", "count")).reset_index()
        agg = agg[agg["n"] > 0]
        agg["spread"] = agg["std"].fillna(0.0)
        if band == "min-max":
            agg["lo"], agg["hi"] = agg["lo_mm"], agg["hi_mm"]
        else:
            agg["lo"], agg["hi"] = agg["y"] - agg["spread"], agg["y"] + agg["spread"]
        lines = agg.drop(columns=["std", "lo_mm", "hi_mm"])
    else:
        lines = df[["sid", "run_id", "epoch", "x", "y"]].dropna(subset=["y"])
        lines = lines.assign(lo=lines["y"], hi=lines["y"], n=1, spread=0.0)
    lines = lines.join(series_info, on="sid").drop(columns="sid")

    flags = meta.assign(diverged=meta["status"] == "diverged", running=meta["status"] == "running")
    counts = flags.groupby("series", sort=False).agg(config=("config", "first"), runs=("run_id", "count"),
                                                     diverged=("diverged", "sum"), running=("running", "sum"))
    finals = lines.sort_values("epoch").groupby("series").tail(1).set_index("series")["y"]
    groups = counts.join(finals.rename(f"last {metric}")).reset_index()
    return lines.reset_index(drop=True), ends.reset_index(drop=True), groups


def fit_range(lines: pd.DataFrame, ends: pd.DataFrame, diverged_series: set[str], fraction: bool
              ) -> tuple[pd.DataFrame, pd.DataFrame, tuple[float, float] | None, int]:
    """The y range a reader needs, and the points that would wreck it.

    The range comes from the series without a diverged run (all series when every one diverged): their means and
    bands, plus a margin. A diverged run's last epochs (1e36 before the blow-up) would squash every other line into
    a flat stripe, so their points further than one range-width outside are left out and counted (a diverged
    run's end marker is kept: the chart's scale clamps it to the edge, its tooltip keeps the value). Fractions
    (accuracies, coverage) stay within [0, 1]: a mean ± std band is clipped there. Returns (lines, ends,
    (lo, hi) or None, number of points left out)."""
    if lines.empty:
        return lines, ends, None, 0
    ref = lines[~lines["series"].isin(diverged_series)]
    ref = ref if len(ref) else lines
    values = pd.concat([ref["y"], ref["lo"], ref["hi"]]).astype(float)
    values = values[np.isfinite(values)]
    if fraction:
        values = values.clip(0.0, 1.0)
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo if hi > lo else max(abs(hi) * 0.1, 1e-9)
    window = (lo - span, hi + span)
    inside = lines["y"].between(*window)
    lines = lines[inside].copy()
    floor, ceiling = (0.0, 1.0) if fraction else window
    lines["lo"] = lines["lo"].clip(max(window[0], floor), min(window[1], ceiling))
    lines["hi"] = lines["hi"].clip(max(window[0], floor), min(window[1], ceiling))
    margin = span * 0.05
    domain = (lo - margin, hi + margin)
    if fraction:
        domain = (max(domain[0], 0.0), min(domain[1], 1.0))
    return lines, ends, domain, int((~inside).sum())


# --- runs side by side -------------------------------------------------------------------------------------------

def config_diff(runs: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Config fields (rows) that differ between the runs (columns); an empty frame when all agree."""
    cols = [c for c in CONFIG_COLUMNS if c in runs]
    table = runs[cols].T.map(fmt)
    table.columns = labels
    differs = table.nunique(axis=1) > 1
    return table[differs]
