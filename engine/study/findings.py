"""Evaluating the findings a study file declares (engine/study/finding_spec.py) on the runs in the store.

Each finding gets a verdict:

* ``reproduced``: the claim holds beyond the noise between seeds: for a comparison, the 95% interval of the
  difference (engine.stats.compare: paired by seed when both sides hold the same seeds, Welch otherwise) lies on the
  claimed side; for a threshold, the interval of the mean (engine.stats.summarize) does;
* ``not reproduced``: the interval lies on the other side (or a run that should have diverged did not, ...);
* ``inconclusive``: the interval straddles it, or there are too few seeds for an interval (``single seed``;
  engine.stats needs MIN_SEEDS per side);
* ``not run``: the store has no finished run of the cells it reads (quick mode drops some cells).

Never from two means alone. The numbers behind each verdict come with it, for the report (reproduce_report.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from engine import metrics
from engine.stats import MIN_SEEDS, compare, summarize
from engine.study.finding_spec import Finding, Metric, Selection, norm_value, matches
from engine.study.results import metric_value, read_runs
from engine.study.spec import Cell, StudySpec

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_RUN = VERDICTS = (
    "reproduced", "not reproduced", "inconclusive", "not run")


# --- the runs a selection reads --------------------------------------------------------------------------------------

@dataclass
class StudyData:
    """One study's cells with their runs' records from the store, and per-epoch curves read on demand."""
    spec: StudySpec
    store: Any
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    _curves: dict[str, dict[str, list]] = field(default_factory=dict)

    @classmethod
    def load(cls, spec: StudySpec, store) -> "StudyData":
        return cls(spec, store, read_runs(store, [c.run_id for c in spec.runs]))

    def cells(self, sel: Selection) -> list[Cell]:
        return [c for c in self.spec.runs if matches(c, sel)]

    def status_counts(self, cells: list[Cell]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for cell in cells:
            rec = self.records.get(cell.run_id)
            s = rec["status"] if rec else "missing"
            counts[s] = counts.get(s, 0) + 1
        return counts

    def curve(self, run_id: str, metric: str) -> list[float | None]:
        from engine import queries
        if metric not in self._curves:
            ids = [rid for rid, rec in self.records.items() if rec["status"] in ("completed", "diverged")]
            try:
                df = queries.curves(self.store, ids, [metric]) if ids else None
            except Exception:  # the metric was never logged
                df = None
            per_run: dict[str, list] = {}
            if df is not None:
                for row in df.itertuples(index=False):
                    v = getattr(row, metric)
                    per_run.setdefault(row.run_id, []).append(None if v is None or v != v else float(v))
            self._curves[metric] = per_run
        return self._curves[metric].get(run_id, [])

    def value(self, cell: Cell, metric: Metric) -> float | None:
        """The run's value of ``metric`` (see finding_spec), or None when it did not complete or lacks it."""
        rec = self.records.get(cell.run_id)
        if not rec or rec["status"] != "completed" or rec.get("excluded"):  # excluded from analysis by a person
            return None
        if metric.mode == "final":
            v = metric_value(rec, metric.base)
            return v if v is not None and math.isfinite(v) else None
        curve = [v for v in self.curve(cell.run_id, metric.base)]
        known = [v for v in curve if v is not None]
        if not known:
            return None
        if metric.mode == "epoch":
            return curve[metric.epoch - 1] if len(curve) >= metric.epoch else None
        best = max(known) if metrics.goal(metric.base) == "max" else min(known)
        if metric.mode == "best":
            return best
        if metric.mode == "rise":
            return abs(known[-1] - best)
        for i, v in enumerate(curve):  # epochs_to
            if v is not None and (v >= metric.value if metric.op == ">=" else v <= metric.value):
                return float(i + 1)
        return float(cell.config.epochs + 1)  # never reached: counted as one epoch past the end


@dataclass(frozen=True)
class Sample:
    """One side of a finding: its runs' values and seeds, and which cells they came from."""
    label: str
    values: tuple[float, ...]
    seeds: tuple[int, ...]
    run_ids: frozenset[str]
    cell_label: str = ""

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return sum(self.values) / len(self.values) if self.values else None


