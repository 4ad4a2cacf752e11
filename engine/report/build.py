"""A study's findings, from the store: its question, the winner with its margin over the runner-up, which factors
matter, and the figures. Every number comes from engine.analysis (the numbers the Tables and Factors pages and
``engine analyze`` show); this module only picks which of them a report states.

    build_report(store, studies=None, metric=None) -> Report       every study in the store, or the named ones
"""
from __future__ import annotations

import csv
import datetime
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from engine import analysis, queries
from engine.analysis import Analysis, AnalysisError, Cell, level_text
from engine.report import figures

if TYPE_CHECKING:
    import altair as alt
    import pandas as pd
    from engine.stats import FactorImportance

REPO = Path(__file__).resolve().parents[2]
STUDIES_DIR = REPO / "studies"
REFERENCE_CSV = STUDIES_DIR / "reference" / "reference-results.csv"
IMPORTANCE_METHOD = "type II factorial ANOVA (statsmodels), eta-squared"
INTERVAL = "95% confidence interval for the mean (t, n-1 degrees of freedom; scipy.stats.t.interval)"
MARGIN_METHOD = ("winner minus runner-up: paired t-test by seed when both cells hold the same seeds, Welch "
                 "otherwise; 95% CI of the difference; p Holm-corrected over the comparisons with the winner")


@dataclass
class Figure:
    name: str            # file stem, unique in the report: "<study>-effect"
    title: str
    caption: str
    chart: "alt.TopLevelMixin"

    def svg(self) -> str:
        return figures.to_svg(self.chart)

    def png(self) -> bytes:
        return figures.to_png(self.chart)

    def pdf(self) -> bytes:
        return figures.to_pdf(self.chart)


@dataclass
class Winner:
    """The best cell and how far ahead of the runner-up it is (None where it cannot be said: see ``note``)."""
    cell: Cell
    runner_up: Cell | None
    margin: float | None          # winner mean - runner-up mean
    margin_low: float | None      # 95% CI of that difference
    margin_high: float | None
    p_holm: float | None
    verdict: str                  # "clearly ahead", "not distinguishable from the runner-up", ...
    note: str | None


@dataclass
class StudySection:
    study: str
    question: str
    metric: str
    direction: str
    analysis: Analysis | None     # cells = full configurations (every varying factor)
    winner: Winner | None
    importance: "FactorImportance | None"
    importance_note: str | None
    figures: list[Figure] = field(default_factory=list)
    reference: "pd.DataFrame | None" = None
    notes: list[str] = field(default_factory=list)   # edge cases, said plainly

    @property
    def factors(self) -> tuple[str, ...]:
        return self.analysis.by if self.analysis is not None else ()


@dataclass
class Report:
    title: str
    generated: str
    store: str
    sections: list[StudySection]
    interval: str = INTERVAL
    rule: str = analysis.DIVERGED_RULE
    margin_method: str = MARGIN_METHOD
    importance_method: str = IMPORTANCE_METHOD


def study_names(store) -> list[str]:
    progress = queries.study_progress(store)
    return [str(s) for s in progress["study"]] if len(progress) else []


def spec_of(study: str) -> Any:
    """The StudySpec of the studies/*.toml file recorded under this name (``NAME`` or ``NAME-quick``), or None.
    Only the matching file is expanded: expanding all of them costs seconds."""
    import tomllib
    from engine.study.spec import StudyError, load_study
    for path in sorted(STUDIES_DIR.glob("*.toml")):
        try:
            name = tomllib.loads(path.read_text()).get("name")
        except (OSError, ValueError):
            continue
        if study in (name, f"{name}-quick"):
            try:
                return load_study(path, quick=study != name)
            except (StudyError, OSError, ValueError):
                return None
    return None


def question_of(spec: Any, study: str) -> str:
    if spec is not None and spec.description:
        return spec.description
    return f"Which configuration of {study} gives the best final value of its metric?"


