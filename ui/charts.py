"""Altair chart builders. Data arrives already shaped (``ui.shape``, ``engine.inspect``): charts only encode."""
from __future__ import annotations

import altair as alt
import pandas as pd

# Enough rows for 10,000 runs x a few epochs aggregated; Altair's default limit (5,000) would refuse the chart.
alt.data_transformers.disable_max_rows()


# Facet panels wrap into rows whose total width (~830 px with the y axis) fits the wide layout's main column on a
# 1280 px screen: panel width by the number of columns; four panels as 2 x 2 rather than 3 + 1.
FACET_COLUMNS = 3
FACET_WIDTH = {1: 600, 2: 360, 3: 240}


def facet_columns(n_panels: int) -> int:
    return 2 if n_panels == 4 else max(1, min(FACET_COLUMNS, n_panels))


def metric_format(fraction: bool) -> str:
    """The d3 format of a metric everywhere it is shown: percent for fractions, 4 significant digits otherwise."""
    return ".1%" if fraction else ".4~g"


def curves(lines: pd.DataFrame, ends: pd.DataFrame, *, metric: str, x_title: str, color: str | None,
           dash: str | None, facet: str | None, band: str | None, log_y: bool, percent: bool,
           y_domain: tuple[float, float] | None = None) -> alt.Chart:
    """One line per series (mean when grouped), a shaded band ("std", "min-max" or None), a red cross where a run
    diverged, tooltips with the config, the mean, its spread and n in the metric's format.

    The legend shows the line colours at full strength (the band's pale fill would make neighbours look alike);
    ``y_domain`` (ui.shape.fit_range) keeps diverged runs' huge values from setting the axis."""
    if log_y:
        y_scale = alt.Scale(type="log")
    elif y_domain is not None:
        y_scale = alt.Scale(domain=list(y_domain), zero=False, nice=False, clamp=True)
    else:
        y_scale = alt.Scale(zero=False)
    y_fmt = metric_format(percent)
    palette = alt.Scale(scheme="tableau10")
    legend = alt.Legend(symbolType="stroke", symbolStrokeWidth=3, symbolOpacity=1, labelLimit=260,
                        orient="bottom" if facet else "right", columns=4 if facet else 1)
    colour = (alt.Color(f"_{color}:N", title=color, scale=palette, legend=legend) if color
              else alt.Color("series:N", legend=None, scale=palette))
    tooltip = [alt.Tooltip("config:N", title="config"), alt.Tooltip("epoch:Q")]
    if x_title != "epoch":
        tooltip.append(alt.Tooltip("x:Q", title=x_title, format=".4g"))
    tooltip.append(alt.Tooltip("y:Q", title=f"{metric} (mean)" if band else metric, format=y_fmt))
    if band == "std":
        tooltip.append(alt.Tooltip("spread:Q", title="± std", format=y_fmt))
    elif band == "min-max":
        tooltip += [alt.Tooltip("lo:Q", title="min", format=y_fmt), alt.Tooltip("hi:Q", title="max", format=y_fmt)]
    tooltip.append(alt.Tooltip("n:Q", title="n runs"))
    data = lines.assign(kind="line")
    if len(ends):
        data = pd.concat([data, ends.assign(kind="end", n=1, lo=ends["y"], hi=ends["y"], spread=0.0)],
                         ignore_index=True)
    base = alt.Chart().encode(x=alt.X("x:Q", title=x_title,
                                      axis=alt.Axis(tickMinStep=1) if x_title == "epoch" else alt.Axis()))
    line_enc = {"y": alt.Y("y:Q", title=metric, scale=y_scale, axis=alt.Axis(format=y_fmt)), "color": colour,
                "detail": "series:N", "tooltip": tooltip}
    if dash:
        line_enc["strokeDash"] = alt.StrokeDash(f"_{dash}:N", title=dash,
                                                legend=alt.Legend(orient="bottom" if facet else "right"))
    # The band states the same legend as the lines: a layer saying legend=None for the shared colour would drop the
    # merged legend of a faceted chart altogether.
    band_colour = colour
    layers = []
    if band:
        layers.append(base.mark_area(opacity=0.18).encode(
            y=alt.Y("lo:Q", scale=y_scale), y2="hi:Q", color=band_colour, detail="series:N")
            .transform_filter(alt.datum.kind == "line"))
    layers.append(base.mark_line(strokeWidth=1.8).encode(**line_enc).transform_filter(alt.datum.kind == "line"))
    # An invisible point layer makes the whole line hoverable for the tooltip.
    layers.append(base.mark_circle(size=28, opacity=0).encode(y="y:Q", tooltip=tooltip, detail="series:N")
                  .transform_filter(alt.datum.kind == "line"))
    if len(ends):
        end_tip = [alt.Tooltip("config:N"), alt.Tooltip("run_id:N"), alt.Tooltip("epoch:Q", title="last finite epoch"),
                   alt.Tooltip("y:Q", title=metric, format=y_fmt)]
        layers.append(base.mark_point(shape="cross", size=140, color="#d62728", filled=True, opacity=1).encode(
            y="y:Q", tooltip=end_tip).transform_filter(alt.datum.kind == "end"))
    chart = alt.layer(*layers, data=data)
    if facet:
        columns = facet_columns(lines[f"_{facet}"].nunique() if f"_{facet}" in lines else FACET_COLUMNS)
        chart = chart.properties(width=FACET_WIDTH[columns], height=220).facet(
            facet=alt.Facet(f"_{facet}:N", title=facet), columns=columns)
    else:
        chart = chart.properties(height=420)
    return chart.interactive(bind_y=False) if not facet else chart


