"""engine/stats: against SciPy and statsmodels on fixed examples, against known truth on simulated draws, and the
edge cases (too few seeds, identical values, diverged runs, unbalanced designs).

Every simulation uses a fixed numpy seed, so the file gives the same answer on every machine; each tolerance is
derived from the arithmetic of the check (stated beside it), so that a correct implementation would pass for almost
any seed, and a wrong one (no correction, wrong test, wrong interval) fails.
"""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.anova import anova_lm
from statsmodels.stats.meta_analysis import effectsize_smd
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.stats import (EXCLUSION_RULE, MIN_SEEDS, StatsError, best_vs_rest, compare, each_vs_baseline,  # noqa: E402
                          factor_importance, holm, summarize, summarize_groups)
from engine.stats._runs import make_sample  # noqa: E402
from engine.stats.compare import PAIRED, WELCH, compare_samples  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def dumps(result) -> str:
    """Every result must be strict JSON: no NaN, no numpy types."""
    return json.dumps(result.to_dict(), allow_nan=False)


def compare_draws(a: np.ndarray, b: np.ndarray, seeds_a, seeds_b) -> list:
    """compare() for each row of a (draws, n_a) and b (draws, n_b), through the batch path the ranking helpers use
    (one SciPy call for all draws instead of one per draw; test_batch_equals_one_by_one holds it to compare())."""
    return compare_samples([(make_sample(x, seeds_a, label="a"), make_sample(y, seeds_b, label="b"))
                            for x, y in zip(a, b)])


def binomial_ok(hits: int, draws: int, p: float, z: float = 3.0) -> tuple[float, float]:
    """The range a rate of `draws` Bernoulli(p) trials falls in with z binomial standard errors either side."""
    se = np.sqrt(p * (1 - p) / draws)
    return p - z * se, p + z * se


def runs_table(rng: np.random.Generator, means: dict[str, float], seeds: int = 10, noise_sd: float = 1.0,
               seed_sd: float = 0.0, seed_offset: dict[str, int] | None = None) -> pd.DataFrame:
    """One row per run. The seed's own effect (seed_sd) is shared by every group that ran that seed, as in a
    study where seed fixes the data order and the initialisation."""
    offsets = [(seed_offset or {}).get(g, 0) for g in means]
    seed_effect = rng.normal(0, seed_sd, max(offsets) + seeds)
    seed = np.concatenate([np.arange(o, o + seeds) for o in offsets])
    mean = np.repeat(list(means.values()), seeds)
    return pd.DataFrame({"choice": np.repeat(list(means), seeds), "seed": seed,
                         "metric": mean + seed_effect[seed] + rng.normal(0, noise_sd, len(seed))})


# --- agreement with the libraries on fixed examples ---

A = np.array([0.81, 0.79, 0.85, 0.80, 0.83, 0.78, 0.84, 0.82])
B = np.array([0.78, 0.77, 0.80, 0.79, 0.80, 0.74, 0.83, 0.79])


def test_paired_matches_ttest_rel_and_pairs_on_the_seed_value():
    seeds = np.arange(8)
    shuffle = np.array([3, 0, 7, 1, 6, 2, 5, 4])  # b's runs arrive in another order: pairing must use the seed
    c = compare(A, B[shuffle], seeds_a=seeds, seeds_b=seeds[shuffle], labels=("adam", "sgd"))
    ref = stats.ttest_rel(A, B)
    ci = ref.confidence_interval(0.95)
    assert c.method == PAIRED and c.n_pairs == 8
    assert c.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert c.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert (c.ci_low, c.ci_high) == (pytest.approx(ci.low, rel=1e-12), pytest.approx(ci.high, rel=1e-12))
    assert c.difference == pytest.approx(A.mean() - B.mean(), rel=1e-12)
    g, _ = effectsize_smd(A.mean(), A.std(ddof=1), 8, B.mean(), B.std(ddof=1), 8)
    assert c.hedges_g == pytest.approx(g, rel=1e-12)
    # Hedges' g by its definition, as a check on which variant statsmodels computes
    pooled = np.sqrt((A.var(ddof=1) + B.var(ddof=1)) / 2)
    assert c.hedges_g == pytest.approx((1 - 3 / (4 * 16 - 9)) * (A.mean() - B.mean()) / pooled, rel=1e-12)
    dumps(c)