def _winner(result: Analysis, direction: str) -> Winner | None:
    usable = [c for c in result.cells if c.mean is not None]
    if not usable:
        return None
    pick = max if direction == "higher" else min
    if result.best is None:
        lead = pick(usable, key=lambda c: c.mean)
        return Winner(lead, None, None, None, None, None, "not ranked",
                      f"no cell has 3 or more usable runs ({result.reason or 'too few seeds'}): the leading cell "
                      "is shown without a test")
    best = next(c for c in result.cells if c.label == result.best)
    rest = [c for c in usable if c.label != best.label]
    if not rest:
        return Winner(best, None, None, None, None, None, "only cell", "the study has one cell: nothing to beat")
    runner = pick(rest, key=lambda c: c.mean)
    if runner.vs_baseline is None:  # the runner-up has too few usable runs to be compared
        return Winner(best, runner, best.mean - runner.mean, None, None, None, "not tested",
                      f"the runner-up has {runner.n} usable run(s): fewer than 3, no interval or test")
    low = -runner.vs_baseline_ci_high if runner.vs_baseline_ci_high is not None else None
    high = -runner.vs_baseline_ci_low if runner.vs_baseline_ci_low is not None else None
    verdicts = {"worse": "clearly ahead (significant after Holm)", "better": "clearly ahead (significant after Holm)",
                "no clear difference": "not distinguishable from the runner-up",
                "identical": "identical to the runner-up", "too few seeds": "not tested (too few seeds)"}
    verdict = verdicts.get(runner.vs_baseline_mark or "", runner.vs_baseline_mark or "not tested")
    if runner.vs_baseline_mark in ("worse", "better") and runner.vs_baseline_p_holm is None:
        verdict = "clearly ahead (the same difference on every seed: an exact difference, no test needed)"
    return Winner(best, runner, -runner.vs_baseline, low, high, runner.vs_baseline_p_holm, verdict, None)


def _edge_notes(runs: "pd.DataFrame", result: Analysis | None) -> list[str]:
    notes = []
    if result is None:
        return notes
    seeds = runs.loc[runs["status"].isin(analysis.FINISHED), "seed"].nunique() if "seed" in runs else 0
    if seeds == 1:
        notes.append("Only one seed: every cell holds one run, so no interval, test or winner can be stated.")
    diverged = sum(c.n_diverged for c in result.cells)
    if diverged:
        notes.append(f"{diverged} of {result.n_runs} finished runs diverged (or ended non-finite): they are left "
                     "out of the means and counted per cell.")
    if result.unfinished:
        notes.append("Not finished, left out: " + ", ".join(f"{k} {s}" for s, k in result.unfinished.items())
                     + "; the numbers may change when they finish.")
    identical = [c.label for c in result.cells if c.n >= 2 and c.std == 0.0]
    if identical and len(identical) == sum(1 for c in result.cells if c.n >= 2):
        notes.append("Every cell's runs ended with identical values (zero spread): the seeds did not change the "
                     "result, so intervals have zero width.")
    if result.varying:
        notes.append("Cells pool different configs: " + "; ".join(f"{f} takes {', '.join(v)}"
                                                                  for f, v in result.varying.items()) + ".")
    return notes


def _importance(store, study: str, metric: str) -> tuple["FactorImportance | None", str | None]:
    try:
        imp = analysis.study_importance(store, study, metric)
    except AnalysisError as e:
        return None, str(e)
    if imp.reason:
        return imp, imp.reason
    return imp, None


def _reference_frame(study: str, store, spec: Any):
    """The reference study's lines this study answers (its file's ``[[answers]]``): setting, reference value,
    measured mean with its 95% CI over the answer's completed runs (the same runs `engine reproduce` reads), n and
    the answer's runs that diverged. None when the study answers none."""
    if spec is None or not spec.answers or not REFERENCE_CSV.exists():
        return None
    import pandas as pd
    from engine.stats import summarize
    from engine.study.findings import StudyData, sample
    with open(REFERENCE_CSV, newline="") as f:
        reference = {row["setting"]: row for row in csv.DictReader(f)}
    data = {spec.name: StudyData.load(spec, store)}
    out = []
    for answer in spec.answers:
        ref = reference.get(answer.line)
        if ref is None or answer.cells.study not in (None, spec.name):
            continue  # a line measured on another study's runs is that study's figure
        got = sample(data, spec.name, answer.cells, answer.metric, answer.metric.goal)
        if not got.n:
            continue
        s = summarize([v * answer.scale for v in got.values])
        counts = data[spec.name].status_counts(data[spec.name].cells(answer.cells))
        out.append({"setting": ref["setting"], "reference": float(ref["value"]), "unit": ref["metric"],
                    "mean": s.mean, "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n,
                    "n_diverged": counts.get("diverged", 0)})
    return pd.DataFrame(out) if out else None


