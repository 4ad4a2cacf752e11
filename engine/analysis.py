"""One selection of the store -> analysis results: the numbers every view (CLI, Tables page, reports) shows.

    analyze(store, "ablation", by=["activation", "optimizer"], interval="ci", baseline={"optimizer": "sgd", ...})
    analyze_runs(runs, metric, by, ...)          the same over a runs table from engine.queries (list_runs rows)
    study_importance(store, "ablation")          factor_importance over the study's varying factors
    factor_views(runs, metric)                   per factor: its levels' cells, the others averaged over (Factors)
    run_points(runs, metric, factors)            one row per finished run: the levels, seed, value, diverged

Each run contributes the final value of the metric (the runs view's ``final_<metric>``). Only finished runs count
(completed or diverged); running, failed, cancelled, ... runs are left out and counted in ``unfinished``. A run
flagged diverged, or whose final value is not finite, is left out of the mean and counted (``n_diverged``).
The statistics are engine.stats's (SciPy / statsmodels); this module only chooses the runs and the groups.

No cell pools different configs silently: a config field other than the seed that varies inside a cell, and that
the caller neither held at a value (``hold``) nor chose to average over (``average_over``), is named in
``varying`` with its values.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from engine import queries
from engine.config import FIELD_KINDS, ConfigError, RunConfig
from engine.metrics import goal, headline_metric
from engine.stats import (EXCLUSION_RULE, BaselineReport, FactorImportance, Result, StatsError, best_vs_rest,
                          each_vs_baseline, factor_importance, summarize_groups)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AnalysisError", "INTERVALS", "FINISHED", "Cell", "Analysis", "analyze", "analyze_runs",
           "study_importance", "split_excluded", "config_factors", "pooled_factors", "level_text", "parse_assignments",
           "factor_views", "interaction", "run_points", "log_spaced", "finished_factors", "study_metric",
           "independent_factors", "importance_of_runs", "by_importance"]

INTERVALS = {"std": "mean ± sample standard deviation (ddof = 1) over the runs of the cell",
             "sem": "mean ± standard error of the mean",
             "ci": "95% confidence interval for the mean (t: scipy.stats.t.interval, n-1 degrees of freedom)"}
FINISHED = ("completed", "diverged")
FACTORS = tuple(f for f in FIELD_KINDS if f != "seed")
MARKS = {"best": "the best cell (highest/lowest mean among cells with at least 3 usable runs)",
         "tie": "not distinguishable from the best (Holm-corrected p >= alpha, or an identical result)",
         "worse": "worse than the best after Holm",
         "too few seeds": "fewer than 3 usable runs: not ranked"}
CORRECTION = "Holm (statsmodels.stats.multitest.multipletests, method='holm')"
DIVERGED_RULE = ("runs flagged diverged, or whose final value is not finite, are left out of the mean, spread and "
                 "tests and counted in n_diverged; unfinished runs (running, failed, ...) are left out and counted "
                 "in unfinished")


class AnalysisError(ValueError):
    """A bad request: unknown study, metric, factor or level, or a factor used twice. The message lists what is
    allowed."""


def level_text(value: Any) -> str:
    """The text form of a factor level, as the CLI takes it and the tables show it: 0.01, adam, 100,150 (a list),
    linear (an empty list), n/a (a field that does not apply)."""
    value = _plain_value(value)
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) if value else "linear"
    return str(value)


def _texts(column: "pd.Series") -> "pd.Series":
    """``level_text`` of every value, computed once per distinct value (10,000 runs share a handful of levels)."""
    import pandas as pd
    try:
        codes, uniques = pd.factorize(column, use_na_sentinel=True)
    except TypeError:  # unhashable values (list columns as arrays): one call per run
        return column.map(level_text)
    texts = np.array([level_text(u) for u in uniques] + ["n/a"], dtype=object)
    return pd.Series(texts[codes], index=column.index, dtype=object)


def _plain_value(value: Any) -> Any:
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_plain_value(v) for v in value)
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def parse_assignments(text: str | None, what: str) -> dict[str, str]:
    """'lr=0.01,optimizer=adam,hidden=100,150' -> {'lr': '0.01', 'optimizer': 'adam', 'hidden': '100,150'}: a comma
    starts a new pair only when a name= follows, so list levels keep their commas."""
    if not text:
        return {}
    out: dict[str, str] = {}
    for part in re.split(r",(?=\s*[A-Za-z_]\w*\s*=)", text):
        name, eq, value = part.partition("=")
        if not eq or not name.strip():
            raise AnalysisError(f"{what}: expected FIELD=VALUE[,FIELD=VALUE...], got {part!r} in {text!r}")
        out[name.strip()] = value.strip()
    return out


def config_factors(runs: "pd.DataFrame") -> list[str]:
    """Config fields other than the seed that take more than one value among these runs, in RunConfig order."""
    return [f for f in FACTORS if f in runs and _texts(runs[f]).nunique() > 1]


@dataclass(frozen=True)
class Cell(Result):
    """One cell: its factor levels, run counts, the final value's mean and spread, its rank and (with a baseline)
    its difference from the baseline cell."""
    key: dict[str, Any]
    label: str
    n: int                          # runs in the mean
    n_runs: int                     # finished runs in the cell
    n_diverged: int                 # diverged or non-finite final value: counted, not in the mean
    mean: float | None
    std: float | None
    sem: float | None
    ci_low: float | None
    ci_high: float | None
    interval_low: float | None      # the chosen interval (std, sem or ci) around the mean
    interval_high: float | None
    mark: str                       # best, tie, worse, too few seeds
    p_holm_vs_best: float | None
    vs_baseline: float | None       # difference: this cell minus the baseline
    vs_baseline_ci_low: float | None
    vs_baseline_ci_high: float | None
    vs_baseline_p: float | None
    vs_baseline_p_holm: float | None
    vs_baseline_mark: str | None    # baseline, better, worse, no clear difference, identical, too few seeds
    vs_baseline_method: str | None
    reason: str | None


@dataclass(frozen=True)
class Analysis(Result):
    study: str | None
    metric: str
    direction: str                  # higher or lower is better
    value: str                      # what each run contributes
    by: tuple[str, ...]
    hold: dict[str, Any]
    average_over: tuple[str, ...]
    baseline: dict[str, Any] | None
    interval: str                   # std, sem or ci
    interval_meaning: str
    confidence: float
    alpha: float
    n_runs: int                     # finished runs analysed (after hold)
    unfinished: dict[str, int]      # status -> runs left out because they have not finished
    cells: tuple[Cell, ...]
    best: str | None
    ties: tuple[str, ...]
    varying: dict[str, list[str]]   # factor -> levels, for factors that vary inside a cell unasked
    correction: str
    marks: dict[str, str]
    rule: str
    reason: str | None
    excluded_runs: dict[str, str] = field(default_factory=dict)  # run_id -> reason: excluded from analysis by a
                                                                  # person (engine runs exclude), left out

    def frame(self) -> "pd.DataFrame":
        """The cell table: one row per cell, the factor columns first."""
        import pandas as pd
        rows = []
        for c in self.cells:
            d = c.to_dict()
            key = d.pop("key")
            rows.append({**{f: key[f] for f in self.by}, **d})
        return pd.DataFrame(rows)


def pooled_factors(runs: "pd.DataFrame", by: Sequence[str], exclude: Sequence[str] = (),
                   average_over: Sequence[str] = ()) -> dict[str, list[str]]:
    """Config fields (not the seed, not in ``by``, ``exclude`` or ``average_over``) that take more than one value
    inside some cell of ``by``: factor -> its levels as text, in sorted order. Pass finished runs (what the cells
    hold). A field that follows a factor averaged over is averaged with it; a field that applies only to some levels
    of another pooled field (momentum is n/a for adam) follows that field and is not named twice."""
    if runs.empty:
        return {}
    keys = [_texts(runs[b]).rename(f"_by{i}") for i, b in enumerate(by)]
    texts = {f: _texts(runs[f]) for f in FACTORS if f in runs}

    def follows(f: str, g: str) -> bool:
        return bool((texts[f].groupby(keys + [texts[g]]).nunique() <= 1).all())

    out: dict[str, list[str]] = {}
    for f, t in texts.items():
        if f in by or f in exclude or f in average_over:
            continue
        if (t.groupby(keys).nunique() > 1).any() and not any(follows(f, g) for g in average_over if g in texts):
            out[f] = sorted(set(t), key=_level_order(runs[f]))
    for f in [f for f, levels in out.items() if "n/a" in levels]:
        if any(g != f and "n/a" not in out[g] and follows(f, g) for g in out):
            del out[f]
    return out


def _level_order(column: "pd.Series"):
    """Sort key for level texts: numbers by value, the rest by text."""
    values = {level_text(v): _plain_value(v) for v in column}

    def key(text: str):
        v = values.get(text)
        return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, text)
    return key


def _check_factor(name: str, runs: "pd.DataFrame", what: str) -> str:
    allowed = [f for f in FACTORS if f in runs]
    if name not in allowed:
        raise AnalysisError(f"unknown {what} {name!r}; config fields: {', '.join(allowed)}"
                            + (" (the seed is what cells average over)" if name == "seed" else ""))
    return name


def _resolve_level(runs: "pd.DataFrame", factor: str, wanted: Any, what: str) -> Any:
    """The level of ``factor`` among the runs equal to ``wanted`` (a value, or its text form)."""
    # A plain loop, not Series.map: map would turn None (a field that does not apply) back into NaN in a float column.
    levels = list(dict.fromkeys(_plain_value(v) for v in runs[factor]))
    plain = _plain_value(wanted)
    for lv in levels:
        if lv == plain and isinstance(lv, bool) == isinstance(plain, bool):
            return lv
    text = str(wanted).strip()
    for lv in levels:
        if text in (level_text(lv), str(lv), json.dumps(lv) if not isinstance(lv, tuple) else json.dumps(list(lv))):
            return lv
    raise AnalysisError(f"{what}: {factor}={text} matches no run; {factor} takes "
                        f"{', '.join(sorted(level_text(v) for v in levels))}")


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _cell(s, by: Sequence[str], interval: str, r, v) -> Cell:
    """One Cell from engine.stats's GroupSummary ``s``, its RankedGroup ``r`` and its VsBaseline ``v`` (or None)."""
    comp = v.comparison if v is not None else None
    lo = hi = None
    if interval == "ci":
        lo, hi = s.ci_low, s.ci_high
    elif s.mean is not None:
        spread = s.std if interval == "std" else s.sem
        if spread is not None:
            lo, hi = _finite(s.mean - spread), _finite(s.mean + spread)
    return Cell(
        key={f: s.key[f] for f in by}, label=s.label, n=s.n, n_runs=s.n_runs,
        n_diverged=s.excluded["diverged"] + s.excluded["non_finite"], mean=s.mean, std=s.std, sem=s.sem,
        ci_low=s.ci_low, ci_high=s.ci_high, interval_low=lo, interval_high=hi,
        mark=r.status if r is not None else "too few seeds", p_holm_vs_best=r.p_holm if r is not None else None,
        vs_baseline=comp.difference if comp else (0.0 if v is not None and s.mean is not None else None),
        vs_baseline_ci_low=comp.ci_low if comp else None, vs_baseline_ci_high=comp.ci_high if comp else None,
        vs_baseline_p=comp.p_value if comp else None, vs_baseline_p_holm=v.p_holm if v is not None else None,
        vs_baseline_mark=v.mark if v is not None else None, vs_baseline_method=comp.method if comp else None,
        reason=s.reason)


