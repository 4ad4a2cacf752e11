"""What a page opens on when the URL says nothing: the most recent study, its headline metric, its factors.

Every page that compares runs (Curves, Tables, Runs, and the Factors/Report pages) asks here, so that arriving on
any of them shows the same answer: the study trained last (or the one named in the URL), ranked by the metric its
task is judged on (engine/metrics.py), with the factors that vary in it preselected, fewest levels first (a factor
with 3 levels makes a readable colour; one with 8 a readable row or facet). No Streamlit here: unit-testable.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from engine.config import ConfigError, RunConfig
from engine.metrics import goal, headline_metric
from ui.data import CONFIG_COLUMNS
from ui.filters import MISSING, fmt_series

# Columns that restate another one: n_hidden and width are functions of hidden. One of a group is offered as a
# factor when they split the runs the same way; the first listed wins.
SAME_THING = (("hidden", "n_hidden", "width"),)
NOT_FACTORS = ("seed",)


@dataclass(frozen=True)
class Defaults:
    study: str | None          # the study the page opens on (None: the store has no study)
    metric: str | None         # the headline metric of the runs' task (None: they logged nothing yet)
    goal: str                  # "max" or "min"
    factors: tuple[str, ...]   # the varying config columns, fewest levels first
    levels: tuple[int, ...] = ()  # how many levels each factor takes, in the same order

    def most_levels_first(self) -> list[str]:
        """The factors for rows of a table: the longest list reads best down the page (ties keep field order)."""
        order = {f: i for i, f in enumerate(CONFIG_COLUMNS)}
        return sorted(self.factors, key=lambda f: (-dict(zip(self.factors, self.levels))[f], order.get(f, 0)))


def latest_study(runs: pd.DataFrame) -> str | None:
    """The study whose newest member run started last (ties: the name that sorts last)."""
    if "studies" not in runs or runs.empty:
        return None
    members = runs[["studies", "started_at"]].explode("studies").dropna(subset=["studies"])
    if members.empty:
        return None
    newest = members.groupby("studies")["started_at"].max().reset_index()
    newest = newest.sort_values(["started_at", "studies"], na_position="first")
    return str(newest["studies"].iloc[-1])


def study_runs(runs: pd.DataFrame, study: str | None) -> pd.DataFrame:
    if not study or "studies" not in runs:
        return runs
    return runs[runs["studies"].map(lambda s: study in s)]


def metric_for(runs: pd.DataFrame, available: list[str]) -> str | None:
    """The headline metric of the most common task among ``runs`` (engine.metrics.headline_metric), if logged;
    else a validation accuracy or loss, else the first available."""
    if not available:
        return None
    for config_json in runs.get("config_json", pd.Series(dtype=object)).dropna().head(200):
        try:
            metric, _ = headline_metric(RunConfig.from_dict(json.loads(config_json)))
        except (ConfigError, TypeError, ValueError):
            continue
        if metric in available:
            return metric
        break
    return next((m for m in ("val_accuracy", "val_loss", "train_loss") if m in available), available[0])


def factors_of(runs: pd.DataFrame, exclude: tuple[str, ...] = NOT_FACTORS) -> list[str]:
    """Config columns that vary among ``runs``, one per group of columns that say one thing (hidden / n_hidden /
    width), ordered by number of levels (fewest first), then by the config's field order."""
    texts = {c: fmt_series(runs[c]) for c in CONFIG_COLUMNS if c in runs and c not in exclude}
    # A field that takes one value where it applies and is n/a elsewhere (class_balance across tasks) only restates
    # which runs it applies to: no factor.
    varying = [c for c, t in texts.items() if t[t != MISSING].nunique() > 1]
    for group in SAME_THING:
        present = [c for c in group if c in varying]
        for c in present[1:]:
            # Same partition of the runs: the pair takes no more distinct values than either alone.
            pairs = (texts[present[0]] + "\x1f" + texts[c]).nunique()
            if pairs == texts[present[0]].nunique() == texts[c].nunique():
                varying.remove(c)
    order = {c: i for i, c in enumerate(CONFIG_COLUMNS)}
    return sorted(varying, key=lambda c: (texts[c][texts[c] != MISSING].nunique(), order[c]))


def defaults_for(runs: pd.DataFrame, available_metrics: list[str], study: str | None = None) -> Defaults:
    """The defaults for ``runs`` (already filtered by the page, which opens on ``latest_study``): those of
    ``study``'s runs when one is given, else of all of them."""
    scope = study_runs(runs, study)
    if scope.empty:
        scope = runs
    metric = metric_for(scope, available_metrics)
    factors = factors_of(scope)
    levels = tuple(int(fmt_series(scope[f]).nunique()) for f in factors)
    return Defaults(study, metric, goal(metric) if metric else "max", tuple(factors), levels)