def _effect_figure(study: str, runs: "pd.DataFrame", metric: str, direction: str, order: Sequence[str]):
    """The question's figure: the two most important factors' interaction plot, or the one factor's slice plot."""
    if not order:
        return None
    first = order[0]
    if len(order) == 1:
        result = analysis.factor_views(runs, metric, direction, only=[first])[first]
        points = analysis.run_points(runs, metric, [first])
        chart = figures.slice_chart(points, result, first, metric, analysis.log_spaced(runs, first))
        return Figure(f"{study}-effect", f"{study}: {metric} by {first}",
                      f"Final {metric} by {first}: every run a dot, the mean with its 95% CI in red; "
                      f"{figures.DIVERGED_RULE_SHORT}.", chart)
    second = order[1]
    result = analysis.interaction(runs, metric, first, second, direction)
    chart = figures.interaction_chart(result, first, second, metric, analysis.log_spaced(runs, first))
    others = [f for f in order[2:]]
    return Figure(f"{study}-effect", f"{study}: {metric} by {first} and {second}",
                  f"Mean final {metric} with its 95% CI per {first} (x) and {second} (colour)"
                  + (f", averaged over {', '.join(others)}" if others else "")
                  + f"; {figures.DIVERGED_RULE_SHORT}.", chart)


def build_section(store, study: str, metric: str | None = None, with_figures: bool = True) -> StudySection:
    spec = spec_of(study)
    runs = queries.study_runs(store, study)
    if runs.empty:
        raise AnalysisError(f"study {study!r} has no run in the store yet")
    metric = metric or analysis.study_metric(runs, study)
    factors = analysis.finished_factors(runs, metric) if "final_" + metric in runs else []
    finished = runs[runs["status"].isin(analysis.FINISHED)]
    factors = analysis.independent_factors(finished, factors)
    # analyze_runs on the runs read above: what analysis.analyze(store, study, metric, by) computes, one read less.
    by = factors or ["task"]
    first = analysis.analyze_runs(runs, metric, by, study=study)
    direction = first.direction
    result = first
    if first.best is not None:  # every cell against the winner: the margin over the runner-up and its CI
        best = next(c for c in first.cells if c.label == first.best)
        result = analysis.analyze_runs(runs, metric, by, baseline=best.key, study=study)
    importance, note = _importance(store, study, metric)
    section = StudySection(study, question_of(spec, study), metric, direction, result, _winner(result, direction),
                           importance, note, notes=_edge_notes(runs, result))
    if not result.cells:
        section.notes.append(f"No finished run has a value of {metric}.")
    order = analysis.by_importance(factors, importance)  # the figure shows the two that matter most
    section.reference = _reference_frame(study, store, spec)
    if with_figures:
        effect = _effect_figure(study, runs, metric, direction, order)
        if effect is not None:
            section.figures.append(effect)
        if importance is not None and importance.terms:
            section.figures.append(Figure(f"{study}-importance", f"{study}: what explains {metric}",
                                          f"Share of the variance of the final {metric} per factor and two-factor "
                                          f"interaction, seed noise last ({IMPORTANCE_METHOD}).",
                                          figures.importance_chart(importance)))
        if section.reference is not None:
            unit = section.reference["unit"].iloc[0]
            section.figures.append(Figure(f"{study}-reference", f"{study}: reference vs measured",
                                          "The reference study's single run per setting (black) beside the mean "
                                          "of the seeds measured here with its 95% CI (red), in the reference's "
                                          f"unit ({unit}); data sets differ (see the reproduction report).",
                                          figures.reference_chart(section.reference, unit)))
    return section


def build_report(store, studies: Sequence[str] | None = None, metric: str | None = None,
                 with_figures: bool = True) -> Report:
    """The report of the named studies (default: every study in the store, by name)."""
    known = study_names(store)
    names = list(studies) if studies else known
    unknown = [s for s in names if s not in known]
    if unknown:
        raise AnalysisError(f"unknown study {', '.join(map(repr, unknown))}; studies in this store: "
                            f"{', '.join(known) if known else '(none yet)'}")
    sections = []
    for name in names:
        try:
            sections.append(build_section(store, name, metric, with_figures))
        except AnalysisError as exc:
            if metric is not None:  # the user's own choice does not fit: say so, as analyze does
                raise
            # One study that cannot be analysed (it mixes tasks, no run logged a value yet) must not hide the others.
            sections.append(StudySection(name, question_of(spec_of(name), name), "–", "–", None, None, None,
                                         None, notes=[f"Cannot report this study: {exc}"]))
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = "Ablation Lab report" + (f": {names[0]}" if len(names) == 1 else "")
    return Report(title, now, str(getattr(store, "root", "")), sections)


def fmt(x: float | None, digits: int = 4) -> str:
    """A number as the report writes it: 4 significant digits, '–' for none."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}g}" if abs(x) >= 1e4 or (x and abs(x) < 1e-3) else f"{x:.{digits}f}"


def cell_levels(cell: Cell) -> str:
    return ", ".join(f"{f}={level_text(v)}" for f, v in cell.key.items())
