"""What a study file says about the reference study: the reference lines it answers and its findings, as data.

    [[answers]]                                  # a line of studies/reference/reference-results.csv measured here
    line = "3 linear layers, relu"               # the line's `setting`, exactly
    cells = { grid = "3 layers", activation = "relu" }
    metric = "val_accuracy"                      # optional (default: the study's metric); see METRICS below
    scale = 100                                  # optional: to the reference's unit (percent)
    note = "..."                                 # optional

    [[findings]]
    text = "relu > tanh > sigmoid"               # the statement, as the report prints it
    kind = "order"                               # one of KINDS
    cells = { grid = "3 layers" }                # optional: the runs it is about (default: every cell)
    by = "activation"                            # order/best: the factor whose levels are compared
    levels = ["relu", "tanh", "sigmoid"]         # order: best first

A *selection* (``cells``, ``a``, ``b``, ``or_worse_than``) is a table of config fields and values (a value may be
``{ in = [v1, v2] }``), plus optionally ``grid`` (a grid or cell label), ``study`` (another study's name, checked
when the reference study loads), ``metric`` (this side's metric) and ``pick = "best"`` (the best cell of the
selection instead of all its runs pooled). ``a`` and ``b`` are taken within ``cells``.

Metrics (``metric``): a logged metric ``val_accuracy`` (its last epoch; ``test_*`` from the run's summary),
``val_accuracy@1`` (epoch 1), ``best(val_accuracy)`` (its best epoch), ``rise(val_nll)`` (last minus best: how far it
came back after its best), ``epochs_to(val_accuracy >= 0.995)`` (first epoch reaching it; a run that never does
counts as epochs + 1). Lower is better for rise and epochs_to; otherwise metrics.goal decides, unless ``better``.

Kinds and their keys (``per`` = a factor or list of factors: the finding holds in each group of their levels,
``require`` = all | most | any of the groups, default all):

    order      by, levels [, pick]              each level beats the next
    beats      a, b [, margin]                  a beats b (by more than margin; a negative margin: "not worse by")
    best       by, expect [, pick]              the best level is one of `expect` (pick: best cell per level,
                                                default; or "pool")
    threshold  above | below [, best_seed]      the mean (or the best seed's value) is above / below
    diverges   [expect, runs, or_worse_than]    the runs diverge (runs = "all", default, or "some"; expect = false:
                                                none does); with or_worse_than, when they do not, the runs that
                                                completed must end worse than that selection
    close      a, b, within                     a and b differ by less than `within`

Every entry is checked when the file loads (engine/study/spec.py calls ``parse``): an unknown key, kind, metric,
grid label, field or level is an error naming the file, the entry and the key.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from engine import metrics
from engine.config import FIELD_NAMES
from engine.study.factors import format_value
from engine.study.where import StudyError, Where

KINDS = ("order", "beats", "best", "threshold", "diverges", "close")
COMMON_KEYS = ("text", "kind", "metric", "cells", "per", "require", "better", "note")
KIND_KEYS = {
    "order": ("by", "levels", "pick"),
    "beats": ("a", "b", "margin"),
    "best": ("by", "expect", "pick"),
    "threshold": ("above", "below", "best_seed"),
    "diverges": ("expect", "runs", "or_worse_than"),
    "close": ("a", "b", "within"),
}
REQUIRED = {"order": ("by", "levels"), "beats": ("a", "b"), "best": ("by", "expect"), "threshold": (),
            "diverges": (), "close": ("a", "b", "within")}
ANSWER_KEYS = ("line", "cells", "metric", "scale", "note")
SELECTION_KEYS = ("grid", "study", "metric", "pick")
REQUIRE = ("all", "most", "any")

_METRIC_RE = re.compile(r"^\s*(?:(?P<fn>best|rise)\(\s*(?P<fbase>\w+)\s*\)"
                        r"|epochs_to\(\s*(?P<ebase>\w+)\s*(?P<op>>=|<=)\s*(?P<value>[-+0-9.eE]+)\s*\)"
                        r"|(?P<base>\w+)(?:@(?P<epoch>\d+))?)\s*$")


@dataclass(frozen=True)
class Metric:
    """A per-run value derived from a logged metric (see the module docstring)."""
    text: str
    base: str
    mode: str = "final"          # final | epoch | best | rise | epochs_to
    epoch: int | None = None
    op: str | None = None
    value: float | None = None

    @property
    def goal(self) -> str:
        return "min" if self.mode in ("rise", "epochs_to") else metrics.goal(self.base)

    @property
    def per_epoch(self) -> bool:
        return self.mode != "final"


def parse_metric(text: Any) -> Metric | None:
    if not isinstance(text, str):
        return None
    m = _METRIC_RE.match(text)
    if not m:
        return None
    if m["fn"]:
        return Metric(text, m["fbase"], m["fn"])
    if m["ebase"]:
        try:
            return Metric(text, m["ebase"], "epochs_to", op=m["op"], value=float(m["value"]))
        except ValueError:
            return None
    if m["epoch"]:
        return Metric(text, m["base"], "epoch", epoch=int(m["epoch"])) if int(m["epoch"]) >= 1 else None
    return Metric(text, m["base"])


@dataclass(frozen=True)
class Selection:
    """Which runs one side of a finding reads: config fields (a value, or a tuple of alternatives) and a grid."""
    where: tuple[tuple[str, Any], ...] = ()
    grid: str | None = None
    study: str | None = None
    metric: Metric | None = None
    pick: str = "pool"           # pool: every run of the selected cells; best: the best cell's runs

    def merged(self, other: "Selection") -> "Selection":
        """``other`` taken within this selection (its fields and grid win where both set them)."""
        return Selection(tuple({**dict(self.where), **dict(other.where)}.items()), other.grid or self.grid,
                         other.study or self.study, other.metric or self.metric,
                         other.pick if other.pick != "pool" else self.pick)

    def with_fields(self, **values: Any) -> "Selection":
        return Selection(tuple({**dict(self.where), **values}.items()), self.grid, self.study, self.metric, self.pick)

    def describe(self) -> str:
        parts = ([f"[{self.grid}]"] if self.grid else []) + [
            f"{k}={'|'.join(format_value(x) for x in v) if isinstance(v, tuple) else format_value(v)}"
            for k, v in self.where]
        if self.study:
            parts.insert(0, self.study)
        if self.pick == "best":
            parts.append("best cell")
        return " ".join(parts) or "all cells"


@dataclass(frozen=True)
class Answer:
    line: str
    cells: Selection
    metric: Metric
    scale: float = 1.0
    note: str = ""
    index: int = 0


@dataclass(frozen=True)
class Finding:
    text: str
    kind: str
    metric: Metric
    cells: Selection
    index: int = 0
    per: tuple[str, ...] = ()
    require: str = "all"
    better: str | None = None
    note: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # the kind's own keys, parsed

    @property
    def goal(self) -> str:
        return self.better or self.metric.goal


class _Checker:
    """Parses and checks one [[answers]] or [[findings]] entry; errors name the file, the entry and the key."""

    def __init__(self, w: Where, table: str, index: int, entry: dict, spec, label: str):
        self.w, self.table, self.index, self.entry, self.spec = w, table, index, entry, spec
        self.label = label

    def error(self, key: str | None, reason: str) -> StudyError:
        return self.w.error(self.table, key, f"[[{self.table}]] #{self.index + 1} ({self.label}): {reason}",
                            self.index)

    def metric(self, key: str, value: Any, cells: list | None) -> Metric:
        m = parse_metric(value)
        if m is None:
            raise self.error(key, f"not a metric: {value!r}; write a logged metric (val_accuracy), one epoch of it "
                                  f"(val_accuracy@1), best(...), rise(...) or epochs_to(val_accuracy >= 0.99)")
        for cell in cells or ():
            logged = metrics.logged_metrics(cell.config)
            if m.base not in logged:
                raise self.error(key, f"cell {{{cell.label}}} does not log {m.base!r}; it logs "
                                      f"{', '.join(sorted(logged))}")
        if m.per_epoch and m.base.startswith("test_"):
            raise self.error(key, f"{m.text!r}: test metrics are measured once, after training; per-epoch forms "
                                  f"(@N, best, rise, epochs_to) need a train_* or val_* metric")
        return m

    def selection(self, key: str, value: Any, within: Selection | None = None) -> Selection:
        if not isinstance(value, dict):
            raise self.error(key, f"must be a table of config fields (e.g. {key} = {{ lr = 0.1 }}), got {value!r}")
        grid, study, pick, metric_text = (value.get(k) for k in ("grid", "study", "pick", "metric"))
        if study is not None and (not isinstance(study, str) or not study):
            raise self.error(key, f"study must be a study name, got {study!r}")
        foreign = study is not None and study != self.spec.name
        own = within if within is not None and not foreign else Selection()
        if grid is not None:
            labels = [g.label for g in self.spec.grids]
            if not isinstance(grid, str):
                raise self.error(key, f"grid must be a grid label, got {grid!r}")
            if not foreign and grid not in labels:
                raise self.error(key, f"no grid labelled {grid!r}; grids: {', '.join(labels)}")
        if pick not in (None, "pool", "best"):
            raise self.error(key, f"pick must be \"best\" or \"pool\", got {pick!r}")
        where: dict[str, Any] = {}
        for name, v in value.items():
            if name in SELECTION_KEYS:
                continue
            if name not in FIELD_NAMES:
                raise self.error(key, f"{name!r} is not a config field (nor {', '.join(SELECTION_KEYS)}); fields: "
                                      f"{', '.join(sorted(FIELD_NAMES))}")
            if isinstance(v, dict):
                if set(v) != {"in"} or not isinstance(v["in"], list) or not v["in"]:
                    raise self.error(key, f"{name}: a table value must be {{ in = [v1, v2, ...] }}, got {v!r}")
                where[name] = tuple(v["in"])
            else:
                where[name] = v
        sel = own.merged(Selection(tuple(where.items()), grid, study, None, pick or "pool"))
        cells = None
        if not foreign:
            cells = self._cells(key, sel)
        if metric_text is not None:
            sel = Selection(sel.where, sel.grid, sel.study, self.metric(f"{key}.metric", metric_text, cells),
                            sel.pick)
        return sel

    def _cells(self, key: str, sel: Selection) -> list:
        """The cells of the (full) study the selection matches; an error names the first key that matches none."""
        cells = [c for c in self.spec.runs if matches(c, sel)]
        if cells:
            return cells
        pool = [c for c in self.spec.runs if sel.grid is None or sel.grid in c.grids]
        for name, v in sel.where:
            seen = sorted({format_value(norm_value(getattr(c.config, name))) for c in pool}, key=str)
            narrowed = [c for c in pool if matches(c, Selection(((name, v),)))]
            if not narrowed:
                shown = "|".join(format_value(x) for x in v) if isinstance(v, tuple) else format_value(v)
                raise self.error(key, f"no cell{f' of grid {sel.grid!r}' if sel.grid else ''} has {name}={shown}; "
                                      f"its values there: {', '.join(seen)}")
            pool = narrowed
        raise self.error(key, f"selects no cell: {sel.describe()}")

    def number(self, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.error(key, f"must be a number, got {value!r}")
        return float(value)

    def string(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string, got {value!r}")
        return value


def norm_value(v: Any) -> Any:
    """A config value as the TOML writes it: list fields are tuples in a RunConfig, lists in a file."""
    return list(v) if isinstance(v, tuple) else v


def matches(cell, sel: Selection) -> bool:
    """Whether ``cell`` (a spec.Cell) is one of the selection's cells: its grid label and config fields (a tuple
    value is a set of alternatives)."""
    if sel.grid is not None and sel.grid not in cell.grids:
        return False
    for name, want in sel.where:
        have = norm_value(getattr(cell.config, name))
        options = want if isinstance(want, tuple) else (want,)
        if not any(have == norm_value(o) for o in options):
            return False
    return True


def _entries(w: Where, data: dict, table: str) -> list[dict]:
    raw = data.get(table, [])
    if not isinstance(raw, list) or any(not isinstance(e, dict) for e in raw):
        raise w.error("", table, f"must be an array of tables: write each as [[{table}]]")
    return raw


def parse_answers(w: Where, data: dict, spec) -> tuple[Answer, ...]:
    out = []
    for i, entry in enumerate(_entries(w, data, "answers")):
        c = _Checker(w, "answers", i, entry, spec, repr(entry.get("line", "?")))
        unknown = sorted(set(entry) - set(ANSWER_KEYS))
        if unknown:
            raise c.error(unknown[0], f"unknown key {unknown[0]!r}; an answer has {', '.join(ANSWER_KEYS)}")
        if "line" not in entry:
            raise c.error(None, "needs line = the reference line's `setting`")
        line = c.string("line", entry["line"])
        cells = c.selection("cells", entry.get("cells", {}))
        metric = cells.metric or c.metric("metric", entry.get("metric", spec.metric), c._cells("cells", cells))
        scale = c.number("scale", entry.get("scale", 1.0))
        note = c.string("note", entry["note"]) if "note" in entry else ""
        out.append(Answer(line, cells, metric, scale, note, i))
    return tuple(out)


def parse_findings(w: Where, data: dict, spec) -> tuple[Finding, ...]:
    out = []
    for i, entry in enumerate(_entries(w, data, "findings")):
        c = _Checker(w, "findings", i, entry, spec, repr(entry.get("text", "?")))
        text = c.string("text", entry.get("text"))
        kind = entry.get("kind")
        if kind not in KINDS:
            raise c.error("kind", f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
        allowed = COMMON_KEYS + KIND_KEYS[kind]
        unknown = sorted(set(entry) - set(allowed))
        if unknown:
            raise c.error(unknown[0], f"unknown key {unknown[0]!r} for kind {kind!r}; it has {', '.join(allowed)}")
        for key in REQUIRED[kind]:
            if key not in entry:
                raise c.error(None, f"kind {kind!r} needs {key!r}")
        cells = c.selection("cells", entry.get("cells", {}))
        metric = c.metric("metric", entry.get("metric", spec.metric), c._cells("cells", cells))
        per = entry.get("per", ())
        per = (per,) if isinstance(per, str) else per
        if not isinstance(per, (list, tuple)) or any(p not in FIELD_NAMES for p in per):
            raise c.error("per", f"must be a config field or a list of them, got {entry.get('per')!r}")
        require = entry.get("require", "all")
        if require not in REQUIRE:
            raise c.error("require", f"must be one of {', '.join(REQUIRE)}, got {require!r}")
        better = entry.get("better")
        if better not in (None, "max", "min"):
            raise c.error("better", f"must be max or min, got {better!r}")
        note = c.string("note", entry["note"]) if "note" in entry else ""
        options = _kind_options(c, kind, entry, cells)
        out.append(Finding(text, kind, metric, cells, i, tuple(per), require, better, note, options))
    return tuple(out)


def _kind_options(c: _Checker, kind: str, entry: dict, cells: Selection) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if kind in ("order", "best"):
        by = entry["by"]
        if by not in FIELD_NAMES:
            raise c.error("by", f"{by!r} is not a config field")
        key = "levels" if kind == "order" else "expect"
        levels = entry[key]
        if not isinstance(levels, list) or len(levels) < (2 if kind == "order" else 1):
            raise c.error(key, f"must be a list of {by} values ({'two or more' if kind == 'order' else 'one or more'})"
                               f", got {levels!r}")
        for level in levels:
            c.selection(key, {by: level}, within=cells)  # an unknown level is an error naming it
        opts.update(by=by, levels=tuple(levels), pick=entry.get("pick", "best" if kind == "best" else "pool"))
        if opts["pick"] not in ("best", "pool"):
            raise c.error("pick", f"must be \"best\" or \"pool\", got {opts['pick']!r}")
    if kind in ("beats", "close"):
        opts["a"] = c.selection("a", entry["a"], within=cells)
        opts["b"] = c.selection("b", entry["b"], within=cells)
    if kind == "beats":
        opts["margin"] = c.number("margin", entry.get("margin", 0.0))
    if kind == "close":
        opts["within"] = c.number("within", entry["within"])
        if opts["within"] <= 0:
            raise c.error("within", f"must be > 0, got {entry['within']!r}")
    if kind == "threshold":
        sides = [k for k in ("above", "below") if k in entry]
        if len(sides) != 1:
            raise c.error(None, "kind 'threshold' needs exactly one of above = X or below = X")
        opts["side"], opts["value"] = sides[0], c.number(sides[0], entry[sides[0]])
        opts["best_seed"] = entry.get("best_seed", False)
        if not isinstance(opts["best_seed"], bool):
            raise c.error("best_seed", f"must be true or false, got {opts['best_seed']!r}")
    if kind == "diverges":
        opts["expect"] = entry.get("expect", True)
        if not isinstance(opts["expect"], bool):
            raise c.error("expect", f"must be true (the runs diverge) or false (none does), got {opts['expect']!r}")
        opts["runs"] = entry.get("runs", "all")
        if opts["runs"] not in ("all", "some"):
            raise c.error("runs", f"must be \"all\" or \"some\", got {opts['runs']!r}")
        if "or_worse_than" in entry:
            opts["or_worse_than"] = c.selection("or_worse_than", entry["or_worse_than"], within=cells.with_fields())
    return opts


def check_references(specs: dict, reference_lines: set[str]) -> None:
    """Across the loaded studies: every ``study =`` names a loaded study whose cells the selection matches, and
    every answered line is a line of the reference (once). Errors name the file and the entry."""
    answered: dict[str, str] = {}
    for spec in specs.values():
        w = Where(spec.path, spec._text())
        for a in spec.answers:
            c = _Checker(w, "answers", a.index, {}, spec, repr(a.line))
            if a.line not in reference_lines:
                raise c.error("line", f"{a.line!r} is not a `setting` of the reference results")
            if a.line in answered:
                raise c.error("line", f"{a.line!r} is answered by {answered[a.line]} already")
            answered[a.line] = str(spec.path)
        for f in spec.findings:
            c = _Checker(w, "findings", f.index, {}, spec, repr(f.text))
            for key in ("a", "b", "or_worse_than"):
                sel = f.options.get(key)
                if sel is None or sel.study is None or sel.study == spec.name:
                    continue
                other = next((s for s in specs.values() if s.name == sel.study), None)
                if other is None:
                    raise c.error(key, f"no study named {sel.study!r}; studies: "
                                       f"{', '.join(s.name for s in specs.values())}")
                _Checker(w, "findings", f.index, {}, other, repr(f.text))._cells(key, Selection(
                    sel.where, sel.grid))
