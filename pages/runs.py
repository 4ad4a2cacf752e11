"""Runs side by side: 2 to 4 runs, what differs in their configs, their curves and final metrics, and the view that
fits their task (decision boundary, confusion matrices, predicted mean ± 2 std and calibration).

The task views use each run's stored checkpoint (the engine keeps one per completed run): it is the exact model
behind the curves and needs one forward pass; a retrain would cost a full training and need not reproduce a run
trained on another device or in a stack. Runs without a checkpoint (diverged, failed, running) say so.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import charts, curation, data, url
from ui.defaults import defaults_for, latest_study
from ui.filters import chosen_study, fmt, sidebar
from ui.outcomes import ranked, run_table, what_happened
from ui.page import load_runs, stop_if_empty
from ui.shape import config_diff, is_fraction, mode_of
from ui.state import ensure_router, guard

ensure_router()
st.title("Runs side by side")
root, version, runs = load_runs()
runs = sidebar(runs, default_columns=("study", "task", "status"), open_on=latest_study(runs))
stop_if_empty(runs)

# The same defaults however one arrives: the study's headline metric, its factors, and its best and worst runs.
metrics = data.metrics_of(runs)
fresh = defaults_for(runs, metrics, chosen_study(runs))
url.defaults_follow(f"{fresh.study}|{len(runs)}", ("metric", "runs"), clear_url=("runs",))
metric = url.selectbox("Metric", metrics, "metric", fresh.metric, help="ranks the runs below and draws the curves")
goal = mode_of(metric) if metric else "max"
table = run_table(runs, metric, list(fresh.factors))
order = ranked(table, metric, goal)
best_first = order + [r for r in table["run_id"] if r not in set(order)]

st.caption(f"{len(table):,} runs in the selection, best first by final {metric} ({'higher' if goal == 'max' else 'lower'}"
           " is better). Sort by any column; pick runs below, or:")
b = st.columns(4)
picks = {"Best two": order[:2], "Best and worst": order[:1] + order[-1:], "Worst two": order[-2:][::-1]}
for col, (label, ids) in zip(b, picks.items()):
    if col.button(label, disabled=len(ids) < 2, key=f"pick_{label}"):
        st.session_state.pop("url_runs", None)  # the picker below reads the URL afresh
        url.put("runs", ids)
        st.rerun()
fraction = bool(metric) and is_fraction(metric)
shown = table.set_index("run_id").loc[best_first].reset_index()
st.dataframe(shown, hide_index=True, key="runs_table", height=min(38 + 35 * len(shown), 320), column_config={
    metric: st.column_config.NumberColumn(f"final {metric}", format="percent" if fraction else "%.4g"),
    "run_id": st.column_config.TextColumn("run")})

label_parts = [shown["run_id"].str[:8]] + [shown[f] for f in fresh.factors] + [shown["status"]]
if metric in shown:
    label_parts.append(f"{metric} " + shown[metric].map(
        lambda v: fmt(v) if v != v else (f"{v:.2%}" if fraction else f"{v:.4g}")))
labels = dict(zip(shown["run_id"], pd.concat(label_parts, axis=1).astype(str).agg(" · ".join, axis=1)))
default = (order[:1] + order[-1:]) if len(order) >= 2 else best_first[:2]
chosen = url.multiselect("Runs (2 to 4)", list(labels), "runs", default=default,
                         format_func=lambda r: labels.get(r, r), max_selections=4)
curation.runs_panel(runs, chosen)  # exclude / tag / note / delete these runs, or all that match the filters
if len(chosen) < 2:
    st.info("Pick at least two runs to compare (use the sidebar filters to find them).")
    st.stop()
sel = runs.set_index("run_id").loc[chosen].reset_index()
names = [f"{r[:8]}" for r in chosen]

st.subheader("What differs")
diff = config_diff(sel, names)
if diff.empty:
    st.caption("The configs are identical.")
else:
    st.dataframe(diff, key="config_diff")

st.subheader("Final metrics")
final_cols = [c for c in sel.columns if c.startswith("final_") and sel[c].notna().any()]
finals = sel[["status", "n_epochs"] + final_cols].T
finals.columns = names
finals.index = [i.replace("final_", "") for i in finals.index]
st.dataframe(finals.map(lambda v: f"{v:.5g}" if isinstance(v, float) and v == v else fmt(v)), key="finals")
for _, r in sel[sel["status"] != "completed"].iterrows():
    st.caption(f"{r['run_id'][:8]}: {what_happened(r)}")
with guard("reading where the runs trained"):
    st.caption(" · ".join(f"{rid[:8]} trained on {where}"
                          for rid, where in data.trained_on(version, root, tuple(chosen)).items()))

st.subheader("Curves")
if metric:
    with guard("loading the curves"):
        curves = data.curves(version, root, tuple(chosen), (metric,))
    curves = curves.assign(run=curves["run_id"].str[:8]).dropna(subset=[metric])
    if curves.empty:
        st.caption(f"No finite values of {metric} yet.")
    else:
        st.altair_chart(charts.overlay(curves, metric, is_fraction(metric)), key="overlay")

st.subheader("Task view")
split = url.radio("Split", ["val", "test", "train"], "split", "val")
st.caption("From each run's stored checkpoint (the exact trained weights; no retraining).")


def task_view(r) -> None:
    """One run's task view, from its checkpoint."""
    st.markdown(f"**{r['run_id'][:8]}** · {r['task']} · {r['status']}")
    with st.spinner("Evaluating..."), guard("computing the task view"):
        view, problem = data.task_view(root, r["run_id"], int(r["attempt"]), split)
    if problem:
        st.info(f"{what_happened(r)}: only completed runs keep their trained weights, so there is no task view."
                if r["status"] != "completed" else problem)
        return
    for note in view.notes:
        st.caption(note)
    if view.kind == "boundary":
        st.metric(f"{split} accuracy", f"{view.summary['accuracy']:.1%}")
        st.altair_chart(charts.boundary(view.frames["grid"], view.frames["points"], view.summary["step_x1"],
                                        view.summary["step_x2"]), key=f"boundary_{r['run_id']}", width="content")
    elif view.kind == "confusion":
        for head, frame in view.frames.items():
            st.metric(f"{head} accuracy", f"{view.summary[f'{head}_accuracy']:.1%}")
            st.altair_chart(charts.confusion(frame, f"{head} (rows: true)"), key=f"cm_{head}_{r['run_id']}",
                            width="content")
    else:
        st.metric("RMSE", f"{view.summary['rmse']:.4g}",
                  help=f"share inside ±2 std: {view.summary['within_2std']:.1%}")
        st.altair_chart(charts.regression(view.frames["predictions"], view.summary["x_axis"]),
                        key=f"reg_{r['run_id']}")
        st.altair_chart(charts.calibration(view.frames["calibration"]), key=f"cal_{r['run_id']}")
        st.dataframe(view.frames["calibration"][["nominal", "observed", "n"]], hide_index=True,
                     key=f"caltab_{r['run_id']}")


# Two runs to a row at most, each drawn at its own size: a decision boundary on equal axes and a square confusion
# matrix keep their shape and every label (four quarter-width columns squashed them).
PER_ROW = 2
for start in range(0, len(sel), PER_ROW):
    for col, (_, r) in zip(st.columns(PER_ROW, border=True), sel.iloc[start:start + PER_ROW].iterrows()):
        with col:
            task_view(r)
