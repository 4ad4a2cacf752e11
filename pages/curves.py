"""Curves: convergence of any metric over epochs or wall time, grouped over seeds, for any selection of runs."""
from __future__ import annotations

import streamlit as st

from ui import charts, data, url
from ui.defaults import defaults_for, latest_study
from ui.filters import chosen_study, sidebar
from ui.page import load_runs, metrics_or_stop, stop_if_empty
from ui.shape import curve_frame, fit_range, is_fraction, mode_of
from ui.state import ensure_router, guard

MAX_SERIES = 200
NONE = "(none)"

ensure_router()
st.title("Curves")
root, version, runs = load_runs()
runs = sidebar(runs, default_columns=("study", "task", "activation", "optimizer", "loss", "lr"),
               open_on=latest_study(runs))
stop_if_empty(runs)

metrics = metrics_or_stop(runs)
# Opens on the study's headline metric coloured by its factor with the fewest levels, dashed by the next one when
# that stays readable; another study brings its own defaults (ui.url.defaults_follow).
fresh = defaults_for(runs, metrics, chosen_study(runs))
factors = [NONE] + list(fresh.factors)
scope = f"{fresh.study}|{','.join(fresh.factors)}"
default_dash = next((f for f, n in zip(fresh.factors[1:2], fresh.levels[1:2]) if n <= 4), NONE)

url.defaults_follow(scope, ("metric", "color", "facet", "dash"))
c = st.columns([2, 1.4, 1.2, 1.2, 1.2])
with c[0]:
    metric = url.selectbox("Metric", metrics, "metric", fresh.metric,
                           help="train/val loss, accuracies (per head for colored_mnist), NLL, MSE, lr, grad norm, "
                                "epoch time")
with c[1]:
    x_axis = url.radio("x axis", ["epoch", "wall time"], "x", "epoch")
with c[2]:
    color = url.selectbox("Colour by", factors, "color", factors[1] if len(factors) > 1 else NONE)
with c[3]:
    facet = url.selectbox("Facet by", factors, "facet", NONE)
with c[4]:
    dash = url.selectbox("Dash by", factors, "dash", default_dash)

c = st.columns([1, 1.3, 1.5, 1])
with c[0]:
    group = url.toggle("Group over seeds", "group", True, help="Runs that differ only in seed become one mean line")
with c[1]:
    band = url.radio("Band", ["std", "min-max", "none"], "band", "std", disabled=not group)
with c[2]:
    smoothing = url.slider("EMA smoothing", "ema", 0.0, 0.95, 0.0, 0.05)
with c[3]:
    log_y = url.toggle("Log y", "logy", False)

with guard("loading the curves"):
    curves = data.curves(version, root, tuple(runs["run_id"]), (metric,))
chosen = [f for f in (color, facet, dash) if f != NONE]
lines, ends, groups = curve_frame(curves, runs, metric, "epoch" if x_axis == "epoch" else "time", group,
                                  band, smoothing, chosen)
if log_y:
    dropped = int((lines["y"] <= 0).sum())
    lines = lines[lines["y"] > 0]
    ends = ends[ends["y"] > 0]
    if dropped:
        st.caption(f"log y: {dropped} non-positive points left out")
if lines.empty:
    st.warning(f"None of these runs has a finite value of {metric} yet.")
    st.stop()
fraction = is_fraction(metric)
y_domain, left_out = None, 0
if not log_y:  # a log axis shows every order of magnitude already
    lines, ends, y_domain, left_out = fit_range(lines, ends, set(groups.loc[groups["diverged"] > 0, "series"]),
                                                fraction)
n_series = lines["series"].nunique()
if n_series > MAX_SERIES:
    keep = list(dict.fromkeys(lines["series"]))[:MAX_SERIES]
    lines, ends = lines[lines["series"].isin(keep)], ends[ends["series"].isin(keep)]
    st.warning(f"{n_series:,} lines are too many to read: showing the first {MAX_SERIES}. Narrow the filters or "
               "group over seeds.")

st.altair_chart(charts.curves(lines, ends, metric=metric, x_title="epoch" if x_axis == "epoch" else "wall time (s)",
                              color=None if color == NONE else color, dash=None if dash == NONE else dash,
                              facet=None if facet == NONE else facet,
                              band=band if group and band != "none" else None, log_y=log_y, percent=fraction,
                              y_domain=y_domain), key="curves_chart")
n_div = int(groups["diverged"].sum())
n_early = int(((runs["status"] == "diverged") & (runs["n_epochs"] == 0)).sum())
st.caption(f"{len(groups):,} {'groups' if group else 'runs'} over {int(groups['runs'].sum()):,} runs"
           + (f"; {n_div} diverged (red cross = last finite epoch)" if n_div else "")
           + (f", {n_early} diverged before logging an epoch (no point to draw)" if n_early else "")
           + (f"; {int(groups['running'].sum())} still running" if groups["running"].sum() else "")
           + (f"; {left_out} point(s) far outside the other runs' range (diverging runs) left out of the axis"
              if left_out else "")
           + f". Better is {'lower' if mode_of(metric) == 'min' else 'higher'}.")
last = f"last {metric}"
st.dataframe(groups.drop(columns=["series"] if group else []).rename(columns={"runs": "n"}), hide_index=True,
             key="curves_groups", column_config={
    last: st.column_config.NumberColumn(last + (" (mean)" if group else ""),
                                        format="percent" if fraction else "%.4g")})