def _select(runs: "pd.DataFrame", metric: str, hold: dict[str, Any]):
    """(the finished runs at the held levels, the held levels resolved, status -> count of unfinished runs)."""
    # Runs of a task that never logs this metric are not part of the question (mnist runs beside a regression
    # study's val_mse); a run of the right task without a value (it diverged before its first epoch) is.
    logged = runs["final_" + metric].notna()
    if "task" in runs:
        runs = runs[runs["task"].isin(set(runs.loc[logged, "task"]))]
    status = runs["status"].astype(str)
    finished = runs[status.isin(FINISHED)]
    unfinished = {s: int(k) for s, k in status[~status.isin(FINISHED)].value_counts().sort_index().items()}
    held = {f: _resolve_level(finished if len(finished) else runs, f, v, "hold") for f, v in hold.items()}
    for f, lv in held.items():
        finished = finished[finished[f].map(_plain_value).map(lambda x, lv=lv: x == lv)]
    return finished, held, unfinished


def _values(finished: "pd.DataFrame", metric: str, by: Sequence[str]) -> "pd.DataFrame":
    """What engine.stats takes: the ``by`` columns, seed, the final value, and the diverged flag (status diverged
    or a non-finite final value)."""
    import pandas as pd
    value = pd.to_numeric(finished["final_" + metric], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    table = pd.DataFrame({f: finished[f].map(_plain_value).to_numpy() for f in by})
    table["seed"] = finished["seed"].to_numpy() if "seed" in finished else None
    table["value"] = value
    table["diverged"] = (finished["status"] == "diverged").to_numpy() | ~np.isfinite(value)
    return table


def analyze_runs(runs: "pd.DataFrame", metric: str, by: Sequence[str], *, hold: dict[str, Any] | None = None,
                 average_over: Sequence[str] = (), baseline: dict[str, Any] | None = None, interval: str = "ci",
                 direction: str | None = None, alpha: float = 0.05, study: str | None = None,
                 include_excluded: bool = False) -> Analysis:
    """Analyse a runs table with list_runs's columns (config fields, status, final_<metric>). Runs a person
    excluded from analysis (the ``excluded`` column) are left out and listed in ``excluded_runs`` with their
    reasons, unless ``include_excluded``."""
    if interval not in INTERVALS:
        raise AnalysisError(f"interval must be one of {', '.join(INTERVALS)}, got {interval!r}")
    metrics = sorted(c[6:] for c in runs.columns if c.startswith("final_") and runs[c].notna().any())
    runs, excluded_runs = split_excluded(runs, include_excluded)
    if metric not in metrics:
        raise AnalysisError(f"unknown metric {metric!r}; metrics these runs logged: "
                            f"{', '.join(metrics) if metrics else '(none)'}")
    direction = direction or ("higher" if goal(metric) == "max" else "lower")
    by = [by] if isinstance(by, str) else list(by)
    if not by:
        raise AnalysisError("by names no factor: give the config field(s) for the rows (and columns)")
    hold = dict(hold or {})
    average_over = list(average_over)
    used = by + list(hold) + average_over
    for name in used:
        _check_factor(name, runs, "factor")
    twice = sorted({f for f in used if used.count(f) > 1})
    if twice:
        raise AnalysisError(f"factor(s) {', '.join(twice)} used twice: each goes in one of by, hold, average_over")

    finished, held, unfinished = _select(runs, metric, hold)
    table = _values(finished, metric, by)
    varying = pooled_factors(finished, by, exclude=list(hold), average_over=average_over)

    base = None
    if baseline:
        missing = [f for f in by if f not in baseline]
        extra = [f for f in baseline if f not in by]
        if missing or extra:
            raise AnalysisError(f"baseline must give a level for each of {', '.join(by)} (the cells' factors)"
                                + (f"; missing {', '.join(missing)}" if missing else "")
                                + (f"; not a cell factor: {', '.join(extra)}" if extra else ""))
        base = {f: _resolve_level(finished, f, baseline[f], "baseline") for f in by}

    if table.empty:
        return Analysis(study, metric, direction, f"final {metric}", tuple(by), held, tuple(average_over), base,
                        interval, INTERVALS[interval], 0.95, alpha, 0, unfinished, (), None, (), varying,
                        CORRECTION, MARKS, DIVERGED_RULE + "; " + EXCLUSION_RULE, "no finished run in the selection",
                        excluded_runs)

    summaries = summarize_groups(table, by, "value", diverged_column="diverged")
    ranked = best_vs_rest(table, by, "value", direction=direction, diverged_column="diverged", alpha=alpha)
    rank = {r.summary.label: r for r in ranked.groups}
    vs: dict[str, Any] = {}
    if base is not None:
        wanted = base[by[0]] if len(by) == 1 else tuple(base[f] for f in by)
        report: BaselineReport = each_vs_baseline(table, by, "value", wanted, direction=direction,
                                                  diverged_column="diverged", alpha=alpha)
        vs = {r.summary.label: r for r in report.rows}

    cells = [_cell(s, by, interval, rank.get(s.label), vs.get(s.label)) for s in summaries]
    return Analysis(study, metric, direction, f"final {metric}", tuple(by), held, tuple(average_over), base,
                    interval, INTERVALS[interval], summaries[0].confidence, alpha, len(table), unfinished,
                    tuple(cells), ranked.best, ranked.ties, varying, CORRECTION, MARKS,
                    DIVERGED_RULE + "; " + EXCLUSION_RULE, ranked.reason, excluded_runs)


def split_excluded(runs: "pd.DataFrame", include_excluded: bool = False) -> tuple["pd.DataFrame", dict[str, str]]:
    """(the runs analysis uses, run_id -> reason of the runs a person excluded from analysis). Every statistic
    goes through here, so an exclusion reaches them all; ``include_excluded`` keeps them (and lists none)."""
    if include_excluded or "excluded" not in runs:
        return runs, {}
    mask = runs["excluded"].fillna(False).astype(bool)
    reasons = runs.loc[mask, "excluded_reason"] if "excluded_reason" in runs else [""] * int(mask.sum())
    return runs[~mask], dict(zip(runs.loc[mask, "run_id"], reasons))


def study_metric(runs: "pd.DataFrame", study: str) -> str:
    """The headline metric of a study's runs (one task): what a study is judged by when no metric is named."""
    tasks = sorted(set(runs["task"].dropna()))
    if len(tasks) != 1:
        raise AnalysisError(f"study {study!r} mixes tasks ({', '.join(tasks) or 'none'}): name the metric")
    try:
        config = RunConfig.from_dict(json.loads(runs["config_json"].iloc[0]))
    except (ConfigError, TypeError, ValueError, KeyError):
        config = RunConfig(task=tasks[0])
    return headline_metric(config)[0]


def analyze(store, study: str, metric: str | None = None, by: Sequence[str] | None = None, *,
            hold: dict[str, Any] | None = None, average_over: Sequence[str] = (),
            baseline: dict[str, Any] | None = None, interval: str = "ci", alpha: float = 0.05,
            include_excluded: bool = False) -> Analysis:
    """Analyse a study's runs: ``metric`` defaults to the study's headline metric, ``by`` to its first two varying
    factors (the others, if any, show up in ``varying``)."""
    runs = queries.study_runs(store, study)
    if runs.empty:
        raise AnalysisError(f"study {study!r} has no run in the store yet")
    metric = metric or study_metric(runs, study)
    if by is None:
        kept = split_excluded(runs, include_excluded)[0]
        by = [f for f in config_factors(kept) if f not in (hold or {}) and f not in average_over][:2] or ["task"]
    return analyze_runs(runs, metric, by, hold=hold, average_over=average_over, baseline=baseline,
                        interval=interval, alpha=alpha, study=study, include_excluded=include_excluded)


def study_importance(store, study: str, metric: str | None = None) -> FactorImportance:
    """Factorial ANOVA of a study's final metric over its varying config fields (finished runs only)."""
    runs = queries.study_runs(store, study)
    if runs.empty:
        raise AnalysisError(f"study {study!r} has no run in the store yet")
    metric = metric or study_metric(runs, study)
    return importance_of_runs(runs, metric, f"study {study!r}")


def importance_of_runs(runs: "pd.DataFrame", metric: str, what: str = "these runs") -> FactorImportance:
    """Factorial ANOVA of the final metric over the config fields that vary among the finished runs (of the tasks
    that log the metric): the Factors page's selection, or a study's runs."""
    if "final_" + metric not in runs:
        raise AnalysisError(f"unknown metric {metric!r} for {what}")
    runs, _, _ = _select(split_excluded(runs)[0], metric, {})
    every = config_factors(runs)
    # A field whose level another fixes (momentum n/a for adam; an lr paired with each optimizer) would make the
    # design confounded and nothing computable: it is left out of the model and named in `dropped`.
    factors = independent_factors(runs, every)
    follows = [{"term": f, "reason": "its level is fixed by " + ", ".join(factors) + ": confounded, dropped"}
               for f in every if f not in factors]
    if not factors:
        raise AnalysisError(f"{what}: no config field varies among the finished runs")
    table = _values(runs, metric, factors).rename(columns={"value": metric})
    try:
        result = factor_importance(table, factors, metric, diverged_column="diverged")
        if result.reason and "confounded" in result.reason:
            # An odd cell out (the linear model: hidden=[] only with activation=identity) makes every level of one
            # factor stand for a level of another. The complete factorial inside the study still answers the
            # question for the rest: fit that, and say which levels were left out.
            kept, left_out = complete_design(table, factors)
            if left_out and len(kept) >= 2:
                inner = factor_importance(kept, factors, metric, diverged_column="diverged")
                if not inner.reason:
                    follows += [{"term": f"{f}={lv}", "reason": f"{n} run(s) left out: with this level the design "
                                 "is not a complete factorial (its levels of the other factors are confounded)"}
                                for f, lv, n in left_out]
                    result = inner
    except StatsError as e:
        raise AnalysisError(str(e)) from None
    return dataclasses.replace(result, dropped=tuple(follows) + result.dropped) if follows else result


def complete_design(table: "pd.DataFrame", factors: Sequence[str]) -> tuple["pd.DataFrame", list[tuple[str, str, int]]]:
    """The rows of the largest complete factorial found by dropping, one at a time, the level that appears with the
    smallest share of the other factors' level combinations; and (factor, level text, runs) of each level dropped."""
    import pandas as pd
    texts = pd.DataFrame({f: _texts(table[f]) for f in factors}, index=table.index)
    keep = pd.Series(True, index=table.index)
    left_out: list[tuple[str, str, int]] = []
    while keep.any():
        present = texts[keep].drop_duplicates()
        sizes = {f: present[f].nunique() for f in factors}
        worst = None
        for f in factors:
            others = int(np.prod([sizes[g] for g in factors if g != f]))
            for lv, n_cells in present[f].value_counts().items():
                cover = n_cells / others
                if cover < 1 and (worst is None or cover < worst[0]):
                    worst = (cover, f, lv)
        if worst is None:
            break
        _, f, lv = worst
        hit = keep & (texts[f] == lv)
        left_out.append((f, lv, int(hit.sum())))
        keep &= ~hit
    return table[keep], left_out


# --- the Factors page and the report: each factor on its own, two factors together ----------------------------------

LOG_FIELDS = ("lr", "min_lr", "weight_decay")


def log_spaced(runs: "pd.DataFrame", factor: str) -> bool:
    """Whether a factor's levels read best on a log axis: a learning rate or weight decay, or any numeric factor with
    three or more positive levels spanning a factor of 20 or more (0.001, 0.01, 0.1)."""
    levels = [v for v in dict.fromkeys(_plain_value(x) for x in runs[factor]) if v is not None]  # not .map: NaN
    if not levels or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels):
        return False  # lists, texts, flags: categories
    if min(levels) <= 0:
        return False
    values = levels
    return factor in LOG_FIELDS or (len(values) >= 3 and max(values) / min(values) >= 20)