def heatmap(cells: pd.DataFrame, row: str, col: str | None, texts: pd.Series, metric: str, mode: str,
            percent: bool) -> alt.Chart:
    """Cells coloured by their mean (darker = better), each labelled with its on-screen text; the best outlined."""
    data = cells.assign(text=texts.values, col=cells[col] if col else "value")
    lo, hi = data["mean"].min(), data["mean"].max()
    goodness = (data["mean"] - lo) / (hi - lo) if hi > lo else data["mean"] * 0
    data["dark"] = (goodness if mode == "max" else 1 - goodness) > 0.55
    scheme, order = "blues", ("ascending" if mode == "max" else "descending")
    rows, cols = list(dict.fromkeys(data[row])), list(dict.fromkeys(data["col"]))
    base = alt.Chart(data).encode(x=alt.X("col:N", title=col or "", sort=cols, axis=alt.Axis(labelAngle=0, orient="top")),
                                  y=alt.Y(f"{row}:N", title=row, sort=rows, axis=alt.Axis(labelLimit=240)))
    rect = base.mark_rect().encode(
        color=alt.Color("mean:Q", title=metric, scale=alt.Scale(scheme=scheme, reverse=(order == "descending")),
                        legend=alt.Legend(format=".1%" if percent else ".3~g", orient="bottom",
                                          gradientLength=220)),
        tooltip=[alt.Tooltip(f"{row}:N"), alt.Tooltip("col:N", title=col or ""), alt.Tooltip("text:N", title=metric),
                 alt.Tooltip("runs:Q", title="runs")])
    best = base.mark_rect(fill=None, stroke="#d62728", strokeWidth=3).transform_filter(alt.datum.best)
    text = base.mark_text(fontSize=11).encode(
        text="text:N", color=alt.condition(alt.datum.dark, alt.value("white"), alt.value("black")))
    return (rect + best + text).properties(height=alt.Step(44), width="container")


STATUS_COLORS = {"completed": "#2ca02c", "diverged": "#d62728", "running": "#1f77b4", "failed": "#8c564b",
                 "cancelled": "#7f7f7f", "timed_out": "#bcbd22", "interrupted": "#ff7f0e"}


def status_bars(counts: pd.DataFrame) -> alt.Chart:
    """Runs per status, one colour per status wherever it appears."""
    return alt.Chart(counts).mark_bar().encode(
        x=alt.X("n:Q", title="runs"), y=alt.Y("status:N", sort="-x", title=None),
        color=alt.Color("status:N", legend=None, scale=alt.Scale(domain=list(STATUS_COLORS),
                                                                 range=list(STATUS_COLORS.values()))),
        tooltip=["status", "n"]).properties(height=alt.Step(26))


def overlay(curves_df: pd.DataFrame, metric: str, percent: bool) -> alt.Chart:
    """The Runs page's curves: one line per run, coloured by run label."""
    y_fmt = ".1%" if percent else ".4g"
    return alt.Chart(curves_df).mark_line(point=True).encode(
        x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y(f"{metric}:Q", scale=alt.Scale(zero=False), axis=alt.Axis(format=y_fmt)),
        color=alt.Color("run:N", title="run"),
        tooltip=["run:N", "epoch:Q", alt.Tooltip(f"{metric}:Q", format=y_fmt)]).properties(height=320)


TASK_VIEW_SIZE = 340  # px: the longer side of a decision boundary, the side of a confusion matrix
# width x height is the plot's area; axes, title and legend come on top. (Streamlit's default, "fit", would squeeze
# the plot to make room for a legend below it: a square matrix drawn flat.)
PLOT_SIZE = alt.AutoSizeParams(type="pad")


def equal_axes(x_range: tuple[float, float], y_range: tuple[float, float], longest: int = TASK_VIEW_SIZE
               ) -> tuple[int, int]:
    """(width, height) in pixels that give both axes the same units per pixel: a circle in the data stays a
    circle on screen. Drawn at this size (st.altair_chart(width="content")), never stretched to a column."""
    dx, dy = x_range[1] - x_range[0], y_range[1] - y_range[0]
    if dx <= 0 or dy <= 0:
        return longest, longest
    scale = longest / max(dx, dy)
    return max(1, round(dx * scale)), max(1, round(dy * scale))


