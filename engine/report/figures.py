"""Altair figures of a study's analysis: the Factors page draws them and the report exports them (SVG, PNG, PDF).

They live in the engine, not in ui/, because the report (engine/report/) must draw exactly the charts the page
shows and the engine may not import ui/ (tests/test_layers.py). Data arrives as engine.analysis results; the
functions here only shape those into plot rows and encode them. Static export goes through vl-convert-python
(Vega-Lite rendered without a browser).

    slice_chart(points, result, factor, metric, log_x)         levels on x, every run a dot, mean and 95% CI
    interaction_chart(result, first, second, metric, log_x)   mean and CI per level of the first, a line per second
    divergence_chart(result, first, second)                    share of diverged runs per pair of levels
    importance_chart(importance)                               variance share per term, seed noise last
    reference_chart(frame, metric)                             the reference study's value beside the measured one
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import altair as alt
import pandas as pd

from engine.analysis import Analysis, level_text

if TYPE_CHECKING:
    from engine.stats import FactorImportance

alt.data_transformers.disable_max_rows()

MEAN_COLOUR = "#d62728"
RUN_COLOUR = "#4c78a8"
DIVERGED_RULE_SHORT = "diverged runs are left out of the means and counted (n diverged)"


def cell_rows(result: Analysis) -> pd.DataFrame:
    """One plot row per cell: each factor's level text and (numeric factors) value, mean, CI, n, diverged share."""
    rows = []
    for c in result.cells:
        row = {}
        for f in result.by:
            v = c.key[f]
            row[f] = level_text(v)
            row[f + "__value"] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
        # No interval (fewer than 3 usable runs) stays None: no bar is drawn rather than a zero-width one.
        row.update(mean=c.mean, ci_low=c.ci_low, ci_high=c.ci_high, n=c.n, n_runs=c.n_runs,
                   n_diverged=c.n_diverged, diverged_share=c.n_diverged / c.n_runs if c.n_runs else 0.0,
                   mark=c.mark)
        rows.append(row)
    return pd.DataFrame(rows)


def _x(factor: str, frame: pd.DataFrame, log_x: bool, order: list[str]) -> alt.X:
    if log_x:
        return alt.X(f"{factor}__value:Q", title=f"{factor} (log scale)", scale=alt.Scale(type="log"),
                     axis=alt.Axis(format="~g"))
    return alt.X(f"{factor}:N", title=factor, sort=order, axis=alt.Axis(labelAngle=0))



def slice_chart(points: pd.DataFrame, result: Analysis, factor: str, metric: str, log_x: bool) -> alt.LayerChart:
    """Every finished, non-diverged run as a dot; each level's mean with its 95% CI as a red point and bar."""
    cells = cell_rows(result)
    order = list(cells[factor]) if len(cells) else []
    usable = points[~points["diverged"]] if len(points) else points
    x = _x(factor, cells, log_x, order)
    dots = alt.Chart(usable).mark_circle(size=36, opacity=0.55, color=RUN_COLOUR).encode(
        x=x, y=alt.Y("value:Q", title=f"final {metric}", scale=alt.Scale(zero=False)),
        tooltip=[alt.Tooltip(f"{factor}:N"), alt.Tooltip("seed:N"), alt.Tooltip("value:Q", format=".4~g")])
    tip = [alt.Tooltip(f"{factor}:N"), alt.Tooltip("mean:Q", format=".4~g"),
           alt.Tooltip("ci_low:Q", title="95% CI low", format=".4~g"),
           alt.Tooltip("ci_high:Q", title="95% CI high", format=".4~g"), alt.Tooltip("n:Q", title="n in mean"),
           alt.Tooltip("n_diverged:Q", title="diverged")]
    bars = alt.Chart(cells).mark_errorbar(color=MEAN_COLOUR, thickness=2).encode(
        x=x, y=alt.Y("ci_low:Q", title=f"final {metric}"), y2="ci_high:Q", tooltip=tip)
    means = alt.Chart(cells).mark_point(color=MEAN_COLOUR, filled=True, size=70, shape="diamond").encode(
        x=x, y="mean:Q", tooltip=tip)
    return (dots + bars + means).properties(title=f"{metric} by {factor}", width=260, height=220)


def interaction_chart(result: Analysis, first: str, second: str, metric: str, log_x: bool) -> alt.LayerChart:
    """Mean (with 95% CI) of each level of ``first``, one coloured line per level of ``second``: parallel lines
    mean no interaction."""
    cells = cell_rows(result).dropna(subset=["mean"])
    order = list(dict.fromkeys(cell_rows(result)[first])) if result.cells else []
    x = _x(first, cells, log_x, order)
    colour = alt.Color(f"{second}:N", title=second, sort=list(dict.fromkeys(cells[second])) if len(cells) else None)
    tip = [alt.Tooltip(f"{first}:N"), alt.Tooltip(f"{second}:N"), alt.Tooltip("mean:Q", format=".4~g"),
           alt.Tooltip("ci_low:Q", title="95% CI low", format=".4~g"),
           alt.Tooltip("ci_high:Q", title="95% CI high", format=".4~g"), alt.Tooltip("n:Q", title="n in mean"),
           alt.Tooltip("n_diverged:Q", title="diverged")]
    base = alt.Chart(cells).encode(x=x, color=colour)
    y_title = f"final {metric} (mean, 95% CI)"  # on both layers, or Vega-Lite joins the two titles
    lines = base.mark_line(point=True).encode(y=alt.Y("mean:Q", title=y_title, scale=alt.Scale(zero=False)),
                                              tooltip=tip)
    bars = base.mark_errorbar(thickness=1.5).encode(y=alt.Y("ci_low:Q", title=y_title), y2="ci_high:Q", tooltip=tip)
    return (lines + bars).properties(title=f"{metric}: {first} × {second}", width=360, height=260)