def finished_factors(runs: "pd.DataFrame", metric: str) -> list[str]:
    """The config fields that vary among the finished runs that are part of the metric's question."""
    finished, _, _ = _select(split_excluded(runs)[0], metric, {})
    return config_factors(finished)


def independent_factors(runs: "pd.DataFrame", factors: Sequence[str]) -> list[str]:
    """``factors`` without those whose level the earlier ones fix (momentum is n/a for adam and 0 for sgd; a study
    that pairs each optimizer with its own lr): cells of the kept factors are then the configurations themselves,
    with no label repeating what another already says."""
    kept: list[str] = []
    for f in factors:
        texts = _texts(runs[f])
        if kept and bool((texts.groupby([_texts(runs[k]) for k in kept]).nunique() <= 1).all()):
            continue
        kept.append(f)
    return kept


def run_points(runs: "pd.DataFrame", metric: str, factors: Sequence[str]) -> "pd.DataFrame":
    """One row per finished run: each factor's level text, ``<factor>__value`` (the level as a number for numeric
    factors, else None), seed, value (the final metric), diverged (flagged, or a non-finite final value)."""
    finished, _, _ = _select(split_excluded(runs)[0], metric, {})
    table = _values(finished, metric, [])
    for f in factors:
        plain = finished[f].map(_plain_value)
        table[f] = _texts(finished[f]).to_numpy()
        numeric = plain.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
        table[f + "__value"] = plain.where(numeric, None).to_numpy() if numeric.all() else None
    table["run_id"] = finished["run_id"].to_numpy() if "run_id" in finished else None
    return table


