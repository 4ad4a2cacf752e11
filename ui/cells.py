"""The Tables page's table from an engine.analysis result (no Streamlit): cell texts, the pivot, the footnote.

Every cell says what its spread is (``± std``, ``± s.e.``, ``[95% CI]``), its n and its diverged runs, and its
mark, so the table means the same thing in every download (ui/downloads.py) as on screen.
"""
from __future__ import annotations

import pandas as pd

from engine.analysis import Analysis, Cell, level_text

SPREADS = {"std": "std", "sem": "standard error", "ci": "95% CI"}
BASELINE_MARKS = {"baseline": "baseline", "better": "better", "worse": "worse", "no clear difference": "n.s.",
                  "identical": "identical", "too few seeds": "few seeds"}


def _num(x: float | None, scale: float, decimals: int, sign: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x * scale:{'+' if sign else ''}.{decimals}f}"


def cell_text(c: Cell, interval: str, percent: bool, decimals: int, with_baseline: bool) -> str:
    """'0.8610 ± 0.0110 std (n=3, 1 diverged) best | Δ +0.0300 [+0.0100, +0.0500] better'."""
    scale = 100.0 if percent else 1.0
    if c.mean is None:
        text = f"n/a (n=0{f', {c.n_diverged} diverged' if c.n_diverged else ''})"
    else:
        text = _num(c.mean, scale, decimals)
        if interval == "ci":
            text += (f" [{_num(c.ci_low, scale, decimals)}, {_num(c.ci_high, scale, decimals)}]"
                     if c.ci_low is not None else " [CI –]")
        else:
            spread = c.std if interval == "std" else c.sem
            text += f" ± {_num(spread, scale, decimals)} {'std' if interval == 'std' else 's.e.'}"
        text += f" (n={c.n}{f', {c.n_diverged} diverged' if c.n_diverged else ''})"
        if c.mark in ("best", "tie"):
            text += f" {c.mark}"
    if with_baseline and c.vs_baseline_mark:
        if c.vs_baseline_mark == "baseline":
            text += " | baseline"
        else:
            lo, hi = (_num(x, scale, decimals, True) for x in (c.vs_baseline_ci_low, c.vs_baseline_ci_high))
            text += (f" | Δ {_num(c.vs_baseline, scale, decimals, True)} [{lo}, {hi}] "
                     f"{BASELINE_MARKS[c.vs_baseline_mark]}")
    return text


def cells_frame(result: Analysis) -> pd.DataFrame:
    """One row per cell: the factor levels as text, then every number of the cell (the long table, the heatmap)."""
    df = result.frame()
    for f in result.by:
        df[f] = df[f].map(level_text)
    df["best"] = df["mark"] == "best"
    df["runs"] = df["n_runs"]
    df.insert(len(result.by), "interval", result.interval)
    return df


def analysis_table(result: Analysis, percent: bool, decimals: int) -> tuple[pd.DataFrame, list[tuple[str, str]],
                                                                           tuple[str, str] | None]:
    """The table as shown and downloaded: row levels down, column levels across (or one column 'value').
    Returns (table, positions of the tied cells, position of the best cell)."""
    row, col = result.by[0], (result.by[1] if len(result.by) > 1 else None)
    texts = {}
    best, ties = None, []
    rows, cols = [], []
    for c in result.cells:
        r = level_text(c.key[row])
        k = level_text(c.key[col]) if col else "value"
        rows.append(r)
        cols.append(k)
        texts[(r, k)] = cell_text(c, result.interval, percent, decimals, bool(result.baseline))
        if c.mark == "best":
            best = (r, k)
        elif c.mark == "tie":
            ties.append((r, k))
    rows, cols = list(dict.fromkeys(rows)), list(dict.fromkeys(cols))
    table = pd.DataFrame([[texts.get((r, k), "–") for k in cols] for r in rows], index=pd.Index(rows, name=row),
                         columns=pd.Index(cols, name=col))
    return table, ties, best


def footnote(result: Analysis, percent: bool = False) -> list[str]:
    """What the ± means, what the marks mean, the correction, and how diverged runs are treated."""
    what = f"{result.value}" + (" (%)" if percent else "")
    lines = [f"Each cell: mean of the {what} over its runs, {result.interval_meaning}; n = runs in the mean.",
             f"best: the best mean ({result.direction} is better) among cells with at least 3 usable runs; tie: not "
             f"distinguishable from the best (paired t-test by seed, else Welch; Holm-corrected p >= {result.alpha}).",
             "Diverged runs (or a non-finite final value) are excluded from the mean and counted as 'k diverged'; "
             "unfinished runs are left out."]
    if result.baseline:
        base = ", ".join(f"{f}={level_text(v)}" for f, v in result.baseline.items())
        lines.append(f"Δ: difference from the baseline ({base}) with its 95% CI; better/worse: significant after "
                     f"Holm correction (p < {result.alpha}) or an exact difference; n.s.: no clear difference; "
                     "few seeds: fewer than 3 usable runs, not tested.")
    if result.unfinished:
        lines.append("Left out, not finished: " + ", ".join(f"{k} {s}" for s, k in result.unfinished.items()) + ".")
    if result.varying:
        lines.append("Cells pool different configs: " + "; ".join(f"{f} takes {', '.join(v)}"
                                                                  for f, v in result.varying.items()) + ".")
    if result.average_over:
        lines.append(f"Averaged over {', '.join(result.average_over)} by choice.")
    if result.hold:
        lines.append("Held: " + ", ".join(f"{f}={level_text(v)}" for f, v in result.hold.items()) + ".")
    return lines