def sample(studies: dict[str, StudyData], own: str, sel: Selection, metric: Metric, goal: str,
           label: str = "") -> Sample:
    data = studies.get(sel.study or own)
    if data is None:  # a study that is not loaded (a partial set of studies): nothing of it ran
        return Sample(label or sel.describe(), (), (), frozenset())
    metric = sel.metric or metric
    by_cell: dict[str, list[tuple[Cell, float]]] = {}
    for cell in data.cells(sel):
        v = data.value(cell, metric)
        if v is not None:
            by_cell.setdefault(cell.cell_key, []).append((cell, v))
    chosen = list(by_cell.values())
    cell_label = ""
    if sel.pick == "best" and chosen:
        sign = 1 if goal == "max" else -1
        best = max(chosen, key=lambda runs: sign * sum(v for _, v in runs) / len(runs))
        chosen, cell_label = [best], best[0][0].label
    runs = [r for group in chosen for r in group]
    return Sample(label or sel.describe(), tuple(v for _, v in runs), tuple(c.seed for c, _ in runs),
                  frozenset(c.run_id for c, _ in runs), cell_label)


# --- verdicts ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    verdict: str
    numbers: str          # what the verdict rests on: values, n, interval


@dataclass(frozen=True)
class FindingResult:
    study: str
    finding: Finding
    verdict: str
    numbers: str


def fmt(value: float | None, metric: Metric) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if metric.mode == "epochs_to":
        return f"{value:.3g} epochs"
    if metric.goal == "max" and "accuracy" in metric.base and metric.mode != "rise":
        return f"{value * 100:.2f}%"
    return f"{value:.4g}"


def _fmt_diff(value: float, metric: Metric) -> str:
    if "accuracy" in metric.base and metric.mode not in ("epochs_to",):
        return f"{value * 100:+.2f} points"
    return f"{value:+.4g}"


def _side(s: Sample, metric: Metric) -> str:
    what = f" ({s.cell_label})" if s.cell_label else ""
    return f"{s.label}{what}: {fmt(s.mean, metric)} (n={s.n})"


def _too_few(a: Sample, b: Sample | None = None) -> str:
    n = min(s.n for s in (a, b) if s is not None)
    return "single seed" if n == 1 else f"{n} seeds; an interval needs {MIN_SEEDS}"


def beats(a: Sample, b: Sample, metric: Metric, goal: str, margin: float = 0.0) -> Verdict:
    """Whether ``a`` beats ``b`` (by more than ``margin``, in the goal's direction), from the interval of a - b."""
    numbers = f"{_side(a, metric)} vs {_side(b, metric)}"
    if not a.n or not b.n:
        return Verdict(NOT_RUN, numbers)
    if a.run_ids == b.run_ids:
        return Verdict(NOT_REPRODUCED, numbers + "; both sides are the same cell")
    c = compare(list(a.values), list(b.values), seeds_a=list(a.seeds), seeds_b=list(b.seeds))
    if c.ci_low is None:
        return Verdict(INCONCLUSIVE, f"{numbers}; {_too_few(a, b)}")
    sign = 1.0 if goal == "max" else -1.0
    lo, hi = sorted((sign * c.ci_low, sign * c.ci_high))
    shown = f"{numbers}; difference {_fmt_diff(sign * c.difference, metric)}, 95% CI [{_fmt_diff(lo, metric)}, " \
            f"{_fmt_diff(hi, metric)}]" + (f" (margin {_fmt_diff(margin, metric)})" if margin else "")
    if lo > margin:
        return Verdict(REPRODUCED, shown)
    if hi < margin:
        return Verdict(NOT_REPRODUCED, shown)
    return Verdict(INCONCLUSIVE, shown)


