"""Statistics over per-run values: which choice really wins, by how much, and how sure we are.

Pure functions (no Streamlit, no store access) over a runs table with one row per run, as
`engine.queries.final_and_best` returns it: factor columns, a metric column, `seed`, and optionally a boolean
diverged column. Formulas come from SciPy and statsmodels; every result names its method, n and exclusions, and
`to_dict()` gives its JSON form (docs/analysis-json.md).

    summarize / summarize_groups     n, mean, std, sem, 95% t (or bootstrap) interval per group
    compare                          a - b: paired by seed when the seeds match, Welch otherwise; p; Hedges' g
    holm                             Holm-corrected p-values of a family
    best_vs_rest                     the best group and the groups tied with it after Holm
    each_vs_baseline                 every group against a baseline, Holm-corrected
    factor_importance                factorial ANOVA: variance share of each factor and two-factor interaction
"""
from engine.stats._runs import EXCLUSION_RULE, MIN_SEEDS, Result, StatsError
from engine.stats.anova import AnovaTerm, FactorImportance, factor_importance
from engine.stats.compare import Comparison, compare, holm
from engine.stats.ranking import BaselineReport, BestVsRest, RankedGroup, VsBaseline, best_vs_rest, each_vs_baseline
from engine.stats.summary import GroupSummary, summarize, summarize_groups

__all__ = [
    "EXCLUSION_RULE", "MIN_SEEDS", "Result", "StatsError",
    "GroupSummary", "summarize", "summarize_groups",
    "Comparison", "compare", "holm",
    "RankedGroup", "BestVsRest", "best_vs_rest", "VsBaseline", "BaselineReport", "each_vs_baseline",
    "AnovaTerm", "FactorImportance", "factor_importance",
]
