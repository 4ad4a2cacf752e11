"""Tables: the final or best value of a metric by a row factor and a column factor, mean ± std (n) over seeds."""
from __future__ import annotations

import streamlit as st

from ui import charts, data, downloads, url
from ui.filters import sidebar, varying_columns
from ui.page import load_runs, stop_if_empty
from ui.shape import display_table, is_fraction, mode_of, pivot_cells
from ui.state import ensure_router, guard

NONE = "(none)"

ensure_router()
st.title("Tables")
root, version, runs = load_runs()
runs = sidebar(runs, default_columns=("study", "task"))
stop_if_empty(runs)

metrics = data.metrics_of(runs)
if not metrics:
    st.warning("These runs logged no metric yet.")
    st.stop()
varying = varying_columns(runs)
# seed last: a table by seed is a check, not the usual view (cells are means over seeds).
factors = [f for f in varying if f != "seed"] + [f for f in varying if f == "seed"] or ["task"]

c = st.columns([2, 1.2, 1.2, 1.6, 1.6])
with c[0]:
    metric = url.selectbox("Metric", metrics, "metric",
                           next((m for m in ("val_accuracy", "val_loss") if m in metrics), metrics[0]))
with c[1]:
    stat = url.radio("Value", ["best", "final"], "stat", "best",
                     help="best: the best epoch's value (min for losses, max for accuracies); final: the last "
                          "epoch's value")
with c[2]:
    # Keyed by metric: picking a loss after an accuracy must not keep "max".
    mode = url.radio("Better is", ["max", "min"], "mode", mode_of(metric), widget_key=f"url_mode_{metric}")
with c[3]:
    row = url.selectbox("Rows", factors, "row", factors[0])
with c[4]:
    cols = [NONE] + [f for f in factors if f != row]
    col = url.selectbox("Columns", cols, "col", cols[1] if len(cols) > 1 else NONE)
col = None if col == NONE else col

c = st.columns([1, 1, 1, 3])
percent_ok = is_fraction(metric)
with c[0]:
    percent = url.toggle("Percent", "pct", percent_ok, disabled=not percent_ok)
with c[1]:
    decimals = int(url.selectbox("Decimals", [1, 2, 3, 4, 5], "dec", 2 if percent_ok else 4))
with c[2]:
    show_epoch = url.toggle("Epoch", "epoch", True, help="append '@e': the mean epoch at which the value was reached")

with guard("computing the table"):
    fab = data.final_and_best(version, root, metric, mode)
fab = fab[fab["run_id"].isin(runs["run_id"])]
if fab.empty:
    st.warning(f"None of the selected runs logged {metric}.")
    st.stop()
cells = pivot_cells(fab, row, col, stat, mode)
table, best = display_table(cells, row, col, percent and percent_ok, decimals, show_epoch)

what = f"{stat} {metric}" + (" (%)" if percent and percent_ok else "")
st.caption(f"{what} by {row}" + (f" × {col}" if col else "") + f": mean ± std (n runs){' @mean epoch' if show_epoch else ''}"
           f" over seeds and any other varying config; best cell ({'highest' if mode == 'max' else 'lowest'} mean) "
           f"highlighted. {len(fab):,} runs.")
tab_table, tab_heat, tab_cells = st.tabs(["Table", "Heatmap", "Cells (long)"])
with tab_table:
    def mark_best(frame):
        styles = frame.copy().astype(str)
        styles.loc[:, :] = ""
        if best is not None:
            styles.loc[best[0], best[1]] = "background-color: #fde68a; font-weight: bold"
        return styles
    st.dataframe(table.style.apply(mark_best, axis=None), key="pivot_table")
    stem = f"{metric}_{stat}_by_{row}" + (f"_x_{col}" if col else "")
    downloads.buttons(table, stem, "dl", best=best, caption=f"{what} by {row}" + (f" x {col}" if col else ""))
with tab_heat:
    texts = cells.apply(lambda r: table.loc[str(r[row]), str(r[col]) if col else "value"], axis=1)
    st.altair_chart(charts.heatmap(cells, row, col, texts, metric, mode, percent and percent_ok), key="heatmap")
with tab_cells:
    st.dataframe(cells, hide_index=True, key="cells")
    downloads.frame_buttons(cells, stem + "_cells", "dl_cells")