def close(a: Sample, b: Sample, metric: Metric, within: float) -> Verdict:
    """Whether ``a`` and ``b`` differ by less than ``within``: the interval of a - b inside +-within."""
    numbers = f"{_side(a, metric)} vs {_side(b, metric)}"
    if not a.n or not b.n:
        return Verdict(NOT_RUN, numbers)
    c = compare(list(a.values), list(b.values), seeds_a=list(a.seeds), seeds_b=list(b.seeds))
    if c.ci_low is None:
        return Verdict(INCONCLUSIVE, f"{numbers}; {_too_few(a, b)}")
    shown = f"{numbers}; difference 95% CI [{_fmt_diff(c.ci_low, metric)}, {_fmt_diff(c.ci_high, metric)}], " \
            f"allowed +-{_fmt_diff(within, metric).lstrip('+')}"
    if -within < c.ci_low and c.ci_high < within:
        return Verdict(REPRODUCED, shown)
    if c.ci_low >= within or c.ci_high <= -within:
        return Verdict(NOT_REPRODUCED, shown)
    return Verdict(INCONCLUSIVE, shown)


def threshold(s: Sample, metric: Metric, side: str, value: float, best_seed: bool, goal: str) -> Verdict:
    want = f"{side} {fmt(value, metric)}"
    if not s.n:
        return Verdict(NOT_RUN, f"{_side(s, metric)}; claimed {want}")
    above = side == "above"
    if best_seed:
        v = max(s.values) if goal == "max" else min(s.values)
        ok = v > value if above else v < value
        return Verdict(REPRODUCED if ok else NOT_REPRODUCED,
                       f"{s.label}: best seed {fmt(v, metric)} of n={s.n}; claimed {want}")
    g = summarize(list(s.values))
    if g.ci_low is None:
        return Verdict(INCONCLUSIVE, f"{_side(s, metric)}; claimed {want}; {_too_few(s)}")
    shown = f"{_side(s, metric)}, 95% CI [{fmt(g.ci_low, metric)}, {fmt(g.ci_high, metric)}]; claimed {want}"
    lo_ok, hi_ok = (g.ci_low > value, g.ci_high > value) if above else (g.ci_high < value, g.ci_low < value)
    if lo_ok:
        return Verdict(REPRODUCED, shown)
    if not hi_ok:
        return Verdict(NOT_REPRODUCED, shown)
    return Verdict(INCONCLUSIVE, shown)


def combine(verdicts: list[Verdict], require: str) -> str:
    """One verdict from several groups' (or pairs'): all of them, most of them or any one must hold."""
    kinds = [v.verdict for v in verdicts]
    ran = [k for k in kinds if k != NOT_RUN]
    if not ran:
        return NOT_RUN
    rep, nrep = ran.count(REPRODUCED), ran.count(NOT_REPRODUCED)
    if require == "all":
        return NOT_REPRODUCED if nrep else REPRODUCED if rep == len(kinds) else INCONCLUSIVE
    if require == "any":
        return REPRODUCED if rep else NOT_REPRODUCED if nrep == len(kinds) else INCONCLUSIVE
    return REPRODUCED if rep > len(ran) / 2 else NOT_REPRODUCED if nrep >= len(ran) / 2 else INCONCLUSIVE


def _levels(data: StudyData, sel: Selection, by: str) -> list[Any]:
    seen: dict[str, Any] = {}
    for cell in data.cells(sel):
        v = norm_value(getattr(cell.config, by))
        seen.setdefault(repr(v), v)
    return list(seen.values())


def _one(studies: dict[str, StudyData], own: str, f: Finding, cells: Selection) -> Verdict:
    """The finding's verdict within ``cells`` (one group of its ``per`` factors)."""
    o, m, goal = f.options, f.metric, f.goal
    side = lambda sel, label="": sample(studies, own, sel, m, goal, label)  # noqa: E731
    if f.kind == "beats":
        return beats(side(cells.merged(o["a"])), side(cells.merged(o["b"])), m, goal, o["margin"])
    if f.kind == "close":
        a, b = o["a"], o["b"]
        return close(side(cells.merged(a)), side(cells.merged(b)), a.metric or b.metric or m, o["within"])
    if f.kind == "threshold":
        return threshold(side(cells), m, o["side"], o["value"], o["best_seed"], goal)
    if f.kind == "order":
        levels = [side(Selection(pick=o["pick"]).merged(cells).with_fields(**{o["by"]: v}), f"{o['by']}={v}")
                  for v in o["levels"]]
        pairs = [beats(levels[i], levels[i + 1], m, goal) for i in range(len(levels) - 1)]
        return Verdict(combine(pairs, "all"), "; ".join(v.numbers for v in pairs))
    if f.kind == "best":
        return _best(studies, own, f, cells, side)
    return _diverges(studies, own, f, cells, side)


