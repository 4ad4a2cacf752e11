"""Pick runs by any config column: the sidebar filters every page shares, kept in the URL (``f.<column>``).

Filtering happens in pandas on the cached runs frame (one query per store version), so changing a filter costs no
query. Values are compared by their display text (``fmt``), which is also what the URL holds.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import streamlit as st

from ui import url
from ui.data import CONFIG_COLUMNS

# Offered first, in this order; any other config column can be added.
PREFERRED = ("study", "tags", "task", "status", "dataset", "activation", "optimizer", "loss", "lr", "hidden", "model",
             "batch_size", "epochs", "schedule", "weight_decay", "seed")
MISSING = "(n/a)"


def fmt(value) -> str:
    """One display text per value: numbers compactly, lists as '100,150' ('linear' for none), None as (n/a)."""
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value) if value else "linear"
    return str(value)


def fmt_series(values: pd.Series) -> pd.Series:
    """``fmt`` of every value, computed once per distinct value (thousands of runs share a handful of values)."""
    try:
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
    except TypeError:  # unhashable values (lists): the slow path
        return values.map(fmt)
    texts = np.array([fmt(u) for u in uniques] + [MISSING], dtype=object)
    return pd.Series(texts[codes], index=values.index, dtype=object)


# Columns holding several names per run (a run's studies, its tags): a filter keeps runs with any picked name.
SET_COLUMNS = {"study": "studies", "tags": "tags"}


def filterable_columns(runs: pd.DataFrame) -> list[str]:
    """The study, the status, every config column, and last the run id (what a link to one run filters on)."""
    cols = ["study"] + [c for c in ("status",) + CONFIG_COLUMNS if c in runs]
    if "tags" in runs and any(len(t) for t in runs["tags"]):
        cols.append("tags")
    order = {c: i for i, c in enumerate(PREFERRED)}
    return sorted(dict.fromkeys(cols), key=lambda c: (order.get(c, len(order)), c)) + ["run_id"]


def values_of(runs: pd.DataFrame, column: str) -> list[str]:
    if column in SET_COLUMNS:
        sets = runs.get(SET_COLUMNS[column], [])
        names = sorted({s for names in sets for s in names})
        return names + ([MISSING] if any(len(s) == 0 for s in sets) else [])
    texts = fmt_series(runs[column])
    vals = runs[column].dropna()
    try:  # numeric order for numbers, text order otherwise
        order = sorted(set(vals), key=lambda v: (v is None, v))
        out = list(dict.fromkeys(fmt(v) for v in order))
    except TypeError:
        out = sorted(set(texts) - {MISSING})
    return out + ([MISSING] if (texts == MISSING).any() else [])


def apply(runs: pd.DataFrame, selected: dict[str, list[str]]) -> pd.DataFrame:
    mask = pd.Series(True, index=runs.index)
    for column, values in selected.items():
        if not values:
            continue
        wanted = set(values)
        if column in SET_COLUMNS:
            codes, uniques = pd.factorize(runs[SET_COLUMNS[column]])
            hit = np.array([bool(wanted & set(u)) or (MISSING in wanted and not u) for u in uniques] + [False])
            mask &= hit[codes]
        elif column in runs:
            mask &= fmt_series(runs[column]).isin(wanted)
    return runs[mask]


def varying_columns(runs: pd.DataFrame, exclude: tuple[str, ...] = ()) -> list[str]:
    """Config columns that take more than one value among these runs (the factors worth colouring by)."""
    out = []
    for c in CONFIG_COLUMNS:
        if c in runs and c not in exclude and fmt_series(runs[c]).nunique() > 1:
            out.append(c)
    return out


def sidebar(runs: pd.DataFrame, default_columns: tuple[str, ...] = ("study", "task"),
            open_on: str | None = None) -> pd.DataFrame:
    """Draw the filters in the sidebar and return the runs that pass them.

    ``open_on`` (ui.defaults.latest_study): a link that names no filter (and no runs) opens on this study, written
    into the URL so that the link keeps showing it after newer studies are trained."""
    with st.sidebar:
        st.subheader("Filter runs")
        columns = filterable_columns(runs)
        varying = set(varying_columns(runs)) | {"study", "status"}
        asked = [k[2:] for k in st.query_params.keys() if k.startswith("f.")]
        url.ignored("filter on", [c for c in asked if c not in columns], "the other filters")
        in_url = [c for c in asked if c in columns]
        if open_on and not asked and "runs" not in st.query_params:
            st.query_params["f.study"] = open_on
        studies = set(values_of(runs, "study"))
        named = [v for v in url.get_all("f.study") if v != url.EVERYTHING]
        if open_on and named and not studies & set(named):  # no study of the link is here: the newest instead
            url.ignored("f.study", named, f"the newest study, {open_on}")
            st.query_params["f.study"] = open_on
            in_url = ["study"]
        defaults = [c for c in default_columns if c in columns]
        shown = url.multiselect("Filter on", columns, "filters", default=tuple(dict.fromkeys(defaults + in_url)),
                                help="Any config column, the study, or the status. Each filter keeps the runs "
                                     "whose value is one of those picked (none picked: all).")
        selected: dict[str, list[str]] = {}
        for column in shown:
            options = values_of(runs, column)
            label = column + ("" if column in varying else " (one value)")
            selected[column] = url.multiselect(label, options, f"f.{column}", placeholder="all",
                                               keep_empty=column == "study" and bool(open_on))
        for key in [k for k in st.query_params.keys() if k.startswith("f.") and k[2:] not in shown]:
            del st.query_params[key]
        kept = apply(runs, selected)
        st.caption(f"{len(kept):,} of {len(runs):,} runs match")
    return kept


def chosen_study(runs: pd.DataFrame) -> str | None:
    """The one study the sidebar's filter picks (None: none or several)."""
    picked = [v for v in url.get_all("f.study") if v not in (url.EVERYTHING, MISSING)]
    return picked[0] if len(picked) == 1 else None
