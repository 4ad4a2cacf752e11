"""Tables: the final value of a metric by a row factor and a column factor, from engine/analysis.py: mean with the
chosen spread, n, diverged runs counted, the best cell and its ties marked, and (with a baseline) every cell's
difference from the baseline with its CI and a significance mark after Holm."""
from __future__ import annotations

import streamlit as st

from engine import analysis
from ui import charts, data, downloads, url
from ui.cells import SPREADS, analysis_table, cells_frame, footnote
from ui.defaults import defaults_for, latest_study
from ui.filters import chosen_study, sidebar
from ui.page import load_runs, metrics_or_stop, stop_if_empty
from ui.shape import is_fraction, mode_of
from ui.state import ensure_router, guard

NONE = "(none)"
CHOOSE, AVERAGE = "— choose —", "average over it"

ensure_router()
st.title("Tables")
root, version, runs = load_runs()
runs = sidebar(runs, default_columns=("study", "task"), open_on=latest_study(runs))
stop_if_empty(runs)

metrics = metrics_or_stop(runs)
# Cells are means over seeds: the factors are the config fields that vary, the seed and derived columns aside. The
# page opens on the study's headline metric, its factor with the most levels as rows and the next as columns (a
# tall table reads better than a wide one); another study brings its own defaults (widgets keyed by it).
fresh = defaults_for(runs, metrics, chosen_study(runs))
factors = [f for f in fresh.most_levels_first() if f in analysis.FACTORS] or ["task"]
scope = f"{fresh.study}|{','.join(factors)}"

url.defaults_follow(scope, ("metric", "row", "col"))
c = st.columns([2, 1.2, 1.6, 1.6, 1.6])
with c[0]:
    metric = url.selectbox("Metric", metrics, "metric", fresh.metric)
with c[1]:
    # Keyed by metric: picking a loss after an accuracy must not keep "max".
    mode = url.radio("Better is", ["max", "min"], "mode", mode_of(metric), widget_key=f"url_mode_{metric}")
with c[2]:
    row = url.selectbox("Rows", factors, "row", factors[0])
with c[3]:
    cols = [NONE] + [f for f in factors if f != row]
    col = url.selectbox("Columns", cols, "col", cols[1] if len(cols) > 1 else NONE)
with c[4]:
    interval = url.radio("Spread", list(SPREADS), "spread", "ci", format_func=SPREADS.get,
                         help="what follows the mean: the runs' standard deviation, the standard error of the mean, "
                              "or a 95% confidence interval for the mean (t)")
by = [row] + ([] if col == NONE else [col])

# No cell pools different configs silently: each field that varies inside a cell is held at a value or averaged.
pooled = data.pooled_factors(version, runs, tuple(by))
hold, average_over = {}, []
if pooled:
    notice = st.empty()  # filled once the controls below are read
    pick = st.columns(min(len(pooled), 4))
    for i, (f, levels) in enumerate(pooled.items()):
        with pick[i % len(pick)]:
            choice = url.selectbox(f"{f}", [CHOOSE, AVERAGE] + levels, f"h.{f}", CHOOSE)
        if choice == AVERAGE:
            average_over.append(f)
        elif choice != CHOOSE:
            hold[f] = choice

c = st.columns([2.4, 1, 1, 2])
percent_ok = is_fraction(metric)
with c[1]:
    percent = url.toggle("Percent", "pct", percent_ok, disabled=not percent_ok) and percent_ok
with c[2]:
    decimals = int(url.selectbox("Decimals", [1, 2, 3, 4, 5], "dec", 2 if percent_ok else 4))
direction = "higher" if mode == "max" else "lower"
with guard("computing the table"):
    result = data.analyze(version, runs, metric, tuple(by), hold, tuple(average_over), interval, direction)
    with c[0]:
        labels = [cell.label for cell in result.cells]
        shown = {cell.label: " · ".join(analysis.level_text(v) for v in cell.key.values()) for cell in result.cells}
        base = url.selectbox("Baseline", [NONE] + labels, "base", NONE, format_func=lambda x: shown.get(x, x),
                             help="every cell shows its difference from this cell, with a 95% CI and a mark")
    if base != NONE:
        result = data.analyze(version, runs, metric, tuple(by), hold, tuple(average_over), interval, direction,
                              baseline=result.cells[labels.index(base)].key)
if pooled and result.varying:
    notice.warning("Cells pool different configs: " + "; ".join(f"**{f}** takes {', '.join(v)}"
                                                                for f, v in result.varying.items())
                   + ". Hold each at a value, or average over it knowingly.", icon="⚠️")
elif pooled:
    notice.info("Other factors vary across these runs: " + "; ".join(
        [f"**{f}** held at {v}" for f, v in hold.items()] + [f"averaged over **{f}**" for f in average_over]))
if not result.cells:
    st.warning(f"None of the selected runs finished with a value of {metric}.")
    st.stop()

table, ties, best = analysis_table(result, percent, decimals)
notes = footnote(result, percent)
st.caption(f"final {metric}{' (%)' if percent else ''} by {' × '.join(by)}: {result.n_runs:,} finished runs. "
           + " ".join(notes[:3]))
cells = cells_frame(result)
tab_table, tab_heat, tab_cells = st.tabs(["Table", "Heatmap", "Cells (long)"])
with tab_table:
    def mark(frame):
        styles = frame.copy().astype(str)
        styles.loc[:, :] = ""
        for pos in ties:
            styles.loc[pos] = "background-color: #fef3c7"
        if best is not None:
            styles.loc[best] = "background-color: #fde68a; font-weight: bold"
        return styles
    st.dataframe(table.style.apply(mark, axis=None), key="pivot_table")
    for line in notes[3:]:
        st.caption(line)
    stem = f"{metric}_final_by_{'_x_'.join(by)}_{interval}"
    downloads.buttons(table, stem, "dl", best=best, caption=f"final {metric} by {' x '.join(by)}", notes=notes,
                      numbers=cells)
    st.caption("CSV, Parquet and Excel carry the numbers (one row per cell: mean, spread bounds, n, ...); Markdown "
               "and LaTeX the cells as shown.")
with tab_heat:
    texts = cells.apply(lambda r: table.loc[r[row], r[by[1]] if len(by) > 1 else "value"], axis=1)
    st.altair_chart(charts.heatmap(cells, row, by[1] if len(by) > 1 else None, texts, metric, mode, percent),
                    key="heatmap")
with tab_cells:
    st.dataframe(cells, hide_index=True, key="cells")
    downloads.frame_buttons(cells, stem + "_cells", "dl_cells")
