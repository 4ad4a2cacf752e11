"""Two groups: the difference of their means with a 95% interval, a p-value and Hedges' g; Holm over many.

Pairing: when both groups hold exactly the same seeds (the cells of one study do), run i of one group shares its
seed (data order, initialisation) with run i of the other, so the test is on per-seed differences
(`scipy.stats.ttest_rel`), which removes the seed-to-seed spread the two cells share. Otherwise (seeds unknown,
repeated within a group, or different) it is Welch's test (`scipy.stats.ttest_ind(equal_var=False)`). Both
intervals are the tests' own `.confidence_interval()`. Many comparisons are bucketed by method and sample size
and each bucket is one vectorised SciPy call.

Effect size: Hedges' g from `statsmodels.stats.meta_analysis.effectsize_smd`: (mean_a - mean_b) / pooled sample
std, times the small-sample correction 1 - 3 / (4 (n_a + n_b) - 9). In a paired comparison it is computed from the
paired runs, still with the between-run pooled std (not the std of the differences), so g means the same thing
whichever test was used.
"""
from __future__ import annotations

import gc
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import stats
from statsmodels.stats.meta_analysis import effectsize_smd
from statsmodels.stats.multitest import multipletests

from engine.stats._runs import MIN_SEEDS, Result, Sample, check_confidence, fnum, make_sample

PAIRED = "paired by seed: scipy.stats.ttest_rel"
WELCH = "Welch: scipy.stats.ttest_ind(equal_var=False)"
EFFECT_SIZE = ("Hedges' g: statsmodels.stats.meta_analysis.effectsize_smd (pooled sample std, small-sample "
               "corrected)")


@dataclass(frozen=True)
class Comparison(Result):
    """Group a minus group b. None fields are explained by `reason`; `notes` say how runs were used."""
    a: str
    b: str
    method: str | None          # PAIRED or WELCH; None when no test could be run
    n_a: int                    # runs of a in the comparison
    n_b: int
    n_pairs: int | None         # seeds in both groups (paired only)
    difference: float | None    # mean(a) - mean(b) over the runs used
    ci_low: float | None
    ci_high: float | None
    confidence: float
    statistic: float | None     # t
    df: float | None
    p_value: float | None       # two-sided
    hedges_g: float | None
    identical: bool             # every run of a equals its counterpart in b (difference exactly 0, no spread)
    reason: str | None
    notes: tuple[str, ...]
    excluded_a: dict[str, int]
    excluded_b: dict[str, int]
    effect_size: str = EFFECT_SIZE


def compare(a: Sequence[float], b: Sequence[float], *, seeds_a: Sequence[Any] | None = None,
            seeds_b: Sequence[Any] | None = None, diverged_a: Sequence[bool] | None = None,
            diverged_b: Sequence[bool] | None = None, labels: tuple[str, str] = ("a", "b"),
            confidence: float = 0.95) -> Comparison:
    """Compare two groups' per-run values: paired by seed when both hold the same seeds, Welch otherwise."""
    return compare_samples([(make_sample(a, seeds_a, diverged_a, labels[0]),
                             make_sample(b, seeds_b, diverged_b, labels[1]))], confidence)[0]


def holm(p_values: Sequence[float | None], alpha: float = 0.05) -> tuple[list[bool | None], list[float | None]]:
    """Holm's step-down correction (statsmodels multipletests) over the p-values that exist; None stays None."""
    idx = [i for i, p in enumerate(p_values) if p is not None]
    reject: list[bool | None] = [None] * len(p_values)
    adjusted: list[float | None] = [None] * len(p_values)
    if idx:
        with _no_full_collection():
            rej, adj, _, _ = multipletests([p_values[i] for i in idx], alpha=alpha, method="holm")
        for j, i in enumerate(idx):
            reject[i], adjusted[i] = bool(rej[j]), float(adj[j])
    return reject, adjusted


