"""Per-group summaries: n, mean, std, standard error and a 95% interval of the mean, over a group's seeds.

The t interval is `scipy.stats.t.interval` called once on arrays for all groups (numpy's nan-reductions over padded
rows give n, mean, std; standard error = std / sqrt(n), as scipy.stats.sem); the bootstrap interval is
`scipy.stats.bootstrap` (BCa, fixed seed) per group, so it is the slower option.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from engine.stats._runs import (EXCLUSION_RULE, MIN_SEEDS, Result, Sample, StatsError, check_confidence, fnum,
                                make_sample, split_runs)

T_METHOD = "t: scipy.stats.t.interval, n-1 degrees of freedom, around the mean with scale = standard error"


def _bootstrap_method(n_resamples: int, random_seed: int) -> str:
    return f"bootstrap: scipy.stats.bootstrap, BCa, {n_resamples} resamples of the mean, rng seed {random_seed}"


@dataclass(frozen=True)
class GroupSummary(Result):
    """One group's runs: mean, sample std (ddof=1), standard error and an interval for the mean."""
    label: str
    key: dict[str, Any]
    n: int                      # runs that count (see `rule`)
    n_runs: int                 # runs in the group
    excluded: dict[str, int]    # {"diverged": k, "non_finite": j}
    mean: float | None
    std: float | None
    sem: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    ci_method: str
    identical: bool             # at least 2 runs, all with exactly the same value
    reason: str | None          # why a field is None (too few seeds, no usable run)
    rule: str = EXCLUSION_RULE


def summarize(values: Sequence[float], *, diverged: Sequence[bool] | None = None, label: str = "",
              ci: Literal["t", "bootstrap"] = "t", confidence: float = 0.95, n_resamples: int = 9999,
              random_seed: int = 0) -> GroupSummary:
    """Summary of one group's per-run values (non-finite values and `diverged` runs are excluded and counted)."""
    return summarize_samples([make_sample(values, None, diverged, label)], ci=ci, confidence=confidence,
                             n_resamples=n_resamples, random_seed=random_seed)[0]


def summarize_groups(runs: pd.DataFrame, by: str | Sequence[str], value: str, *, diverged_column: str | None = None,
                     ci: Literal["t", "bootstrap"] = "t", confidence: float = 0.95, n_resamples: int = 9999,
                     random_seed: int = 0) -> list[GroupSummary]:
    """One summary per distinct value of the `by` column(s) of a runs table (one row per run), in sorted order."""
    return summarize_samples(split_runs(runs, by, value, None, diverged_column), ci=ci, confidence=confidence,
                             n_resamples=n_resamples, random_seed=random_seed)


def summarize_samples(samples: Sequence[Sample], *, ci: str = "t", confidence: float = 0.95,
                      n_resamples: int = 9999, random_seed: int = 0) -> list[GroupSummary]:
    if ci not in ("t", "bootstrap"):
        raise StatsError(f"ci must be 't' or 'bootstrap', got {ci!r}")
    confidence = check_confidence(confidence)
    k = len(samples)
    if k == 0:
        return []
    sizes = np.array([s.values.size for s in samples])
    mean, std, sem, vmin, vmax = _moments(samples, sizes)
    identical = (sizes >= 2) & (vmin == vmax)
    # Equal values: report the value itself and zero spread, exactly (a float mean of equal values can be off by 1 ulp).
    mean = np.where(identical, vmin, mean)
    std = np.where(identical, 0.0, std)
    sem = np.where(identical, 0.0, sem)
    lo, hi = np.full(k, np.nan), np.full(k, np.nan)
    spread = (sizes >= MIN_SEEDS) & ~identical
    if ci == "t" and spread.any():
        lo[spread], hi[spread] = stats.t.interval(confidence, df=sizes[spread] - 1, loc=mean[spread],
                                                  scale=sem[spread])
    elif ci == "bootstrap":
        for i in np.flatnonzero(spread):
            r = stats.bootstrap((samples[i].values,), np.mean, confidence_level=confidence, method="BCa",
                                n_resamples=n_resamples, rng=np.random.default_rng(random_seed))
            lo[i], hi[i] = r.confidence_interval
    flat = (sizes >= MIN_SEEDS) & identical
    lo[flat], hi[flat] = mean[flat], mean[flat]
    method = T_METHOD if ci == "t" else _bootstrap_method(n_resamples, random_seed)
    columns = (sizes.tolist(), mean.tolist(), std.tolist(), sem.tolist(), lo.tolist(), hi.tolist(), identical.tolist())
    return [_summary(s, *row, confidence, method) for s, row in zip(samples, zip(*columns))]


def _moments(samples: Sequence[Sample], sizes: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mean, sample std (ddof=1), standard error, min and max of every group in one vectorised pass: NaN-padded
    rows and numpy's nan-reductions (fast for small and large tables alike), or a pandas groupby when one group is
    so much larger than the rest that the padding would cost more than the data."""
    k, widest = len(samples), int(sizes.max())
    values = np.concatenate([s.values for s in samples])
    if k * widest > 4 * values.size + 1024:
        agg = (pd.Series(values).groupby(np.repeat(np.arange(k), sizes))
               .agg(["mean", "std", "sem", "min", "max"]).reindex(range(k)))
        return tuple(agg[c].to_numpy() for c in ("mean", "std", "sem", "min", "max"))
    padded = np.full((k, widest), np.nan)
    padded[np.arange(widest) < sizes[:, None]] = values  # row-major, as the values are concatenated
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # empty rows and n = 1 give NaN, handled by the caller
        std = np.nanstd(padded, axis=1, ddof=1)
        return (np.nanmean(padded, axis=1), std, std / np.sqrt(sizes), np.nanmin(padded, axis=1),
                np.nanmax(padded, axis=1))


def _summary(s: Sample, n: int, mean: float, std: float, sem: float, lo: float, hi: float, identical: bool,
             confidence: float, method: str) -> GroupSummary:
    reason = None
    if n == 0:
        reason = f"no usable run: {_excluded_text(s.excluded, s.n_runs)}"
    elif n < MIN_SEEDS:
        reason = f"too few seeds: {n} usable run{'s' if n > 1 else ''}, an interval needs at least {MIN_SEEDS}"
    elif not (math.isfinite(lo) and math.isfinite(hi)):
        reason = "the interval is undefined for these values (the bootstrap distribution is degenerate)"
    return GroupSummary(s.label, dict(s.key), n, s.n_runs, dict(s.excluded), fnum(mean) if n else None,
                        fnum(std) if n > 1 else None, fnum(sem) if n > 1 else None, fnum(lo), fnum(hi), confidence,
                        method, identical, reason)


def _excluded_text(excluded: dict[str, int], n_runs: int) -> str:
    if n_runs == 0:
        return "the group has no runs"
    parts = [f"{v} {k.replace('_', '-')}" for k, v in excluded.items() if v]
    return f"of {n_runs} run{'s' if n_runs > 1 else ''}, " + " and ".join(parts)
