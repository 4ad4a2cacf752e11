"""Study specs: a TOML file that declares a factorial sweep, expanded into validated run configs.

    name = "ex1-architecture"
    description = "Exercise 1, question 1: depth, width and activation"
    metric = "val_accuracy"            # decides the winner (default: the task's headline metric)
    goal = "max"                       # max | min (default: from the metric)
    seeds = [0, 1, 2]                  # or a count: seeds = 3 means [0, 1, 2]

    [base]                             # RunConfig fields shared by every cell
    task = "points"
    epochs = 10

    [factors]                          # the main grid: the cartesian product of these lists
    activation = ["sigmoid", "tanh", "relu"]
    hidden = [[75], [100, 150]]        # list fields: a list of lists
    lr = { log_range = [1e-3, 1e-1], num = 5 }   # also {range = [a, b], step = s}, {range = [a, b], num = n},
                                                 # {values = [...]}

    [[grids]]                          # more grids, each over [base] (optional; label, base and factors optional)
    label = "linear"
    base = { hidden = [], activation = "identity" }

    [[cells]]                          # single extra cells: RunConfig fields over [base] (label optional)
    label = "narrow"
    hidden = [5]

    [[answers]]                        # reference lines this study measures (optional; engine/study/finding_spec.py)
    line = "3 linear layers, relu"
    cells = { grid = "3 layers", activation = "relu" }

    [[findings]]                       # the reference's findings, in a small vocabulary (finding_spec.py)
    text = "relu > tanh > sigmoid"
    kind = "order"
    by = "activation"
    levels = ["relu", "tanh", "sigmoid"]

    [quick]                            # what `--quick` changes (optional)
    seeds = [0, 1]
    base = { epochs = 3 }              # forced onto every cell
    factors = { lr = [0.01] }          # replaces a factor's values wherever it is varied
    grids = ["main", "linear"]         # grids to keep (by label; the main grid is "main")

A *cell* is one combination of factor values; it runs once per seed. Every expanded config is built (and so
validated) when the file is loaded, before anything trains: an error names the file, the key (with its line) and
the cell (where.py finds the line; factors.py expands and checks factor values).
"""
from __future__ import annotations

import itertools
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import metrics
from engine.config import FIELD_NAMES, ConfigError, RunConfig
from engine.study.factors import factor_values, format_value, type_problem
from engine.study.where import StudyError, Where

TOP_KEYS = ("name", "description", "metric", "goal", "seeds", "base", "factors", "grids", "cells", "quick", "answers",
            "findings")
GRID_KEYS = ("label", "base", "factors")
QUICK_KEYS = ("seeds", "base", "factors", "grids")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_RUNS = 100_000


# --- the expanded study --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One run of the study: a combination of factor values (``setting``) and a seed."""
    grid: str
    setting: tuple[tuple[str, Any], ...]  # (field, value) of the grid's own base and its factors, in file order
    seed: int
    config: RunConfig
    grids: tuple[str, ...] = ()  # every grid that reached this run (the first is ``grid``): runs are trained once

    @property
    def run_id(self) -> str:
        return self.config.run_id

    @property
    def label(self) -> str:
        """The cell without its seed, e.g. ``activation=relu hidden=[100,150]`` (``grid: ...`` for extra grids)."""
        parts = " ".join(f"{k}={format_value(v)}" for k, v in self.setting) or "base"
        return parts if self.grid == "main" else f"{self.grid}: {parts}"

    @property
    def cell_key(self) -> str:
        """Equal for the seeds of one cell: the run id the config would have with seed 0."""
        return self.config.replace(seed=0).run_id


@dataclass(frozen=True)
class Grid:
    label: str
    base: dict[str, Any]                  # overrides over the study's [base]
    factors: dict[str, list[Any]]         # expanded value lists, in file order
    where: str                            # how errors name it: "[factors]", "[[grids]] #2 (linear)", ...
    kind: str = "main"                    # main | grids | cells: which table of the file declared it
    index: int = 0                        # its position among [[grids]] or [[cells]]