def _best(studies, own, f: Finding, cells: Selection, side) -> Verdict:
    o, m, goal = f.options, f.metric, f.goal
    data = studies[cells.study or own]
    expect = [norm_value(v) for v in o["levels"]]
    levels = {repr(v): side(Selection(pick=o["pick"]).merged(cells).with_fields(**{o["by"]: v}), f"{o['by']}={v}")
              for v in _levels(data, cells, o["by"])}
    ran = {k: s for k, s in levels.items() if s.n}
    listing = ", ".join(_side(s, m) for s in levels.values())
    inside = {k: s for k, s in ran.items() if k in {repr(v) for v in expect}}
    outside = {k: s for k, s in ran.items() if k not in inside}
    if not inside or not outside:
        return Verdict(NOT_RUN, listing or "no runs")
    sign = 1 if goal == "max" else -1
    top_in = max(inside.values(), key=lambda s: sign * s.mean)
    top_out = max(outside.values(), key=lambda s: sign * s.mean)
    v = beats(top_in, top_out, m, goal)
    return Verdict(v.verdict, f"{listing}; best expected against best other: {v.numbers.split('; ', 1)[-1]}")


def _diverges(studies, own, f: Finding, cells: Selection, side) -> Verdict:
    o = f.options
    data = studies[cells.study or own]
    counts = data.status_counts(data.cells(cells))
    shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    diverged, finished = counts.get("diverged", 0), counts.get("diverged", 0) + counts.get("completed", 0)
    if not finished:
        return Verdict(NOT_RUN, shown or "no runs")
    if not o["expect"]:
        return Verdict(REPRODUCED if not diverged else NOT_REPRODUCED, f"{cells.describe()}: {shown}")
    held = diverged == finished if o["runs"] == "all" else diverged > 0
    if held:
        return Verdict(REPRODUCED, f"{cells.describe()}: {shown}")
    if "or_worse_than" not in o:
        return Verdict(NOT_REPRODUCED, f"{cells.describe()}: {shown}")
    worse = beats(side(cells.merged(o["or_worse_than"]), "other"), side(cells, "these"), f.metric, f.goal)
    return Verdict(worse.verdict, f"{cells.describe()}: {shown}; the completed runs against {o['or_worse_than'].describe()}:"
                                  f" {worse.numbers}")


def evaluate(studies: dict[str, StudyData], own: str, f: Finding) -> FindingResult:
    """The finding of study ``own`` (a key of ``studies``), on the runs the store has."""
    data = studies[own]
    if not f.per:
        v = _one(studies, own, f, f.cells)
        return FindingResult(own, f, v.verdict, v.numbers)
    groups: dict[str, dict[str, Any]] = {}
    for cell in data.cells(f.cells):
        values = {p: norm_value(getattr(cell.config, p)) for p in f.per}
        groups.setdefault(repr(values), values)
    if not groups:
        return FindingResult(own, f, NOT_RUN, "no cells")
    results = [(g, _one(studies, own, f, f.cells.with_fields(**g))) for g in groups.values()]
    numbers = "; ".join(f"{' '.join(f'{k}={v}' for k, v in g.items())}: {v.verdict}: {v.numbers}"
                        for g, v in results)
    return FindingResult(own, f, combine([v for _, v in results], f.require), numbers)


def evaluate_all(studies: dict[str, StudyData]) -> list[FindingResult]:
    """Every finding of every study, in file order; a finding that cannot be computed says why (never fatal)."""
    out = []
    for name, data in studies.items():
        for f in data.spec.findings:
            try:
                out.append(evaluate(studies, name, f))
            except Exception as e:  # a bug in one finding must not lose the report
                out.append(FindingResult(name, f, INCONCLUSIVE, f"could not be computed: {type(e).__name__}: {e}"))
    return out