def factor_views(runs: "pd.DataFrame", metric: str, direction: str | None = None, alpha: float = 0.05,
                 only: Sequence[str] | None = None) -> dict[str, Analysis]:
    """Per varying factor (or those of ``only``): the analysis by that factor alone, averaging knowingly over every
    other factor (the Factors page's slice plots; the numbers equal ``analyze_runs(runs, metric, [f],
    average_over=others)``)."""
    factors = finished_factors(runs, metric)
    return {f: analyze_runs(runs, metric, [f], average_over=[g for g in factors if g != f], direction=direction,
                            alpha=alpha) for f in factors if only is None or f in only}


def interaction(runs: "pd.DataFrame", metric: str, first: str, second: str, direction: str | None = None,
                alpha: float = 0.05) -> Analysis:
    """The cells of two factors, averaging knowingly over every other factor: the interaction plot (mean and CI of
    each pair of levels) and the divergence map (each cell's n_diverged of n_runs)."""
    others = [g for g in finished_factors(runs, metric) if g not in (first, second)]
    return analyze_runs(runs, metric, [first, second], average_over=others, direction=direction, alpha=alpha)


def by_importance(factors: Sequence[str], importance: FactorImportance | None) -> list[str]:
    """The factors, the largest variance share first (ties and factors outside the model keep their order): which
    two an interaction plot shows first."""
    share = {t.term: t.share for t in importance.terms} if importance is not None else {}
    return sorted(factors, key=lambda f: -share.get(f, 0.0))