@contextmanager
def _no_full_collection():
    """multipletests(method="holm") calls gc.collect() (statsmodels 0.15; removal proposed in statsmodels PR 8671):
    ~100 ms in a process with pandas, SciPy and statsmodels loaded, 0.1 ms for the correction itself. Freezing the
    existing objects for the call makes that collection scan only the few the call creates. Skipped when the
    process already uses gc.freeze for its own purposes (unfreeze would undo theirs)."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@dataclass
class _Plan:
    method: str | None
    xa: np.ndarray
    xb: np.ndarray
    n_pairs: int | None
    notes: list[str]
    reason: str | None = None


def _plan(sa: Sample, sb: Sample) -> _Plan:
    """Which test, on which runs, or why none."""
    if sa.seed_set is not None and sb.seed_set is not None and sa.seed_set == sb.seed_set:
        common, ia, ib = np.intersect1d(sa.seeds, sb.seeds, assume_unique=True, return_indices=True)
        notes = []
        if len(common) < max(sa.values.size, sb.values.size):
            notes.append(f"{sa.values.size - len(common)} run(s) of {sa.label} and {sb.values.size - len(common)} "
                         f"of {sb.label} left out: their seed's run in the other group was excluded")
        plan = _Plan(PAIRED, sa.values[ia], sb.values[ib], len(common), notes)
        if plan.n_pairs < MIN_SEEDS:
            plan.reason = f"too few seeds: {plan.n_pairs} seed(s) usable in both groups, a test needs {MIN_SEEDS}"
        return plan
    if sa.seeds is None or sb.seeds is None:
        why = "seeds not given"
    elif sa.seed_set is None or sb.seed_set is None:
        why = "a seed repeats within a group"
    else:
        why = "the groups hold different seeds"
    plan = _Plan(WELCH, sa.values, sb.values, None, [f"unpaired: {why}"])
    small = [f"{s.label} has {s.values.size}" for s in (sa, sb) if s.values.size < MIN_SEEDS]
    if small:
        plan.reason = f"too few seeds: {' and '.join(small)} usable run(s), a test needs {MIN_SEEDS} per group"
    return plan


def compare_samples(pairs: Sequence[tuple[Sample, Sample]], confidence: float = 0.95) -> list[Comparison]:
    """Compare many (a, b) pairs; one SciPy call per bucket of pairs with the same test and sample sizes."""
    confidence = check_confidence(confidence)
    plans = [_plan(sa, sb) for sa, sb in pairs]
    out: list[Comparison | None] = [None] * len(plans)
    buckets: dict[tuple, list[int]] = {}
    for i, ((sa, sb), p) in enumerate(zip(pairs, plans)):
        if p.reason is not None:
            out[i] = _untested(sa, sb, p, confidence)
        elif _no_spread(p):
            out[i] = _exact(sa, sb, p, confidence)
        else:
            buckets.setdefault((p.method, p.xa.size, p.xb.size), []).append(i)
    for (method, _, _), idx in buckets.items():
        xa = np.stack([plans[i].xa for i in idx])  # (pairs, n_a)
        xb = np.stack([plans[i].xb for i in idx])  # (pairs, n_b)
        with warnings.catch_warnings():
            # Nearly equal values make SciPy warn about precision; the result is still the test's answer.
            warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
            if method == PAIRED:
                res = stats.ttest_rel(xa, xb, axis=-1)
            else:
                res = stats.ttest_ind(xa, xb, axis=-1, equal_var=False)
            ci = res.confidence_interval(confidence)
        g, _ = effectsize_smd(xa.mean(-1), xa.std(-1, ddof=1), xa.shape[-1], xb.mean(-1), xb.std(-1, ddof=1),
                              xb.shape[-1])
        diff = xa.mean(-1) - xb.mean(-1)
        for j, i in enumerate(idx):
            sa, sb = pairs[i]
            p = plans[i]
            out[i] = Comparison(sa.label, sb.label, method, p.xa.size, p.xb.size, p.n_pairs, fnum(diff[j]),
                                fnum(ci.low[j]), fnum(ci.high[j]), confidence, fnum(res.statistic[j]),
                                fnum(res.df[j]), fnum(res.pvalue[j]), fnum(g[j]), False, None, tuple(p.notes),
                                dict(sa.excluded), dict(sb.excluded))
    return out  # type: ignore[return-value]


def _untested(sa: Sample, sb: Sample, p: _Plan, confidence: float) -> Comparison:
    diff = p.xa.mean() - p.xb.mean() if p.xa.size and p.xb.size else np.nan
    return Comparison(sa.label, sb.label, None, p.xa.size, p.xb.size, p.n_pairs, fnum(diff), None, None, confidence,
                      None, None, None, None, False, p.reason, tuple(p.notes), dict(sa.excluded), dict(sb.excluded))


def _no_spread(p: _Plan) -> bool:
    if p.method == PAIRED:
        return bool(np.ptp(p.xa - p.xb) == 0)
    return bool(np.ptp(p.xa) == 0 and np.ptp(p.xb) == 0)


def _exact(sa: Sample, sb: Sample, p: _Plan, confidence: float) -> Comparison:
    """No spread to test against: every run of a differs from b by the same amount, which is the answer itself."""
    diff = float(p.xa[0] - p.xb[0])
    if diff == 0:
        same = "each seed gives the same value in both groups" if p.method == PAIRED else "all runs have one value"
        reason = f"identical: {same}; difference 0, nothing to test"
    else:
        what = "per-seed difference" if p.method == PAIRED else "value within each group"
        reason = f"zero variance: the same {what} in every run; the difference {diff:g} is exact, nothing to test"
    return Comparison(sa.label, sb.label, p.method, p.xa.size, p.xb.size, p.n_pairs, diff, diff, diff, confidence,
                      None, None, None, None, diff == 0, reason, tuple(p.notes),
                      dict(sa.excluded), dict(sb.excluded))