def test_welch_matches_ttest_ind_when_seeds_differ():
    c = compare(A, B[:6], seeds_a=range(8), seeds_b=range(10, 16))
    ref = stats.ttest_ind(A, B[:6], equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert c.method == WELCH and c.n_pairs is None
    assert "different seeds" in c.notes[0]
    assert c.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert c.df == pytest.approx(ref.df, rel=1e-12)
    assert (c.ci_low, c.ci_high) == (pytest.approx(ci.low, rel=1e-12), pytest.approx(ci.high, rel=1e-12))
    # no seeds at all, or a seed repeated within a group: unpaired too, and said why
    assert "seeds not given" in compare(A, B).notes[0]
    rep = compare(A, B, seeds_a=[0, 0, 1, 2, 3, 4, 5, 6], seeds_b=[0, 0, 1, 2, 3, 4, 5, 6])
    assert rep.method == WELCH and "repeats" in rep.notes[0]


def test_batch_equals_one_by_one():
    """Comparisons bucketed into one vectorised SciPy call give what compare() gives for each pair alone."""
    rng = np.random.default_rng(13)
    a, b = rng.normal(size=(6, 7)), rng.normal(size=(6, 7))
    b[5] = a[5]  # an identical pair inside the batch must not disturb the others
    for paired in (True, False):
        seeds_b = range(7) if paired else range(10, 17)
        batch = compare_draws(a, b, range(7), seeds_b)
        for x, y, c in zip(a, b, batch):
            assert c == compare(x, y, seeds_a=range(7), seeds_b=seeds_b)
        assert batch[5].identical is paired  # paired: each seed equal; Welch: two groups with spread, not flat


def test_summary_matches_t_interval_and_bootstrap():
    s = summarize(A, label="adam")
    lo, hi = stats.t.interval(0.95, len(A) - 1, loc=A.mean(), scale=stats.sem(A))
    assert (s.n, s.mean, s.std) == (8, pytest.approx(A.mean()), pytest.approx(A.std(ddof=1)))
    assert s.sem == pytest.approx(stats.sem(A))
    assert (s.ci_low, s.ci_high) == (pytest.approx(lo, rel=1e-12), pytest.approx(hi, rel=1e-12))
    b = summarize(A, ci="bootstrap", n_resamples=2000, random_seed=7)
    ref = stats.bootstrap((A,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(7))
    assert (b.ci_low, b.ci_high) == (ref.confidence_interval.low, ref.confidence_interval.high)
    assert dumps(b) == dumps(summarize(A, ci="bootstrap", n_resamples=2000, random_seed=7))  # same seed, same CI
    assert "BCa" in b.ci_method and "seed 7" in b.ci_method


def test_summaries_of_very_unequal_groups_match_scipy():
    """One group far larger than the rest takes the pandas path instead of padded rows: same numbers."""
    rng = np.random.default_rng(6)
    sizes = [3000, 1, 2, 5, 0, 3]
    runs = pd.DataFrame({"g": np.repeat(np.arange(6), sizes), "metric": rng.normal(size=sum(sizes))})
    got = summarize_groups(pd.concat([runs, pd.DataFrame({"g": [4], "metric": [np.nan]})]), "g", "metric")
    for s, n in zip(got, sizes):
        v = runs.loc[runs["g"] == int(s.label), "metric"].to_numpy()
        assert s.n == n
        if n >= 3:
            lo, hi = stats.t.interval(0.95, n - 1, loc=v.mean(), scale=stats.sem(v))
            assert (s.mean, s.std, s.sem) == (pytest.approx(v.mean()), pytest.approx(v.std(ddof=1)),
                                              pytest.approx(stats.sem(v)))
            assert (s.ci_low, s.ci_high) == (pytest.approx(lo), pytest.approx(hi))
        dumps(s)
    assert got[4].reason.startswith("no usable run") and got[4].excluded == {"diverged": 0, "non_finite": 1}


def test_holm_matches_multipletests_and_skips_missing_p_values():
    p = [0.01, None, 0.04, 0.03, 0.005]
    reject, adjusted = holm(p, alpha=0.05)
    ref_rej, ref_adj, _, _ = multipletests([0.01, 0.04, 0.03, 0.005], alpha=0.05, method="holm")
    assert reject[1] is None and adjusted[1] is None
    assert [r for r in reject if r is not None] == list(ref_rej)
    assert [a for a in adjusted if a is not None] == pytest.approx(list(ref_adj))


def _factorial(rng, levels, seeds, effect=None, names=("lr", "optimizer", "width")):
    grid = pd.MultiIndex.from_product([range(k) for k in levels] + [range(seeds)],
                                      names=[*names[:len(levels)], "seed"]).to_frame(index=False)
    grid["metric"] = rng.normal(size=len(grid)) + (effect(grid) if effect else 0.0)
    return grid


@pytest.mark.parametrize("unbalanced", [False, True])
def test_anova_matches_anova_lm_on_the_runs(unbalanced):
    rng = np.random.default_rng(1)
    runs = _factorial(rng, (3, 4, 2), 4, lambda g: 0.8 * g["lr"] + 0.3 * (g["optimizer"] == 1) * g["width"])
    if unbalanced:  # uneven cells, several down to one run (zero within-cell spread in those)
        runs = runs.sample(frac=0.7, random_state=3).reset_index(drop=True)
    # awkward column names: spaces, a quote, and "C", the formula's own categorical function
    odd = {"lr": "learning rate", "optimizer": "C", "width": "w'idth"}
    got = factor_importance(runs.rename(columns=odd), list(odd.values()), "metric")
    fit = smf.ols("metric ~ C(lr) + C(optimizer) + C(width) + C(lr):C(optimizer) + C(lr):C(width)"
                  " + C(optimizer):C(width)", runs).fit()
    ref = anova_lm(fit, typ=2)
    names = {"C(lr)": "learning rate", "C(optimizer)": "C", "C(width)": "w'idth"}
    by_term = {t.term: t for t in got.terms}
    for name, row in ref.iterrows():
        term = "residual" if name == "Residual" else " x ".join(names[p] for p in name.split(":"))
        t = by_term[term]
        assert t.sum_sq == pytest.approx(row["sum_sq"], rel=1e-8, abs=1e-10)
        assert t.df == row["df"]
        assert t.eta_sq == pytest.approx(row["sum_sq"] / fit.centered_tss, rel=1e-8, abs=1e-12)
        if term != "residual":
            assert t.f == pytest.approx(row["F"], rel=1e-8)
            assert t.p_value == pytest.approx(row["PR(>F)"], rel=1e-6, abs=1e-300)
    assert sum(t.share for t in got.terms) == pytest.approx(1.0)
    assert got.balanced is not unbalanced
    assert any("unbalanced" in n for n in got.notes) is unbalanced
    dumps(got)


# --- known truth, repeated draws ---

def test_holm_family_wise_false_positive_rate_without_true_difference():
    """4 choices vs a baseline, no true difference: Holm keeps P(any false 'significant') <= 5% whatever the
    dependence (the 4 tests share the baseline). Over 500 families the rate has binomial SE
    sqrt(.05 * .95 / 500) = 0.97%, so 7% is 2 SE above the guaranteed worst case (P(>= 36 of 500) = 2% at exactly 5%,
    and Holm is below 5% here); without the correction the rate would be up to 1 - 0.95^4 = 18.5%."""
    rng = np.random.default_rng(2024)
    means = {g: 0.0 for g in ("base", "a", "b", "c", "d")}
    false_alarms = uncorrected = 0
    for draw in range(500):
        paired = draw % 2 == 0  # half the families paired by seed with seed effects, half Welch
        runs = runs_table(rng, means, seeds=10, noise_sd=1.0, seed_sd=1.0 if paired else 0.0,
                          seed_offset=None if paired else {"a": 100, "b": 200, "c": 300, "d": 400})
        rep = each_vs_baseline(runs, "choice", "metric", "base", direction="higher")
        rows = rep.rows[1:]
        assert {r.comparison.method for r in rows} == {PAIRED if paired else WELCH}
        false_alarms += any(r.significant for r in rows)
        uncorrected += any(r.comparison.p_value < 0.05 for r in rows)
    assert false_alarms / 500 <= 0.07
    assert uncorrected > false_alarms  # the correction did something


def test_power_one_sd_paired_by_seed_with_seed_effects():
    """A true difference of 1 run-to-run SD, 10 seeds per group, seed effects shared by both groups (seed SD^2 0.8,
    noise SD^2 0.2, so one run's SD is 1): pairing leaves differences with SD sqrt(2 * 0.2) = 0.63, so the paired
    t-test's power is TTestPower(d = 1 / 0.63, n = 10) = 0.993. 500 draws: >= 80% (a margin of > 30 binomial SE),
    and no lower than 3 SE under the theoretical power."""
    rng = np.random.default_rng(7)
    shared = rng.normal(0, np.sqrt(0.8), (500, 10))
    noise = rng.normal(0, np.sqrt(0.2), (2, 500, 10))
    better, base = 1.0 + shared + noise[0], shared + noise[1]
    seeds = rng.permutation(10)  # any order: pairing is on the seed value
    comps = compare_draws(better[:, seeds], base, seeds, range(10))
    assert {c.method for c in comps} == {PAIRED}
    hits = sum(c.p_value < 0.05 and c.difference > 0 for c in comps)
    theory = TTestPower().power(effect_size=1 / np.sqrt(0.4), nobs=10, alpha=0.05)
    assert hits / 500 >= 0.80
    assert hits / 500 >= binomial_ok(hits, 500, theory)[0]


@pytest.mark.parametrize("seeds", [10, 20])
def test_power_one_sd_welch_matches_theory(seeds):
    """Unpaired (different seeds), 1 SD apart. Welch's power is fixed by arithmetic: TTestIndPower(d=1) is 0.56 at
    10 seeds per group and 0.87 at 20, so 80% needs about 17 seeds, which no test can beat without pairing. Checked:
    the detection rate lies within 3 binomial SE (500 draws) of the theoretical power, and is >= 80% at 20 seeds."""
    rng = np.random.default_rng(11 + seeds)
    a, b = rng.normal(1.0, 1.0, (500, seeds)), rng.normal(0.0, 1.0, (500, seeds))
    comps = compare_draws(a, b, range(seeds), range(100, 100 + seeds))
    assert {c.method for c in comps} == {WELCH}
    hits = sum(c.p_value < 0.05 and c.difference > 0 for c in comps)
    theory = TTestIndPower().power(effect_size=1.0, nobs1=seeds, alpha=0.05, ratio=1.0)
    lo, hi = binomial_ok(hits, 500, theory)
    assert lo <= hits / 500 <= hi
    if seeds == 20:
        assert hits / 500 >= 0.80


@pytest.mark.parametrize("paired", [True, False])
def test_difference_interval_covers_the_truth_95_percent(paired):
    """1000 draws of a true difference 0.7: the 95% interval should cover it in 95% of draws. Binomial SE
    sqrt(.95 * .05 / 1000) = 0.69%, so 93-97% is +-2.9 SE (a correct interval fails it with probability 0.4%)."""
    rng = np.random.default_rng(3 if paired else 4)
    shared = rng.normal(0, 2.0, (1000, 8)) if paired else 0.0
    a = 0.7 + shared + rng.normal(0, 1.0, (1000, 8))
    b = shared + rng.normal(0, 1.5, (1000, 8))  # unequal spread: Welch's interval must handle it
    seeds = np.arange(8)
    comps = compare_draws(a, b, seeds, seeds if paired else seeds + 50)
    assert {c.method for c in comps} == {PAIRED if paired else WELCH}
    covered = sum(c.ci_low <= 0.7 <= c.ci_high for c in comps)
    assert 0.93 <= covered / 1000 <= 0.97


def test_group_interval_covers_the_true_mean_95_percent():
    """1000 groups of 5 runs with true mean 0.5 in one table, summarized in one call; same bound as above."""
    rng = np.random.default_rng(5)
    runs = pd.DataFrame({"cell": np.repeat(np.arange(1000), 5), "metric": rng.normal(0.5, 0.1, 5000)})
    covered = sum(s.ci_low <= 0.5 <= s.ci_high for s in summarize_groups(runs, "cell", "metric"))
    assert 0.93 <= covered / 1000 <= 0.97


def test_anova_ranks_the_real_factor_first_and_finds_no_interaction():
    """lr (3 levels, effects -1, 0, +1 SD) is real; optimizer (4 levels) and the interaction are not; 20 seeds per
    cell, noise SD 1, 20 designs. With no true interaction its sum of squares is exactly sigma^2 * chi2(df = 6), so
    it stays under chi2.ppf(0.999, 6) = 22.5 (a correct fit fails this in 0.1% of draws); the total is about
    240 (noise) + 160 (lr) = 400, so the interaction's share is about 6 / 400 = 1.5% and at most about
    22.5 / 400 = 6%. lr's sum of squares is noncentral chi2(2, 160), above ncx2.ppf(0.001) = 92 > 3 x 22.5."""
    rng = np.random.default_rng(9)
    bound = stats.chi2.ppf(0.999, 6)
    for _ in range(20):
        runs = _factorial(rng, (3, 4), 20, lambda g: g["lr"] - 1.0)
        fi = factor_importance(runs, ["lr", "optimizer"], "metric")
        assert fi.terms[0].term == "lr" and fi.terms[-1].term == "residual"
        inter = next(t for t in fi.terms if t.term == "lr x optimizer")
        assert inter.sum_sq <= bound
        assert inter.share <= bound / sum(t.sum_sq for t in fi.terms) < 0.1
        assert inter.share < fi.terms[0].share / 3


def test_best_vs_rest_marks_ties_and_worse_groups():
    """d and e (and b and c) differ by +-0.05 alternating over seeds, so their paired difference has mean 0 and p
    near 1: a certain tie; a, b, c are 6-20 noise SDs below d and e: certainly worse."""
    rng = np.random.default_rng(12)
    runs = runs_table(rng, {"a": 0.0, "b": 3.0, "c": 3.0, "d": 6.0, "e": 6.0}, seeds=10, noise_sd=0.3)
    wiggle = np.tile([0.05, -0.05], 5)
    for x, y in (("e", "d"), ("c", "b")):
        runs.loc[runs["choice"] == x, "metric"] = runs.loc[runs["choice"] == y, "metric"].to_numpy() + wiggle
    r = best_vs_rest(runs, "choice", "metric", direction="higher")
    assert r.best in ("d", "e") and set(r.ties) == {"d", "e"} - {r.best}
    other = ({"d", "e"} - {r.best}).pop()
    assert {g.summary.label: g.status for g in r.groups} == {
        "a": "worse", "b": "worse", "c": "worse", r.best: "best", other: "tie"}
    low = best_vs_rest(runs[runs["choice"] != "a"], "choice", "metric", direction="lower")
    assert low.best in ("b", "c") and set(low.ties) == {"b", "c"} - {low.best}
    assert [g.summary.label for g in r.groups][0] == r.best
    dumps(r)
    dumps(low)


# --- edge cases ---

def test_too_few_seeds_gives_no_p_value():
    c = compare([0.8, 0.9], [0.7, 0.75, 0.72])
    assert c.method is None and c.p_value is None and c.ci_low is None
    assert c.reason.startswith("too few seeds")
    s = summarize([0.8, 0.9])
    assert s.n == 2 and s.ci_low is None and s.reason.startswith("too few seeds") and s.std is not None
    runs = pd.DataFrame({"choice": list("aaabbbcc"), "seed": [0, 1, 2] * 2 + [0, 1],
                         "metric": [1, 2, 3, 5, 6, 7, 9, 9.5]})
    r = best_vs_rest(runs, "choice", "metric", direction="higher")
    assert r.best == "b"  # c has the best mean but only 2 runs: it cannot be ranked
    assert {g.summary.label: g.status for g in r.groups}["c"] == "too few seeds"
    rep = each_vs_baseline(runs, "choice", "metric", "c", direction="higher")
    assert rep.reason.startswith("the baseline has 2") and {r.mark for r in rep.rows[1:]} == {"too few seeds"}
    for x in (c, s, r, rep):
        dumps(x)
    one = summarize([0.8])
    assert one.std is None and one.ci_low is None and dumps(one)


def test_identical_groups_are_reported_as_identical_never_nan():
    same = [0.95] * 5
    c = compare(same, same, seeds_a=range(5), seeds_b=range(5))
    assert c.identical and c.difference == 0.0 and (c.ci_low, c.ci_high) == (0.0, 0.0)
    assert c.p_value is None and c.reason.startswith("identical")
    s = summarize(same)
    assert s.identical and s.mean == 0.95 and s.std == 0.0 and (s.ci_low, s.ci_high) == (0.95, 0.95)
    # zero spread but different values: the difference is exact, as measured
    e = compare([0.3] * 4, [0.1] * 4)
    assert not e.identical and e.difference == 0.3 - 0.1 and e.ci_low == e.ci_high == e.difference
    runs = pd.DataFrame({"choice": ["x"] * 4 + ["y"] * 4 + ["z"] * 4, "seed": list(range(4)) * 3,
                         "metric": [0.5] * 8 + [0.4] * 4})
    r = best_vs_rest(runs, "choice", "metric", direction="higher")
    assert (r.best, r.ties) == ("x", ("y",)) and r.groups[-1].status == "worse"
    rep = each_vs_baseline(runs, "choice", "metric", "x", direction="higher")
    assert [row.mark for row in rep.rows] == ["baseline", "identical", "worse"]
    fi = factor_importance(runs, ["choice"], "metric")
    assert fi.reason.startswith("cannot compute") and fi.terms == ()
    flat = factor_importance(runs.assign(metric=1.0), ["choice"], "metric")
    assert "same value in every usable run" in flat.reason
    for x in (c, s, e, r, rep, fi, flat):
        dumps(x)


def test_diverged_runs_are_counted_and_excluded():
    runs = pd.DataFrame({"choice": ["a"] * 6 + ["b"] * 6, "seed": list(range(6)) * 2,
                         "metric": [1.0, 2.0, 3.0, 4.0, 50.0, np.nan, 2.1, 3.0, 4.2, 5.0, 6.0, np.inf],
                         "diverged": [False, False, False, False, True, False] + [False] * 6})
    a, b = summarize_groups(runs, "choice", "metric", diverged_column="diverged")
    assert (a.n, a.n_runs, a.excluded, a.mean) == (4, 6, {"diverged": 1, "non_finite": 1}, 2.5)
    assert (b.n, b.excluded, b.mean) == (5, {"diverged": 0, "non_finite": 1}, pytest.approx(4.06))
    assert a.rule == EXCLUSION_RULE and "diverged" in a.rule
    c = each_vs_baseline(runs, "choice", "metric", "a", direction="higher",
                         diverged_column="diverged").rows[1].comparison
    # paired by seed: seeds 0-3 are usable in both; seed 4 of b lost its partner, seed 5 is unusable in both
    assert c.method == PAIRED and c.n_pairs == 4 and "left out" in c.notes[0]
    assert c.difference == pytest.approx(1.075) and c.p_value is not None
    fi = factor_importance(runs, ["choice"], "metric", diverged_column="diverged")
    assert (fi.n, fi.excluded) == (9, {"diverged": 1, "non_finite": 2})
    for x in (a, b, c, fi):
        dumps(x)


def test_unbalanced_and_incomplete_designs_say_what_was_dropped():
    rng = np.random.default_rng(21)
    runs = _factorial(rng, (3, 3), 4)
    runs["constant"] = "adam"
    # remove one whole cell: the lr x optimizer interaction cannot be estimated
    holes = runs[~((runs["lr"] == 2) & (runs["optimizer"] == 2))]
    fi = factor_importance(holes, ["lr", "optimizer", "constant"], "metric")
    dropped = {d["term"]: d["reason"] for d in fi.dropped}
    assert "one level (adam)" in dropped["constant"]
    assert "1 of 9 level combinations have no run" in dropped["lr x optimizer"]
    assert fi.factors == ("lr", "optimizer") and not fi.balanced
    assert any("1 of 9 cells empty" in n for n in fi.notes)
    assert {t.term for t in fi.terms} == {"lr", "optimizer", "residual"}
    # one run per cell: the interaction would leave no residual degrees of freedom, so it goes, with the reason
    single = factor_importance(runs[runs["seed"] == 0], ["lr", "optimizer"], "metric")
    assert "no residual degrees of freedom" in {d["term"]: d["reason"] for d in single.dropped}["lr x optimizer"]
    assert single.terms[-1].df == 9 - 5
    additive = anova_lm(smf.ols("metric ~ C(lr) + C(optimizer)", runs[runs["seed"] == 0]).fit(), typ=2)
    assert [t.sum_sq for t in sorted(single.terms[:-1], key=lambda t: t.term)] == pytest.approx(
        list(additive["sum_sq"][:2]))
    # two columns that always change together cannot be told apart, whatever the seeds
    confounded = factor_importance(runs.assign(lr_copy=runs["lr"]), ["lr", "lr_copy"], "metric")
    assert "confounded" in confounded.reason and confounded.terms == ()
    assert "lr x lr_copy" in {d["term"] for d in confounded.dropped}
    nothing = factor_importance(runs.assign(metric=np.nan), ["lr"], "metric")
    assert nothing.reason.startswith("cannot compute: no usable run") and nothing.excluded["non_finite"] == 36
    # one run per level of the only factor: nothing left to estimate noise from
    tiny = factor_importance(runs[(runs["seed"] == 0) & (runs["optimizer"] == 0)], ["lr"], "metric")
    assert tiny.reason.startswith("cannot compute") and "residual degrees of freedom" in tiny.reason
    for x in (fi, single, tiny, confounded, nothing):
        dumps(x)


def test_keys_from_the_store_lists_and_missing_values():
    """Hidden sizes arrive as arrays and fields that do not apply as None: both are group keys and levels."""
    rng = np.random.default_rng(8)
    hidden = [np.array([75]), np.array([100, 150]), None]
    runs = pd.DataFrame({"hidden": [hidden[i % 3] for i in range(18)], "seed": np.repeat(np.arange(6), 3),
                         "momentum": [None if i % 3 == 2 else 0.9 for i in range(18)],
                         "metric": rng.normal(size=18) + np.tile([0.0, 3.0, 6.0], 6)})
    labels = [s.label for s in summarize_groups(runs, "hidden", "metric")]
    assert labels == ["(75,)", "(100, 150)", "None"]
    groups = summarize_groups(runs, ["hidden", "momentum"], "metric")
    assert groups[0].key == {"hidden": (75,), "momentum": 0.9} and groups[-1].key == {"hidden": None,
                                                                                     "momentum": None}
    assert json.loads(dumps(groups[0]))["key"] == {"hidden": [75], "momentum": 0.9}
    rep = each_vs_baseline(runs, "hidden", "metric", (75,), direction="higher")
    assert rep.baseline == "(75,)" and [r.mark for r in rep.rows[1:]] == ["better", "better"]
    assert factor_importance(runs, ["hidden"], "metric").terms[0].term == "hidden"
    with pytest.raises(StatsError, match="baseline"):
        each_vs_baseline(runs, "hidden", "metric", "sgd", direction="higher")
    with pytest.raises(StatsError, match="direction"):
        best_vs_rest(runs, "hidden", "metric", direction="up")
    with pytest.raises(StatsError, match="not in the runs table"):
        summarize_groups(runs, "activation", "metric")


def test_min_seeds_is_three():
    assert MIN_SEEDS == 3


def test_engine_stats_imports_only_the_numeric_stack():
    """A library module: no Streamlit, no store, no torch (checked on the source, without paying for an import)."""
    allowed = {"__future__", "contextlib", "dataclasses", "functools", "gc", "itertools", "math", "typing",
               "warnings", "numpy", "pandas", "scipy", "statsmodels", "threadpoolctl", "engine"}
    for path in (Path(__file__).resolve().parents[1] / "engine" / "stats").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"
                assert not name.startswith("engine.") or name.startswith("engine.stats"), f"{path.name}: {name}"