def divergence_chart(result: Analysis, first: str, second: str | None) -> alt.LayerChart:
    """Share of the finished runs that diverged, per pair of levels, written in each cell (k/n)."""
    cells = cell_rows(result)
    cells["label"] = [f"{s:.0%} ({k}/{n})" for s, k, n in zip(cells["diverged_share"], cells["n_diverged"],
                                                               cells["n_runs"])]
    cells["dark"] = cells["diverged_share"] > 0.5
    col = second or first
    base = alt.Chart(cells).encode(
        x=alt.X(f"{col}:N", title=col, sort=list(dict.fromkeys(cells[col])) if len(cells) else None,
                axis=alt.Axis(labelAngle=0)),
        y=alt.Y(f"{first}:N", title=first, sort=list(dict.fromkeys(cells[first])) if len(cells) else None))
    rect = base.mark_rect().encode(
        color=alt.Color("diverged_share:Q", title="diverged", scale=alt.Scale(scheme="reds", domain=[0, 1]),
                        legend=alt.Legend(format=".0%")),
        tooltip=[alt.Tooltip(f"{first}:N"), alt.Tooltip(f"{col}:N"), alt.Tooltip("n_diverged:Q", title="diverged"),
                 alt.Tooltip("n_runs:Q", title="finished runs"),
                 alt.Tooltip("diverged_share:Q", title="share", format=".0%")])
    text = base.mark_text(fontSize=11).encode(
        text="label:N", color=alt.condition(alt.datum.dark, alt.value("white"), alt.value("black")))
    return (rect + text).properties(title=f"diverged runs by {first}" + (f" × {second}" if second else ""),
                                    width=alt.Step(70), height=alt.Step(32))


def importance_rows(importance: "FactorImportance") -> pd.DataFrame:
    """One bar per term: factor, interaction, or seed noise (the residual), with its share and partial eta²."""
    rows = [{"term": "seed noise (residual)" if t.term == "residual" else t.term, "share": t.share,
             "eta_sq": t.eta_sq, "partial_eta_sq": t.partial_eta_sq, "p_value": t.p_value,
             "kind": "seed noise" if t.term == "residual" else ("interaction" if len(t.factors) > 1 else "factor")}
            for t in importance.terms]
    return pd.DataFrame(rows, columns=["term", "share", "eta_sq", "partial_eta_sq", "p_value", "kind"])


def importance_chart(importance: "FactorImportance") -> alt.Chart:
    """Share of the metric's variance per factor and two-factor interaction, seed noise last."""
    rows = importance_rows(importance)
    return alt.Chart(rows).mark_bar().encode(
        x=alt.X("share:Q", title="share of variance (eta²)", axis=alt.Axis(format=".0%"),
                scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("term:N", title=None, sort=list(rows["term"]), axis=alt.Axis(labelLimit=260)),
        color=alt.Color("kind:N", title=None, scale=alt.Scale(domain=["factor", "interaction", "seed noise"],
                                                              range=["#4c78a8", "#f58518", "#9d9d9d"])),
        tooltip=[alt.Tooltip("term:N"), alt.Tooltip("share:Q", format=".1%"),
                 alt.Tooltip("partial_eta_sq:Q", title="partial eta²", format=".3f"),
                 alt.Tooltip("p_value:Q", title="p", format=".3g")],
    ).properties(title=f"what explains {importance.metric}", width=320, height=alt.Step(24))


def reference_chart(frame: pd.DataFrame, metric: str) -> alt.LayerChart:
    """Per reference setting: the reference study's single value (a black diamond) beside the value measured here
    (mean of the seeds with its 95% CI, red). ``frame``: setting, reference, mean, ci_low, ci_high, n."""
    data = frame
    y = alt.Y("setting:N", title=None, sort=list(data["setting"]), axis=alt.Axis(labelLimit=320))
    ref = alt.Chart(data).mark_point(shape="diamond", filled=True, size=90, color="black").encode(
        x=alt.X("reference:Q", title=metric, scale=alt.Scale(zero=False)), y=y,
        tooltip=[alt.Tooltip("setting:N"), alt.Tooltip("reference:Q", format=".4~g")])
    bars = alt.Chart(data).mark_errorbar(color=MEAN_COLOUR, thickness=1.5).encode(
        x=alt.X("ci_low:Q", title=metric), x2="ci_high:Q", y=y)
    measured = alt.Chart(data).mark_circle(color=MEAN_COLOUR, size=60).encode(
        x="mean:Q", y=y, tooltip=[alt.Tooltip("setting:N"), alt.Tooltip("mean:Q", format=".4~g"),
                                  alt.Tooltip("n:Q", title="n in mean")])
    return (ref + bars + measured).properties(title="reference (black) vs measured here (red, 95% CI)", width=320,
                                              height=alt.Step(26))


# --- static export (vl-convert-python: Vega-Lite to SVG / PNG / PDF without a browser) -------------------------------

def to_svg(chart: alt.TopLevelMixin) -> str:
    import vl_convert as vlc
    return vlc.vegalite_to_svg(chart.to_json())


def to_png(chart: alt.TopLevelMixin, scale: float = 2.0) -> bytes:
    import vl_convert as vlc
    return vlc.vegalite_to_png(chart.to_json(), scale=scale)


def to_pdf(chart: alt.TopLevelMixin) -> bytes:
    import vl_convert as vlc
    return vlc.vegalite_to_pdf(chart.to_json())
