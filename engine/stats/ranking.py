"""Which choice wins: the best group and the groups that cannot be told apart from it, or each group vs a baseline.

Both test every other group against one reference group (`engine.stats.compare`: paired by seed where the seeds
match, Welch otherwise) and correct the family of p-values with Holm, so "significant" holds for the whole table at
level alpha, not just for one cell of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import pandas as pd

from engine.stats._runs import MIN_SEEDS, Result, StatsError, hashable, split_runs
from engine.stats.compare import Comparison, compare_samples, holm
from engine.stats.summary import GroupSummary, summarize_samples

CORRECTION = "Holm (statsmodels.stats.multitest.multipletests, method='holm') over the tested comparisons"
BEST_RULE = (f"best = the best mean among groups with at least {MIN_SEEDS} usable runs; every other such group is "
             "compared with it and is a tie unless the Holm-corrected p-value is below alpha; groups with fewer runs "
             "are 'too few seeds' and left out of the family")


@dataclass(frozen=True)
class RankedGroup(Result):
    summary: GroupSummary
    status: str                     # "best", "tie", "worse" or "too few seeds"
    vs_best: Comparison | None      # this group minus the best; None for the best itself
    p_holm: float | None


@dataclass(frozen=True)
class BestVsRest(Result):
    direction: str                  # "higher" or "lower" is better
    alpha: float
    best: str | None
    ties: tuple[str, ...]
    groups: tuple[RankedGroup, ...]  # best first, then by mean from best to worst, then too few seeds
    correction: str
    rule: str
    reason: str | None


@dataclass(frozen=True)
class VsBaseline(Result):
    summary: GroupSummary
    comparison: Comparison | None   # this group minus the baseline; None for the baseline itself
    p_holm: float | None
    significant: bool | None        # Holm-corrected p < alpha; None when not tested
    mark: str                       # "baseline", "better", "worse", "no clear difference", "identical", "too few seeds"


@dataclass(frozen=True)
class BaselineReport(Result):
    baseline: str
    direction: str
    alpha: float
    rows: tuple[VsBaseline, ...]    # baseline first, then the groups in sorted order
    correction: str
    reason: str | None


def _check(direction: str, alpha: float) -> None:
    if direction not in ("higher", "lower"):
        raise StatsError(f"direction must be 'higher' or 'lower' (which is better), got {direction!r}")
    if not 0 < alpha < 1:
        raise StatsError(f"alpha must be between 0 and 1 (e.g. 0.05), got {alpha!r}")


def _better(x: float, direction: str) -> bool:
    """Whether a difference (this group minus the reference) points in the better direction."""
    return x > 0 if direction == "higher" else x < 0


def _is_group(key: tuple[tuple[str, Any], ...], label: str, wanted: Any) -> bool:
    values = tuple(v for _, v in key)
    w = hashable(wanted)
    return label == str(wanted) or values == w or values == (w,)


def best_vs_rest(runs: pd.DataFrame, by: str | Sequence[str], value: str, *,
                 direction: Literal["higher", "lower"], seed_column: str | None = "seed",
                 diverged_column: str | None = None, alpha: float = 0.05,
                 confidence: float = 0.95) -> BestVsRest:
    """Find the best group of a runs table and mark every group that cannot be told apart from it as a tie."""
    _check(direction, alpha)
    samples = split_runs(runs, by, value, seed_column, diverged_column)
    summaries = summarize_samples(samples, confidence=confidence)
    testable = [i for i, s in enumerate(summaries) if s.n >= MIN_SEEDS]
    if not testable:
        groups = tuple(RankedGroup(s, "too few seeds", None, None) for s in summaries)
        return BestVsRest(direction, alpha, None, (), groups, CORRECTION, BEST_RULE,
                          f"no group has {MIN_SEEDS} usable runs: nothing can be ranked")
    sign = 1 if direction == "higher" else -1
    order = sorted(testable, key=lambda i: -sign * summaries[i].mean)  # stable: equal means keep sorted order
    best, rest = order[0], order[1:]
    comps = compare_samples([(samples[i], samples[best]) for i in rest], confidence)
    reject, adjusted = holm([c.p_value for c in comps], alpha)
    ranked = [RankedGroup(summaries[best], "best", None, None)]
    for i, c, rej, adj in zip(rest, comps, reject, adjusted):
        if c.method is None:  # e.g. paired, but too few seeds left usable in both groups
            status = "too few seeds"
        elif rej is None:  # tested nothing because nothing varies: the difference is exact
            status = "tie" if c.identical or _better(c.difference, direction) else "worse"
        else:  # significant in the better direction can happen on the seeds both share: not worse, so a tie
            status = "worse" if rej and not _better(c.difference, direction) else "tie"
        ranked.append(RankedGroup(summaries[i], status, c, adj))
    ranked += [RankedGroup(s, "too few seeds", None, None) for i, s in enumerate(summaries) if s.n < MIN_SEEDS]
    ties = tuple(r.summary.label for r in ranked if r.status == "tie")
    return BestVsRest(direction, alpha, summaries[best].label, ties, tuple(ranked), CORRECTION, BEST_RULE, None)


def each_vs_baseline(runs: pd.DataFrame, by: str | Sequence[str], value: str, baseline: Any, *,
                     direction: Literal["higher", "lower"], seed_column: str | None = "seed",
                     diverged_column: str | None = None, alpha: float = 0.05,
                     confidence: float = 0.95) -> BaselineReport:
    """Every group minus the baseline group: difference, interval, p, Holm-corrected p and a mark.

    `baseline` is the group's label (as in GroupSummary.label) or its key: the value of a single `by` column, or a
    tuple of values for several."""
    _check(direction, alpha)
    samples = split_runs(runs, by, value, seed_column, diverged_column)
    found = [i for i, s in enumerate(samples) if _is_group(s.key, s.label, baseline)]
    if not found:
        raise StatsError(f"baseline {baseline!r} is not a group of {by!r}; the groups are "
                         f"{', '.join(s.label for s in samples)}")
    b = found[0]
    summaries = summarize_samples(samples, confidence=confidence)
    others = [i for i in range(len(samples)) if i != b]
    comps = compare_samples([(samples[i], samples[b]) for i in others], confidence)
    reject, adjusted = holm([c.p_value for c in comps], alpha)
    rows = [VsBaseline(summaries[b], None, None, None, "baseline")]
    for i, c, rej, adj in zip(others, comps, reject, adjusted):
        if c.method is None:
            mark = "too few seeds"
        elif c.identical:
            mark = "identical"
        elif rej is False:
            mark = "no clear difference"
        else:  # significant after Holm, or an exact nonzero difference (zero spread)
            mark = "better" if _better(c.difference, direction) else "worse"
        rows.append(VsBaseline(summaries[i], c, adj, rej, mark))
    reason = None
    if summaries[b].n < MIN_SEEDS:
        reason = f"the baseline has {summaries[b].n} usable runs: too few seeds to test against it"
    return BaselineReport(samples[b].label, direction, alpha, tuple(rows), CORRECTION, reason)
