"""Runs side by side: 2 to 4 runs, what differs in their configs, their curves and final metrics, and the view that
fits their task (decision boundary, confusion matrices, predicted mean ± 2 std and calibration).

The task views use each run's stored checkpoint (the engine keeps one per completed run): it is the exact model
behind the curves and needs one forward pass; a retrain would cost a full training and need not reproduce a run
trained on another device or in a stack. Runs without a checkpoint (diverged, failed, running) say so.
"""
from __future__ import annotations

import streamlit as st

from ui import charts, curation, data, url
from ui.filters import fmt, fmt_series, sidebar
from ui.page import load_runs, stop_if_empty
from ui.shape import config_diff, is_fraction
from ui.state import ensure_router, guard

ensure_router()
st.title("Runs side by side")
root, version, runs = load_runs()
runs = sidebar(runs, default_columns=("study", "task", "status"))
stop_if_empty(runs)


MAX_OPTIONS = 500
in_url = [r for r in url.get_all("runs") if r in set(runs["run_id"])]
offered = runs[runs["run_id"].isin(in_url) | (runs.index.isin(runs.index[:MAX_OPTIONS]))]
text = {c: fmt_series(offered[c]) for c in ("task", "activation", "optimizer", "lr", "seed")}
labels = dict(zip(offered["run_id"], offered["run_id"] + " · " + text["task"] + " · " + text["activation"] + " · "
                  + text["optimizer"] + " · lr " + text["lr"] + " · seed " + text["seed"] + " · "
                  + offered["status"].astype(str)))
if len(runs) > MAX_OPTIONS:
    st.caption(f"{len(runs):,} runs match the filters: the list offers the newest {MAX_OPTIONS}; narrow the filters "
               "in the sidebar to reach the others.")
with_weights = set(offered.loc[offered["has_checkpoint"].fillna(False).astype(bool), "run_id"])
default = ([r for r in labels if r in with_weights] + [r for r in labels if r not in with_weights])[:2]
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
errors = sel[sel["error"].notna()] if "error" in sel else sel.iloc[0:0]
for _, r in errors.iterrows():
    st.caption(f"{r['run_id'][:8]}: {r['error']}")
with guard("reading where the runs trained"):
    st.caption(" · ".join(f"{rid[:8]} trained on {where}"
                          for rid, where in data.trained_on(version, root, tuple(chosen)).items()))

st.subheader("Curves")
metrics = data.metrics_of(sel)
metric = url.selectbox("Metric", metrics, "metric", next((m for m in ("val_loss", "train_loss") if m in metrics),
                                                         metrics[0] if metrics else None))
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
for col, (_, r) in zip(st.columns(len(sel)), sel.iterrows()):
    with col:
        st.markdown(f"**{r['run_id'][:8]}** · {r['task']} · {r['status']}")
        with st.spinner("Evaluating..."), guard("computing the task view"):
            view, problem = data.task_view(root, r["run_id"], int(r["attempt"]), split)
        if problem:
            st.info(problem)
            continue
        for note in view.notes:
            st.caption(note)
        if view.kind == "boundary":
            st.metric(f"{split} accuracy", f"{view.summary['accuracy']:.1%}")
            st.altair_chart(charts.boundary(view.frames["grid"], view.frames["points"], view.summary["step_x1"],
                                            view.summary["step_x2"]), key=f"boundary_{r['run_id']}")
        elif view.kind == "confusion":
            for head, frame in view.frames.items():
                st.metric(f"{head} accuracy", f"{view.summary[f'{head}_accuracy']:.1%}")
                st.altair_chart(charts.confusion(frame, f"{head} (rows: true)"), key=f"cm_{head}_{r['run_id']}")
        else:
            st.metric("RMSE", f"{view.summary['rmse']:.4g}",
                      help=f"share inside ±2 std: {view.summary['within_2std']:.1%}")
            st.altair_chart(charts.regression(view.frames["predictions"], view.summary["x_axis"]),
                            key=f"reg_{r['run_id']}")
            st.altair_chart(charts.calibration(view.frames["calibration"]), key=f"cal_{r['run_id']}")
            st.dataframe(view.frames["calibration"][["nominal", "observed", "n"]], hide_index=True,
                         key=f"caltab_{r['run_id']}")