@dataclass(frozen=True)
class StudySpec:
    path: Path
    name: str
    description: str
    metric: str
    goal: str
    seeds: tuple[int, ...]
    base: dict[str, Any]
    grids: tuple[Grid, ...]
    quick: dict[str, Any] | None = None
    is_quick: bool = False
    runs: tuple[Cell, ...] = field(default=(), repr=False)
    text: str = field(default="", repr=False, compare=False)  # the TOML it was read from
    answers: tuple = ()       # finding_spec.Answer: reference lines it measures (checked against the full study)
    findings: tuple = ()      # finding_spec.Finding

    @property
    def study_name(self) -> str:
        """The name study membership is recorded under (``-quick`` appended in quick mode)."""
        return f"{self.name}-quick" if self.is_quick else self.name

    def configs(self) -> list[RunConfig]:
        return [c.config for c in self.runs]

    def cell_labels(self) -> list[str]:
        seen: dict[str, None] = {}
        for c in self.runs:
            seen.setdefault(c.label)
        return list(seen)

    def quick_spec(self) -> "StudySpec":
        """The spec as ``--quick`` runs it: [quick]'s seeds, forced base values, factor values and grids."""
        if self.is_quick:
            return self
        return _expand_with_findings(self.path, self._text(), self._data(), quick=True)

    def _text(self) -> str:
        return self.text or self.path.read_text()

    def _data(self) -> dict:
        return tomllib.loads(self._text())


# --- loading ---------------------------------------------------------------------------------------------------------

