"""How long the statistics of engine.stats take on a large study: 10,000 runs = 500 cells x 20 seeds, 3 factors.

    .venv/bin/python bench/analysis_scale.py
    .venv/bin/python bench/analysis_scale.py --levels 10 10 5 --seeds 20 --repeats 7

Timed (median of repeats, in one process, after one warm-up call; wall clock, and the process's CPU time beside it):
  * the analysis: summarize_groups + best_vs_rest + factor_importance (the headline figure; target < 300 ms)
  * each piece on its own
  * side by side with naive baselines that compute the same numbers one cell at a time:
      - per-group t intervals: a Python loop calling scipy.stats.t.interval per group vs one call on arrays
      - best vs rest: a loop calling scipy.stats.ttest_rel per cell vs the bucketed, vectorised comparisons
      - ANOVA: statsmodels ols + anova_lm on all 10,000 runs vs the same model fitted on cell statistics
        (both with one BLAS thread; engine.stats sets that itself, see engine/stats/anova.py)
The last lines are `name: value`, one per headline figure.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.stats import best_vs_rest, factor_importance, summarize_groups  # noqa: E402


def synthetic_runs(levels: list[int], seeds: int, seed: int = 0) -> pd.DataFrame:
    """A full factorial of `levels` x `seeds` runs: one real main effect (lr), small effects elsewhere, seed noise
    shared by the cells (the seed's effect), 1% of runs diverged."""
    rng = np.random.default_rng(seed)
    grid = pd.MultiIndex.from_product([range(k) for k in levels] + [range(seeds)],
                                      names=["lr", "activation", "width", "seed"]).to_frame(index=False)
    seed_effect = rng.normal(0, 0.02, seeds)
    grid["val_accuracy"] = (0.8 + 0.03 * grid["lr"] / levels[0] + 0.002 * (grid["activation"] % 3)
                            + seed_effect[grid["seed"]] + rng.normal(0, 0.01, len(grid)))
    grid["lr"] = 10.0 ** (-4 + grid["lr"] * 3 / max(levels[0] - 1, 1))  # numeric factor, treated as categorical
    grid["activation"] = grid["activation"].map(lambda i: f"act{i}")
    grid["diverged"] = rng.random(len(grid)) < 0.01
    return grid


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Median wall-clock ms and median process CPU ms over `repeats` calls after a warm-up call (imports, patsy's
    first formula), and the last result. On a shared machine wall time also counts other people's work."""
    out = fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    return statistics.median(wall), statistics.median(cpu), out


def naive_intervals(runs: pd.DataFrame, factors: list[str]) -> list[tuple[float, float]]:
    from scipy import stats
    out = []
    for _, g in runs[~runs["diverged"]].groupby(factors):
        v = g["val_accuracy"].to_numpy()
        out.append(stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v)))
    return out


def naive_best_vs_rest(runs: pd.DataFrame, factors: list[str]) -> list[float]:
    from scipy import stats
    ok = runs[~runs["diverged"]]
    groups = {k: g.set_index("seed")["val_accuracy"] for k, g in ok.groupby(factors)}
    best = max(groups, key=lambda k: groups[k].mean())
    ps = []
    for k, g in groups.items():
        if k != best:
            a, b = g.align(groups[best], join="inner")
            r = stats.ttest_rel(a.to_numpy(), b.to_numpy())
            r.confidence_interval()
            ps.append(r.pvalue)
    return ps


def naive_anova(runs: pd.DataFrame, factors: list[str]):
    """The same model fitted on every run, with the same single BLAS thread engine.stats uses (so the ratio is the
    method's, not thread contention's)."""
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm
    from threadpoolctl import threadpool_limits
    ok = runs[~runs["diverged"]].rename(columns={f: f"f{i}" for i, f in enumerate(factors)})
    terms = [f"C(f{i})" for i in range(len(factors))]
    terms += [f"{a}:{b}" for i, a in enumerate(terms) for b in terms[i + 1:]]
    with threadpool_limits(1, user_api="blas"):
        return anova_lm(smf.ols("val_accuracy ~ " + " + ".join(terms), ok).fit(), typ=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, nargs=3, default=[10, 10, 5], help="levels of lr, activation, width")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    runs = synthetic_runs(args.levels, args.seeds)
    factors = ["lr", "activation", "width"]
    print(f"{len(runs)} runs, {int(np.prod(args.levels))} cells x {args.seeds} seeds, "
          f"{int(runs['diverged'].sum())} diverged; median of {args.repeats}")

    def analysis():
        return (summarize_groups(runs, factors, "val_accuracy", diverged_column="diverged"),
                best_vs_rest(runs, factors, "val_accuracy", direction="higher", diverged_column="diverged"),
                factor_importance(runs, factors, "val_accuracy", diverged_column="diverged"))

    total, total_cpu, (_, best, fi) = timed(analysis, args.repeats)
    pieces = {
        "group summaries + t CI": (
            lambda: summarize_groups(runs, factors, "val_accuracy", diverged_column="diverged"),
            lambda: naive_intervals(runs, factors)),
        "best vs rest (Holm)": (
            lambda: best_vs_rest(runs, factors, "val_accuracy", direction="higher", diverged_column="diverged"),
            lambda: naive_best_vs_rest(runs, factors)),
        "factor importance (ANOVA)": (
            lambda: factor_importance(runs, factors, "val_accuracy", diverged_column="diverged"),
            lambda: naive_anova(runs, factors)),
    }
    print(f"best: {best.best}, {len(best.ties)} ties; top term: {fi.terms[0].term} "
          f"(share {fi.terms[0].share:.2f}), residual share {fi.terms[-1].share:.2f}")
    print(f"{'piece':<28}{'engine.stats ms':>16}{'naive ms':>10}{'ratio':>7}{'cpu ms':>9}{'naive cpu':>10}")
    naive_total = 0.0
    for name, (ours_fn, naive_fn) in pieces.items():
        ours, ours_cpu, _ = timed(ours_fn, args.repeats)
        naive, naive_cpu, _ = timed(naive_fn, max(1, args.repeats // 2))
        naive_total += naive
        print(f"{name:<28}{ours:>16.1f}{naive:>10.1f}{naive / ours:>7.1f}{ours_cpu:>9.1f}{naive_cpu:>10.1f}")
    print(f"analysis_ms: {total:.1f}")
    print(f"analysis_cpu_ms: {total_cpu:.1f}")
    print(f"naive_ms: {naive_total:.1f}")
    print(f"speedup: {naive_total / total:.1f}")


if __name__ == "__main__":
    main()