def boundary(grid: pd.DataFrame, points: pd.DataFrame, step_x1: float, step_x2: float) -> alt.Chart:
    """P(class 1) over the plane as a red-blue field, the split's points on top (x marks the misclassified), on
    equal axes."""
    x_range = (float(grid.x1.min()), float(grid.x1.max() + step_x1))
    y_range = (float(grid.x2.min()), float(grid.x2.max() + step_x2))
    width, height = equal_axes(x_range, y_range)
    field = alt.Chart(grid.assign(x1_end=grid.x1 + step_x1, x2_end=grid.x2 + step_x2)).mark_rect(opacity=0.8).encode(
        x=alt.X("x1:Q", title="x1", scale=alt.Scale(nice=False, domain=list(x_range))), x2="x1_end:Q",
        y=alt.Y("x2:Q", title="x2", scale=alt.Scale(nice=False, domain=list(y_range))), y2="x2_end:Q",
        color=alt.Color("p1:Q", title="P(class 1)", scale=alt.Scale(scheme="redblue", domain=[0, 1], reverse=True)),
        tooltip=[alt.Tooltip("p1:Q", format=".2f")])
    pts = alt.Chart(points.assign(label=points["label"].astype(str),
                                  result=points["correct"].map({True: "right", False: "wrong"}))).mark_point(
        filled=True, size=30, stroke="black", strokeWidth=0.4).encode(
        x="x1:Q", y="x2:Q",
        color=alt.Color("label:N", title="class", scale=alt.Scale(domain=["0", "1"], range=["#2166ac", "#b2182b"])),
        shape=alt.Shape("result:N", scale=alt.Scale(domain=["right", "wrong"], range=["circle", "cross"])),
        tooltip=["label:N", "predicted:Q", "result:N"])
    # Whole legend titles and labels ("class", not "clas").
    return (field + pts).properties(width=width, height=height, autosize=PLOT_SIZE).configure_legend(
        orient="bottom", direction="horizontal", titleLimit=0, labelLimit=0)


def confusion(frame: pd.DataFrame, title: str) -> alt.Chart:
    """A square matrix (rows: true class) with every class labelled; drawn at its own size, not a column's."""
    labels = list(dict.fromkeys(frame["true"]))
    axis = alt.Axis(labelOverlap=False, labelAngle=0)  # every class labelled, not 0/4/8
    base = alt.Chart(frame).encode(x=alt.X("predicted:N", sort=labels, axis=axis),
                                   y=alt.Y("true:N", sort=labels, axis=axis))
    rect = base.mark_rect().encode(color=alt.Color("share:Q", title="share of row",
                                                   scale=alt.Scale(scheme="greens", domain=[0, 1])),
                                   tooltip=["true:N", "predicted:N", "count:Q",
                                            alt.Tooltip("share:Q", format=".1%")])
    text = base.mark_text(fontSize=9).encode(text=alt.condition(alt.datum["count"] > 0, "count:Q", alt.value("")),
                                             color=alt.condition(alt.datum.share > 0.5, alt.value("white"),
                                                                 alt.value("black")))
    side = min(TASK_VIEW_SIZE, max(120, 30 * len(labels)))
    return (rect + text).properties(title=title, width=side, height=side, autosize=PLOT_SIZE).configure_legend(
        orient="bottom", direction="horizontal")


def regression(preds: pd.DataFrame, x_title: str) -> alt.Chart:
    base = alt.Chart(preds).encode(x=alt.X("x:Q", title=x_title))
    band = base.mark_area(opacity=0.25, color="#1f77b4").encode(y=alt.Y("lower:Q", title="target"), y2="upper:Q")
    mean = base.mark_line(color="#1f77b4").encode(y="mean:Q")
    truth = base.mark_point(size=14, filled=True).encode(
        y="truth:Q", color=alt.Color("inside:N", title="inside ±2 std",
                                     scale=alt.Scale(domain=[True, False], range=["#2ca02c", "#d62728"])),
        tooltip=[alt.Tooltip("x:Q", format=".3g"), alt.Tooltip("truth:Q", format=".4g"),
                 alt.Tooltip("mean:Q", format=".4g"), alt.Tooltip("std:Q", format=".4g")])
    return (band + mean + truth).properties(height=300).configure_legend(orient="bottom", direction="horizontal")


def calibration(table: pd.DataFrame) -> alt.Chart:
    diag = alt.Chart(pd.DataFrame({"a": [0.0, 1.0]})).mark_line(strokeDash=[4, 4], color="gray").encode(
        x=alt.X("a:Q", title="nominal coverage"), y=alt.Y("a:Q", title="observed coverage"))
    pts = alt.Chart(table).mark_line(point=True).encode(
        x=alt.X("nominal:Q", scale=alt.Scale(domain=[0, 1])), y=alt.Y("observed:Q", scale=alt.Scale(domain=[0, 1])),
        tooltip=[alt.Tooltip("nominal:Q", format=".0%"), alt.Tooltip("observed:Q", format=".1%"), "n:Q"])
    return (diag + pts).properties(height=220)
