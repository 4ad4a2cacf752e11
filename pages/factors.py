"""Factors: what each factor of a study does to the final metric. A slice plot per factor (every run a dot, the
mean with its 95% CI), an interaction plot and the divergence map for two chosen factors, and the importance bars
(type II factorial ANOVA). Numbers from engine/analysis.py, charts from engine/report/figures.py (the report draws
the same ones)."""
from __future__ import annotations

import streamlit as st

from engine import analysis
from engine.report import figures
from engine.report.build import IMPORTANCE_METHOD
from engine.report.render import importance_table, markdown_table
from ui import data, url
from ui.defaults import latest_study
from ui.filters import sidebar
from ui.page import load_runs, metrics_or_stop, stop_if_empty
from ui.shape import mode_of
from ui.state import ensure_router, guard

ensure_router()
st.title("Factors")
root, version, runs = load_runs()
# Opens on the most recent study, unless the link names its own filters (as every page does).
runs = sidebar(runs, default_columns=("study", "task"), open_on=latest_study(runs))
stop_if_empty(runs)

metrics = metrics_or_stop(runs)
try:  # the study's headline metric when the runs are one task's
    headline = analysis.study_metric(runs, "the selection")
except analysis.AnalysisError:
    headline = next((m for m in ("val_accuracy", "val_loss") if m in metrics), metrics[0])
c = st.columns([2, 1, 3])
with c[0]:
    metric = url.selectbox("Metric", metrics, "metric", headline if headline in metrics else metrics[0])
with c[1]:
    mode = url.radio("Better is", ["max", "min"], "mode", mode_of(metric), widget_key=f"url_mode_{metric}")
direction = "higher" if mode == "max" else "lower"

with guard("computing the factors"):
    found = data.factors(version, runs, metric, direction)
factors = found["factors"]
st.caption(f"Final {metric} of the finished runs; {analysis.DIVERGED_RULE}. Intervals: 95% confidence interval "
           "for the mean (t). Each factor's plot averages over the other factors.")
if found["followers"]:
    st.caption("Not shown on their own, their level follows the factors above: "
               + ", ".join(found["followers"]) + ".")
if not factors:
    st.info(f"No config field varies among the finished runs with a {metric}: nothing to compare. Widen the "
            "filters in the sidebar.")
    st.stop()

st.subheader("Each factor")
cols = st.columns(2)
for i, f in enumerate(factors):
    view = found["views"][f]
    with cols[i % 2]:
        st.altair_chart(figures.slice_chart(found["points"], view, f, metric, found["log"][f]), key=f"slice_{f}")
        diverged = [f"{analysis.level_text(c.key[f])}: {c.n_diverged} of {c.n_runs}" for c in view.cells
                    if c.n_diverged]
        st.caption(f"{view.n_runs} finished runs" + (f"; diverged (not in the means): {', '.join(diverged)}"
                                                      if diverged else "; none diverged")
                   + ("; log scale" if found["log"][f] else ""))

st.subheader("Two factors")
if len(factors) < 2:
    st.caption("Only one factor varies: no interaction to show.")
    first, second = factors[0], None
else:
    ranked = analysis.by_importance(factors, found["importance"])  # the two that matter most, by default
    c = st.columns(2)
    with c[0]:
        first = url.selectbox("Across (x)", factors, "x", ranked[0])
    with c[1]:
        others = [f for f in factors if f != first]
        second = url.selectbox("Lines (colour)", others, "line", next(f for f in ranked if f != first))
with guard("computing the interaction"):
    pair = (data.interaction(version, runs, metric, first, second, direction) if second
            else found["views"][first])
left, right = st.columns(2)
with left:
    if second:
        st.altair_chart(figures.interaction_chart(pair, first, second, metric, found["log"][first]),
                        key="interaction")
        st.caption("Mean with its 95% CI per pair of levels; parallel lines mean no interaction.")
with right:
    st.altair_chart(figures.divergence_chart(pair, first, second), key="divergence")
    st.caption("Share of the finished runs that diverged (or ended non-finite), k of n in each cell.")

st.subheader("What matters")
st.caption(f"Method: {IMPORTANCE_METHOD}. Each bar is a factor's or a two-factor interaction's share of the "
           "variance of the final metric; seed noise is what the model leaves unexplained (run-to-run spread plus "
           "any higher interaction). Diverged runs are left out of the model.")
importance = found["importance"]
if importance is None or not importance.terms:
    why = found["importance_error"] or (importance.reason if importance is not None else "")
    st.warning(f"Factor importance cannot be computed: {why}")
else:
    st.altair_chart(figures.importance_chart(importance), key="importance")
    st.markdown(markdown_table(importance_table(importance)))  # the report's table, the same text
    left_out = importance.excluded["diverged"] + importance.excluded["non_finite"]
    st.caption(f"{importance.n} runs used of {importance.n_runs}"
               + (f"; {left_out} diverged or non-finite left out" if left_out else ""))
if importance is not None and (importance.dropped or importance.notes):
    for d in importance.dropped:
        st.caption(f"Dropped **{d['term']}**: {d['reason']}")
    for n in importance.notes:
        st.caption(n)