def load_study(path: str | Path, quick: bool = False) -> StudySpec:
    """Read, validate and expand a study file; every cell's config is built here, so a bad cell fails before any
    training. ``quick`` applies the file's [quick] table."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise StudyError(f"{path}: no such study file") from None
    except OSError as e:
        raise StudyError(f"{path}: cannot read: {e}") from None
    return load_study_text(text, path, quick)


def load_study_text(text: str, source: str | Path, quick: bool = False) -> StudySpec:
    """``load_study`` for TOML that is not in a file (the dashboard's study builder); errors name ``source``."""
    path = Path(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"{path}: not valid TOML: {e}") from None
    spec = _expand_with_findings(path, text, data, quick=False)
    if spec.quick is not None:
        quick_spec = _expand_with_findings(path, text, data, quick=True)  # validated now too, whichever mode runs
        if quick:
            return quick_spec
    return spec


def _expand_with_findings(path: Path, text: str, data: dict, quick: bool) -> StudySpec:
    """The expanded study with its [[answers]] and [[findings]], which are checked against the full study (quick
    mode drops cells, and a finding about them then reads "not run" rather than being an error)."""
    import dataclasses

    from engine.study.finding_spec import parse_answers, parse_findings
    full = _expand(path, text, data, quick=False)
    w = Where(path, text)
    answers, findings = parse_answers(w, data, full), parse_findings(w, data, full)
    spec = _expand(path, text, data, quick=True) if quick else full
    return dataclasses.replace(spec, answers=answers, findings=findings)


def _expand(path: Path, text: str, data: dict, quick: bool) -> StudySpec:
    w = Where(path, text)
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise w.error("", unknown[0], f"unknown key {unknown[0]!r}; a study file has {', '.join(TOP_KEYS)}")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise w.error("", "name", f"must be 1-64 characters of letters, digits, _ . - (starting with a letter or "
                                  f"digit), got {name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise w.error("", "description", f"must be a string, got {description!r}")

    seeds = _seeds(w, "", data.get("seeds", [0]))
    base = _table(w, "", "base", data.get("base", {}))
    _check_fields(w, "base", base, allow_seed=False)

    grids: list[Grid] = []
    has_main = "factors" in data or ("grids" not in data and "cells" not in data)
    if has_main:
        factors = _table(w, "", "factors", data.get("factors", {}))
        grids.append(Grid("main", {}, factor_values(w, "factors", factors), "[factors]"))
    raw_grids = data.get("grids", [])
    if not isinstance(raw_grids, list) or any(not isinstance(g, dict) for g in raw_grids):
        raise w.error("", "grids", "must be an array of tables: write each as [[grids]]")
    labels = {g.label for g in grids}
    for i, g in enumerate(raw_grids):
        unknown = sorted(set(g) - set(GRID_KEYS))
        if unknown:
            raise w.error("grids", unknown[0], f"unknown key {unknown[0]!r} in [[grids]] #{i + 1}; a grid has "
                                               f"{', '.join(GRID_KEYS)}", i)
        label = g.get("label", f"grid{i + 1}")
        if not isinstance(label, str) or not label or label in labels:
            raise w.error("grids", "label", f"[[grids]] #{i + 1}: label must be a non-empty string that no other "
                                            f"grid uses, got {label!r}", i)
        labels.add(label)
        gbase = _table(w, "grids", "base", g.get("base", {}), i)
        _check_fields(w, "grids.base", gbase, allow_seed=False, occurrence=i)
        gfactors = _table(w, "grids", "factors", g.get("factors", {}), i)
        grids.append(Grid(label, gbase, factor_values(w, "grids.factors", gfactors, i),
                          f"[[grids]] #{i + 1} ({label})", "grids", i))
    raw_cells = data.get("cells", [])
    if not isinstance(raw_cells, list) or any(not isinstance(c, dict) for c in raw_cells):
        raise w.error("", "cells", "must be an array of tables: write each as [[cells]]")
    for i, c in enumerate(raw_cells):
        c = dict(c)
        label = c.pop("label", f"cell{i + 1}")
        if not isinstance(label, str) or not label or label in labels:
            raise w.error("cells", "label", f"[[cells]] #{i + 1}: label must be a non-empty string that no grid "
                                            f"or cell uses, got {label!r}", i)
        labels.add(label)
        _check_fields(w, "cells", c, allow_seed=False, occurrence=i)
        grids.append(Grid(label, c, {}, f"[[cells]] #{i + 1}", "cells", i))
    if not grids:
        raise w.error("", None, "declares no cells: add [factors], [[grids]] or [[cells]]")

    quick_table = data.get("quick")
    forced: dict[str, Any] = {}
    if quick_table is not None:
        quick_table = _table(w, "", "quick", quick_table)
        unknown = sorted(set(quick_table) - set(QUICK_KEYS))
        if unknown:
            raise w.error("quick", unknown[0], f"unknown key {unknown[0]!r}; [quick] has {', '.join(QUICK_KEYS)}")
        q_seeds = _seeds(w, "quick", quick_table["seeds"]) if "seeds" in quick_table else None
        forced = _table(w, "quick", "base", quick_table.get("base", {}))
        _check_fields(w, "quick.base", forced, allow_seed=False)
        q_factors = factor_values(w, "quick.factors", _table(w, "quick", "factors", quick_table.get("factors", {})))
        varied = {name for g in grids for name in g.factors}
        for name_ in q_factors:
            if name_ not in varied:
                raise w.error("quick.factors", name_, f"{name_!r} is not a factor of any grid "
                                                      f"(factors: {', '.join(sorted(varied)) or 'none'})")
        keep = quick_table.get("grids")
        if keep is not None:
            if not isinstance(keep, list) or not keep or any(not isinstance(k, str) for k in keep):
                raise w.error("quick", "grids", f"must be a non-empty list of grid labels, got {keep!r}")
            missing = [k for k in keep if k not in {g.label for g in grids}]
            if missing:
                raise w.error("quick", "grids", f"no grid labelled {missing[0]!r}; grids: "
                                                f"{', '.join(g.label for g in grids)}")
        if quick:
            if q_seeds is not None:
                seeds = q_seeds
            if keep is not None:
                grids = [g for g in grids if g.label in keep]
            grids = [Grid(g.label, g.base, {k: q_factors.get(k, v) for k, v in g.factors.items()}, g.where,
                          g.kind, g.index) for g in grids]
    elif quick:
        forced = {}

    runs = _cells(w, base, grids, seeds, forced if quick else {})
    metric, goal = _metric(w, data, runs)
    return StudySpec(path=path, name=name, description=description, metric=metric, goal=goal, seeds=seeds,
                     base=base, grids=tuple(grids), quick=quick_table, is_quick=quick and quick_table is not None,
                     runs=tuple(runs), text=text)


def _table(w: Where, parent: str, key: str, value: Any, occurrence: int = 0) -> dict:
    if not isinstance(value, dict):
        raise w.error(parent, key, f"must be a table ([{key}] or {key} = {{ ... }}), got {value!r}", occurrence)
    return dict(value)


def _seeds(w: Where, table: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= 10_000:
            raise w.error(table, "seeds", f"a count of seeds must be 1..10000, got {value}")
        return tuple(range(value))
    if not isinstance(value, list) or not value:
        raise w.error(table, "seeds", f"must be a non-empty list of seeds (or a count), got {value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise w.error(table, "seeds", f"seeds must be integers >= 0, got {v!r}")
    if len(set(value)) != len(value):
        raise w.error(table, "seeds", f"seeds repeat: {value}")
    return tuple(value)


def _check_fields(w: Where, table: str, values: dict, allow_seed: bool, occurrence: int = 0) -> None:
    for key, value in values.items():
        if key == "seed" and not allow_seed:
            raise w.error(table, key, "seed is set by the study's `seeds` list, not per cell", occurrence)
        if key not in FIELD_NAMES:
            raise w.error(table, key, f"unknown config field {key!r}; fields: {', '.join(sorted(FIELD_NAMES))}",
                          occurrence)
        reason = type_problem(key, value)
        if reason:
            raise w.error(table, key, reason, occurrence)




def _cells(w: Where, base: dict, grids: list[Grid], seeds: tuple[int, ...], forced: dict) -> list[Cell]:
    runs: list[Cell] = []
    seen: dict[str, int] = {}
    total = sum(math.prod(len(v) for v in g.factors.values()) for g in grids) * len(seeds)
    if total > MAX_RUNS:
        raise StudyError(f"{w.path}: the study expands to {total} runs; at most {MAX_RUNS}")
    for grid in grids:
        names = list(grid.factors)
        for combo in itertools.product(*(grid.factors[n] for n in names)):
            setting = tuple(grid.base.items()) + tuple(zip(names, combo))
            values = {**base, **grid.base, **dict(zip(names, combo)), **forced}
            for seed in seeds:
                try:
                    config = RunConfig.from_dict({**values, "seed": seed}, source="cell")
                except ConfigError as e:
                    shown = " ".join(f"{k}={format_value(v)}" for k, v in setting) or "the base config"
                    raise StudyError(f"{w.path}: {grid.where}{_blame(w, e, base, grid, forced)}: cell {{{shown}}} "
                                     f"(seed {seed}) is not a valid config: {e}") from None
                at = seen.get(config.run_id)
                if at is not None:  # the same run reached twice (e.g. a grid overlapping another): train it once
                    first = runs[at]
                    if grid.label not in first.grids:
                        runs[at] = Cell(first.grid, first.setting, first.seed, first.config,
                                        first.grids + (grid.label,))
                    continue
                seen[config.run_id] = len(runs)
                runs.append(Cell(grid.label, setting, seed, config, (grid.label,)))
    return runs


def _blame(w: Where, error: ConfigError, base: dict, grid: Grid, forced: dict) -> str:
    """`, key K (line L)` of the table entry that set the field a ConfigError names first, or ''."""
    words = re.findall(r"[A-Za-z_]+", str(error))
    field_name = next((x for x in words if x in FIELD_NAMES), None)
    if field_name is None:
        return ""
    if field_name in forced:
        table, occurrence = "quick.base", 0
    elif field_name in grid.factors:
        table, occurrence = ("factors", 0) if grid.kind == "main" else ("grids.factors", grid.index)
    elif field_name in grid.base:
        table, occurrence = ("grids.base", grid.index) if grid.kind == "grids" else ("cells", grid.index)
    elif field_name in base:
        table, occurrence = "base", 0
    else:
        return f", {field_name} (default)"
    line = w.line_of(table, field_name, occurrence)
    return f", {table}.{field_name}" + (f" (line {line})" if line else "")


def _metric(w: Where, data: dict, runs: list[Cell]) -> tuple[str, str]:
    first = runs[0].config
    metric = data.get("metric", metrics.headline_metric(first)[0])
    if not isinstance(metric, str):
        raise w.error("", "metric", f"must be a metric name, got {metric!r}")
    for cell in runs:
        available = metrics.logged_metrics(cell.config)
        if metric not in available:
            raise w.error("", "metric", f"cell {{{cell.label}}} does not log {metric!r}; it logs "
                                        f"{', '.join(sorted(available))}")
    if "goal" in data:
        goal = data["goal"]
        if goal not in ("max", "min"):
            raise w.error("", "goal", f"must be max or min, got {goal!r}")
    else:
        goal = metrics.goal(metric)
    return metric, goal
