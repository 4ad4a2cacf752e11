"""``python -m engine reproduce``: run the reference study's studies and write the report.

The reference (``../shared/reference/``) is a four-exercise study: ``reference-study.txt`` (the write-up) and
``reference-results.csv`` (its numbers). ``studies/ex{1..4}_{architecture,optimizer,loss,test}.toml`` hold one study
per question, with the study's own choices as the base. This module

1. runs them all (``--quick``: each file's [quick] table: fewer epochs, seeds and cells), sharing one pool of
   training processes;
2. builds the report from the store, never from hard-coded numbers: for every line of the reference CSV, the
   reference value beside the value measured here (mean +- sample std over seeds, n) and a note; then each of the
   study's qualitative findings as a check, PASS or FAIL, with the numbers behind it.

Data sets differ from the study's (circles points, the 5,000-digit MNIST sample, scikit-learn's diabetes and a
synthetic 1-D set), so numbers may differ; the report says so and shows both.
"""
from __future__ import annotations

import csv
import datetime
import math
import os
import platform
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.study.results import metric_value, read_runs
from engine.study.spec import Cell, StudyError, StudySpec, load_study

REPO = Path(__file__).resolve().parents[2]
STUDIES_DIR = REPO / "studies"
# A copy of ../shared/reference/reference-results.csv ships in the repository, so a clone reproduces on its own.
REFERENCE_DIR = STUDIES_DIR / "reference"
QUESTIONS = ("architecture", "optimizer", "loss", "test")
STUDY_FILES = tuple(f"ex{e}_{q}.toml" for e in range(1, 5) for q in QUESTIONS)


# --- the studies' data, read from the store --------------------------------------------------------------------------

def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass
class StudyData:
    """One study's cells with their runs' records from the store."""
    spec: StudySpec
    store: Any
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    _curves: dict[str, dict[str, list]] = field(default_factory=dict)

    @classmethod
    def load(cls, spec: StudySpec, store) -> "StudyData":
        return cls(spec, store, read_runs(store, [c.run_id for c in spec.runs]))

    def cells(self, grid: str | None = None, **where: Any) -> list[Cell]:
        out = []
        for cell in self.spec.runs:
            if grid is not None and grid not in cell.grids:
                continue
            config = cell.config.to_dict()
            if all(_norm(config.get(k)) == _norm(v) for k, v in where.items()):
                out.append(cell)
        return out

    def status_counts(self, grid: str | None = None, **where: Any) -> dict[str, int]:
        counts: dict[str, int] = {}
        for cell in self.cells(grid, **where):
            rec = self.records.get(cell.run_id)
            s = rec["status"] if rec else "missing"
            counts[s] = counts.get(s, 0) + 1
        return counts

    def values(self, metric: str, grid: str | None = None, **where: Any) -> list[float]:
        """The metric of every completed run of the matching cells (last epoch, or summary for test_*)."""
        out = []
        for cell in self.cells(grid, **where):
            rec = self.records.get(cell.run_id)
            if rec and rec["status"] == "completed":
                v = metric_value(rec, metric)
                if v is not None and math.isfinite(v):
                    out.append(v)
        return out

    def curves(self, metric: str, grid: str | None = None, **where: Any) -> list[list[float | None]]:
        """Per finished run (completed or diverged) of the matching cells: the metric's value at each epoch."""
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
        return [self._curves[metric][c.run_id] for c in self.cells(grid, **where)
                if c.run_id in self._curves[metric]]


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def epochs_to(curve: list[float | None], threshold: float) -> float:
    """Epochs (1-based) until the value first reaches ``threshold``; inf when it never does."""
    for i, v in enumerate(curve):
        if v is not None and v >= threshold:
            return float(i + 1)
    return math.inf


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _fmt_epochs(x: float) -> str:
    return "never" if math.isinf(x) else f"{x:g}"


# --- the rows of the reference CSV ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """Where the value of one reference line is measured: a study, the cells (grid label and config fields), the
    metric and the factor that converts it to the reference's unit."""
    study: str
    metric: str
    where: dict[str, Any]
    grid: str | None = None
    scale: float = 1.0
    note: Callable[[dict[str, StudyData]], str] | None = None


def _ex1_adam50_note(d: dict[str, StudyData]) -> str:
    s = d["ex1-optimizer"]
    parts = []
    for bs in (5, 10, 20):
        m, _ = mean_std(s.values("val_accuracy", grid="adam 50 epochs", batch_size=bs))
        parts.append(f"batch {bs}: {m * 100:.2f}" if m is not None else f"batch {bs}: -")
    return "; ".join(parts)


def _ex1_bce_note(d: dict[str, StudyData]) -> str:
    s = d["ex1-loss"]
    parts = []
    for loss in ("bce", "mse"):
        curves = s.curves("val_accuracy", loss=loss)
        hits = [epochs_to(c, 0.995) for c in curves]
        reached = sum(1 for h in hits if h <= 10)
        parts.append(f"{loss}: {reached}/{len(hits)} runs reach >= 99.5% (median epoch "
                     f"{_fmt_epochs(_median(hits))})")
    return "; ".join(parts) + "; value: best epoch of each BCE run"


def _ex2_clip_note(d: dict[str, StudyData]) -> str:
    s = d["ex2-loss"]
    out = []
    for label, kw in (("lr 0.1", dict(lr=0.1, grad_clip=None)), ("lr 0.1 clipped", dict(grad_clip=1.0))):
        counts = s.status_counts(**kw)
        m, _ = mean_std(s.values("val_accuracy", **kw))
        val = f"{m * 100:.2f}" if m is not None else "-"
        out.append(f"{label}: {val} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    return "; ".join(out)


def _ex4_nll_note(split: str) -> Callable[[dict[str, StudyData]], str]:
    def note(d: dict[str, StudyData]) -> str:
        study = "ex4-loss" if split == "val" else "ex4-test"
        s = d[study]
        m, sd = mean_std(s.values(f"{split}_nll", dataset="diabetes", lr=0.001))
        return ("value on hetero1d (1-D, noise grows with |x|); on diabetes: "
                + (f"{m:.3f} +- {sd:.2f}" if m is not None else "-"))
    return note


def _best_cells(s: StudyData, grid: str, metric: str, by: str) -> dict[str, tuple[float, float]]:
    """For each value of config field ``by`` in the grid: (lr, mean metric) of its best learning rate."""
    best: dict[str, tuple[float, float]] = {}
    for cell in s.cells(grid):
        key, lr = getattr(cell.config, by), cell.config.lr
        m = _m(s, metric, grid, **{by: key, "lr": lr})
        if m is not None and (key not in best or m > best[key][1]):
            best[key] = (lr, m)
    return best


def _ex2_best_lr_note(grid: str, **where) -> Callable[[dict[str, StudyData]], str]:
    def note(d: dict[str, StudyData]) -> str:
        s = d["ex2-optimizer"]
        vals = {c.config.lr: None for c in s.cells(grid, **where)}
        vals = {lr: _m(s, "val_accuracy", grid, lr=lr, **where) for lr in vals}
        known = {lr: v for lr, v in vals.items() if v is not None}
        if not known:
            return ""
        lr = max(known, key=known.get)
        return f"same cell, best SGD lr here: {lr:g}: {known[lr] * 100:.2f} (fewer steps per epoch than the study)"
    return note


def _bce_best(d: dict[str, StudyData]) -> list[float]:
    return [max(v for v in c if v is not None) for c in d["ex1-loss"].curves("val_accuracy", loss="bce")
            if any(v is not None for v in c)]


ROWS: dict[tuple[str, str, str], Row] = {
    ("1", "architecture", "1 linear layer (linear model), MSE loss"):
        Row("ex1-architecture", "val_accuracy", {}, grid="linear", scale=100),
    ("1", "architecture", "2 linear layers, tanh, ~75 hidden"):
        Row("ex1-architecture", "val_accuracy", {"hidden": [75], "activation": "tanh"}, grid="main", scale=100),
    ("1", "architecture", "3 linear layers, sigmoid"):
        Row("ex1-architecture", "val_accuracy", {"activation": "sigmoid"}, grid="3 layers", scale=100),
    ("1", "architecture", "3 linear layers, tanh"):
        Row("ex1-architecture", "val_accuracy", {"activation": "tanh"}, grid="3 layers", scale=100),
    ("1", "architecture", "3 linear layers, relu"):
        Row("ex1-architecture", "val_accuracy", {"activation": "relu"}, grid="3 layers", scale=100),
    ("1", "optimizer", "2 layers tanh 75 hidden, Adam lr=0.01"):
        Row("ex1-optimizer", "val_accuracy", {"optimizer": "adam", "lr": 0.01}, grid="main", scale=100),
    ("1", "optimizer", "2 layers tanh 75 hidden, RMSprop lr=0.005"):
        Row("ex1-optimizer", "val_accuracy", {"optimizer": "rmsprop", "lr": 0.005}, grid="main", scale=100),
    ("1", "optimizer", "Adam, 50 epochs, batch 5/10/20"):
        Row("ex1-optimizer", "val_accuracy", {}, grid="adam 50 epochs", scale=100, note=_ex1_adam50_note),
    ("1", "loss", "BCEWithLogits, Adam, 75 hidden: every batch size >=99.5% in <10 epochs"):
        Row("ex1-loss", "best:val_accuracy", {"loss": "bce"}, scale=100, note=_ex1_bce_note),
    ("1", "test", "2 layers 75 hidden, Adam lr=0.05, BCEWithLogits, batch 40, 10 epochs"):
        Row("ex1-test", "test_accuracy", {}, scale=100),
    ("2", "architecture", "1 linear layer + softmax"):
        Row("ex2-architecture", "val_accuracy", {}, grid="linear", scale=100),
    ("2", "architecture", "3 conv layers (10 channels, maxpool between), tanh"):
        Row("ex2-architecture", "val_accuracy", {"channels": [10, 10, 10], "activation": "tanh"},
            grid="2-3 conv layers", scale=100),
    ("2", "optimizer", "3 conv layers, 20 channels, SGD lr=0.1, batch 10"):
        Row("ex2-optimizer", "val_accuracy", {"channels": [20, 20, 20], "lr": 0.1, "batch_size": 10}, grid="main",
            scale=100, note=_ex2_best_lr_note("main", channels=[20, 20, 20], batch_size=10)),
    ("2", "optimizer", "same, 20 epochs, SGD lr=0.1"):
        Row("ex2-optimizer", "val_accuracy", {"optimizer": "sgd", "lr": 0.1}, grid="20 epochs", scale=100,
            note=_ex2_best_lr_note("20 epochs", optimizer="sgd")),
    ("2", "loss", "cross-entropy, SGD lr=0.025, 50 epochs (lr=0.1 exploded; clipping alone did not help)"):
        Row("ex2-loss", "val_accuracy", {"lr": 0.025}, grid="main", scale=100, note=_ex2_clip_note),
    ("2", "test", "best model above"):
        Row("ex2-test", "test_accuracy", {}, scale=100),
    ("3", "test", "3 conv (k=5,3,3) + linear per head, no sharing, maxpool+relu, Adam 1e-3 cosine to 1e-5, batch 64, "
                  "cross-entropy: digit head"):
        Row("ex3-test", "test_digit_accuracy", {}, scale=100),
    ("3", "test", "same: color head"):
        Row("ex3-test", "test_color_accuracy", {}, scale=100),
    ("3", "test", "same: both heads right"):
        Row("ex3-test", "test_accuracy", {}, scale=100),
    ("4", "architecture", "3 layers x 5 neurons, tanh (normalized data; unnormalized explodes)"):
        Row("ex4-architecture", "val_mse", {"hidden": [5, 5], "activation": "tanh"}, grid="main"),
    ("4", "architecture", "5 layers x 20 neurons, tanh"):
        Row("ex4-architecture", "val_mse", {"hidden": [20, 20, 20, 20]}, grid="width"),
    ("4", "architecture", "3 layers x 6 neurons, tanh"):
        Row("ex4-architecture", "val_mse", {"hidden": [6, 6]}, grid="width"),
    ("4", "optimizer", "5 layers x 10 neurons, batch 10, lr=0.1"):
        Row("ex4-optimizer", "val_mse", {"hidden": [10, 10, 10, 10], "batch_size": 10, "lr": 0.1}, grid="main"),
    ("4", "optimizer", "same, 20 epochs, RMSprop lr=0.005 (lr>=1 gives nan)"):
        Row("ex4-optimizer", "val_mse", {"optimizer": "rmsprop", "lr": 0.005}, grid="20 epochs"),
    ("4", "loss", "Gaussian NLL (mean + log-variance head), lr=0.001, 100 epochs"):
        Row("ex4-loss", "val_nll", {"dataset": "hetero1d", "lr": 0.001}, note=_ex4_nll_note("val")),
    ("4", "test", "same model on the test split"):
        Row("ex4-test", "test_nll", {"dataset": "hetero1d"}, note=_ex4_nll_note("test")),
}


def reference_rows(path: Path | None = None) -> list[dict[str, str]]:
    path = Path(path) if path else REFERENCE_DIR / "reference-results.csv"
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        raise StudyError(f"{path}: the reference results are not there; the report compares against them") from None


def _row_values(row: Row, data: dict[str, StudyData]) -> list[float]:
    s = data[row.study]
    if row.metric.startswith("best:"):
        assert row.study == "ex1-loss"
        return _bce_best(data)
    return s.values(row.metric, grid=row.grid, **row.where)


def _fmt(value: float | None, unit_scale: float, metric: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    v = value * unit_scale
    if unit_scale == 100:
        return f"{v:.2f}"
    return f"{v:.4g}" if "mse" in metric else f"{v:.3f}"


# --- the study's qualitative findings, as checks ------------------------------------------------------------------------

@dataclass
class CheckResult:
    exercise: str
    finding: str
    status: str        # PASS | FAIL | N/A
    numbers: str


def _m(s: StudyData, metric: str, grid: str | None = None, **where) -> float | None:
    return mean_std(s.values(metric, grid=grid, **where))[0]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.2f}%"


def _verdict(ok: bool | None) -> str:
    return "N/A" if ok is None else ("PASS" if ok else "FAIL")


def _check_ex1(d: dict[str, StudyData]) -> list[CheckResult]:
    out = []
    a = d["ex1-architecture"]
    r, t, s = (_m(a, "val_accuracy", "3 layers", activation=x) for x in ("relu", "tanh", "sigmoid"))
    ok = None if None in (r, t, s) else r > t > s
    out.append(CheckResult("1", "3-layer MLP on points: relu > tanh > sigmoid", _verdict(ok),
                           f"relu {_pct(r)}, tanh {_pct(t)}, sigmoid {_pct(s)}"))
    lin = _m(a, "val_accuracy", "linear")
    t2 = _m(a, "val_accuracy", "main", hidden=[75], activation="tanh")
    ok = None if None in (lin, t2) else (lin < 0.7 and t2 > lin)
    out.append(CheckResult("1", "the linear model cannot separate the points (< 70%); a tanh hidden layer of 75 "
                                "does better", _verdict(ok), f"linear {_pct(lin)}, 2 layers tanh 75 {_pct(t2)}"))

    o = d["ex1-optimizer"]
    best: dict[str, tuple[float, float]] = {}
    low: dict[str, float] = {}
    for opt in ("sgd", "adam", "rmsprop"):
        per_lr = {}
        for cell in o.cells("main", optimizer=opt):
            per_lr.setdefault(cell.config.lr, None)
        for lr in per_lr:
            m = _m(o, "val_accuracy", "main", optimizer=opt, lr=lr)
            if m is not None and (opt not in best or m > best[opt][1]):
                best[opt] = (lr, m)
            if m is not None and (opt not in low or lr < low[opt]):
                low[opt] = lr
    if len(best) == 3:
        winner = max(best, key=lambda k: best[k][1])
        out.append(CheckResult("1", "Adam or RMSprop gives the best accuracy, not SGD (Adam lr 0.01: 99.90%, "
                                    "RMSprop lr 0.005: 99.80%)", _verdict(winner in ("adam", "rmsprop")),
                               ", ".join(f"{k} best at lr {v[0]:g}: {_pct(v[1])}" for k, v in best.items())))
        small = {opt: _m(o, "val_accuracy", "main", optimizer=opt, lr=low[opt]) for opt in best}
        ok = all(small[opt] is not None and small[opt] < best[opt][1] for opt in best)
        out.append(CheckResult("1", "a small learning rate needs more epochs: at the smallest lr every optimizer is "
                                    "below its best after 20 epochs", _verdict(ok),
                               ", ".join(f"{opt} lr {low[opt]:g}: {_pct(small[opt])}" for opt in best)))
        lrs = {opt: max(c.config.lr for c in o.cells("main", optimizer=opt)) for opt in best}
        big = {opt: _m(o, "val_accuracy", "main", optimizer=opt, lr=lrs[opt]) for opt in best}
        ok = any(big[opt] is not None and big[opt] < best[opt][1] - 0.05 for opt in best)
        out.append(CheckResult("1", "a big learning rate might not converge at all: the largest lr is > 5 points "
                                    "below the best for some optimizer", _verdict(ok),
                               ", ".join(f"{opt} lr {lrs[opt]:g}: {_pct(big[opt])}" for opt in best)))
    else:
        out.append(CheckResult("1", "Adam or RMSprop gives the best accuracy, not SGD", "N/A", "no runs"))
    peaks = {bs: max(o.values("val_accuracy", "adam 50 epochs", batch_size=bs), default=None) for bs in (5, 10, 20)}
    ok = None if any(v is None for v in peaks.values()) else all(v >= 0.999 for v in peaks.values())
    out.append(CheckResult("1", "Adam for 50 epochs reaches 100% at batch 5, 10 and 20 (best seed)", _verdict(ok),
                           ", ".join(f"batch {bs}: {_pct(v)}" for bs, v in peaks.items())))

    lo = d["ex1-loss"]
    hits = {loss: [epochs_to(c, 0.995) for c in lo.curves("val_accuracy", loss=loss)] for loss in ("bce", "mse")}
    if hits["bce"] and hits["mse"]:
        mb, mm = _median(hits["bce"]), _median(hits["mse"])
        rb = sum(h <= 10 for h in hits["bce"]) / len(hits["bce"])
        rm = sum(h <= 10 for h in hits["mse"]) / len(hits["mse"])
        ok = (mb < mm) or (mb == mm and rb > rm)
        out.append(CheckResult("1", "BCE reaches 99.5% in fewer epochs than MSE", _verdict(ok),
                               f"median epochs to 99.5% val accuracy: BCE {_fmt_epochs(mb)}, MSE {_fmt_epochs(mm)}; "
                               f"runs reaching it within 10 epochs: BCE {rb:.0%}, MSE {rm:.0%} "
                               f"(n={len(hits['bce'])} each)"))
        per_bs = {}
        for bs in sorted({c.config.batch_size for c in lo.cells(loss="bce")}):
            per_lr = [_median([epochs_to(c, 0.995) for c in lo.curves("val_accuracy", loss="bce", batch_size=bs,
                                                                       lr=lr)])
                      for lr in sorted({c.config.lr for c in lo.cells(loss="bce", batch_size=bs)})]
            per_bs[bs] = min(per_lr) if per_lr else math.inf
        ok = all(v <= 10 for v in per_bs.values())
        out.append(CheckResult("1", "with BCE every batch size reaches >= 99.5% in at most 10 epochs (best lr, "
                                    "median seed)", _verdict(ok),
                               ", ".join(f"batch {bs}: epoch {_fmt_epochs(v)}" for bs, v in per_bs.items())))
        per_lr = {lr: _median([epochs_to(c, 0.99) for c in lo.curves("val_accuracy", loss="bce", lr=lr)])
                  for lr in sorted({c.config.lr for c in lo.cells(loss="bce")})}
        if 0.01 in per_lr and (0.025 in per_lr or 0.05 in per_lr):
            fast = min(per_lr.get(0.025, math.inf), per_lr.get(0.05, math.inf))
            out.append(CheckResult("1", "BCE: lr 0.025 or 0.05 converges faster than 0.01", _verdict(fast < per_lr[0.01]),
                                   "median epochs to 99% val accuracy: "
                                   + ", ".join(f"lr {lr:g}: {_fmt_epochs(v)}" for lr, v in per_lr.items())))
    else:
        out.append(CheckResult("1", "BCE reaches 99.5% in fewer epochs than MSE", "N/A", "no runs"))

    te = _m(d["ex1-test"], "test_accuracy")
    out.append(CheckResult("1", "the final model is (near) perfect on the test split: >= 99% (study: 100%)",
                           _verdict(None if te is None else te >= 0.99), f"test accuracy {_pct(te)}"))
    return out


def _check_ex2(d: dict[str, StudyData]) -> list[CheckResult]:
    out = []
    a = d["ex2-architecture"]
    lin = _m(a, "val_accuracy", "linear")
    acts = {x: _m(a, "val_accuracy", "2-3 conv layers", channels=[10, 10, 10], activation=x)
            for x in ("softmax", "sigmoid", "tanh")}
    ok = None if lin is None or acts["tanh"] is None else acts["tanh"] > lin
    out.append(CheckResult("2", "3 conv layers (tanh) beat the linear softmax model", _verdict(ok),
                           f"linear {_pct(lin)}, 3 conv tanh {_pct(acts['tanh'])}"))
    known = {k: v for k, v in acts.items() if v is not None}
    ok = None if len(known) < 3 else max(known, key=known.get) == "tanh"
    out.append(CheckResult("2", "the best accuracy of the 3-layer CNN is reached with tanh (among softmax, sigmoid, "
                                "tanh)", _verdict(ok), ", ".join(f"{k} {_pct(v)}" for k, v in acts.items())))
    loss1 = {}
    for x in acts:
        curves = a.curves("train_loss", "2-3 conv layers", channels=[10, 10, 10], activation=x)
        firsts = [c[0] for c in curves if c and c[0] is not None]
        loss1[x] = statistics.fmean(firsts) if firsts else None
    ok = None if any(v is None for v in loss1.values()) else min(loss1, key=loss1.get) == "softmax"
    out.append(CheckResult("2", "softmax looks best for convergence: lowest training loss after the first epoch",
                           _verdict(ok), ", ".join(f"{k} {v:.4f}" if v is not None else f"{k} -"
                                                   for k, v in loss1.items())))

    o = d["ex2-optimizer"]
    pairs = []
    for lr in sorted({c.config.lr for c in o.cells("main")}):
        for bs in sorted({c.config.batch_size for c in o.cells("main")}):
            c10 = [c[0] for c in o.curves("val_accuracy", "main", channels=[10, 10, 10], lr=lr, batch_size=bs) if c]
            c20 = [c[0] for c in o.curves("val_accuracy", "main", channels=[20, 20, 20], lr=lr, batch_size=bs) if c]
            c10, c20 = [v for v in c10 if v is not None], [v for v in c20 if v is not None]
            # only cells where something was learned in the first epoch (not two chance levels compared)
            if c10 and c20 and max(statistics.fmean(c10), statistics.fmean(c20)) > 0.2:
                pairs.append((lr, bs, statistics.fmean(c10), statistics.fmean(c20)))
    ok = None if not pairs else sum(p[3] > p[2] for p in pairs) > len(pairs) / 2
    out.append(CheckResult("2", "more channels converge faster: 20 channels ahead of 10 after the first epoch "
                                "(most lr x batch cells that learn at all)", _verdict(ok),
                           "; ".join(f"lr {lr:g} batch {bs}: 10ch {_pct(a10)} vs 20ch {_pct(a20)}"
                                     for lr, bs, a10, a20 in pairs)))
    best20 = _best_cells(o, "20 epochs", "val_accuracy", "optimizer")
    if best20:
        winner = max(best20, key=lambda k: best20[k][1])
        out.append(CheckResult("2", "at 20 epochs the best optimizer is SGD (study: SGD lr 0.1, 97.17%)",
                               _verdict(winner == "sgd"),
                               ", ".join(f"{k} best at lr {lr:g}: {_pct(v)}" for k, (lr, v) in best20.items())))

    lo = d["ex2-loss"]
    hi_counts = lo.status_counts("main", lr=0.1)
    hi = _m(lo, "val_accuracy", "main", lr=0.1)
    ce = _m(lo, "val_accuracy", "main", lr=0.025)
    n_div = hi_counts.get("diverged", 0)
    ok = None if (ce is None or (hi is None and not n_div)) else (n_div > 0 or hi < ce)
    out.append(CheckResult("2", "cross-entropy with SGD lr 0.1 explodes (or ends worse than lr 0.025)", _verdict(ok),
                           f"lr 0.1: {_pct(hi)} ({', '.join(f'{k} {v}' for k, v in sorted(hi_counts.items()))}); "
                           f"lr 0.025: {_pct(ce)}"))
    mse = max(((opt, lr, v) for opt, (lr, v) in best20.items()), key=lambda t: t[2], default=None)
    ok = None if ce is None or mse is None else ce > mse[2]
    out.append(CheckResult("2", "cross-entropy (SGD lr 0.025) beats the best MSE cell of question 2", _verdict(ok),
                           f"cross-entropy {_pct(ce)} ({_epochs_of(lo, 'main', lr=0.025)} epochs), MSE "
                           + (f"{mse[0]} lr {mse[1]:g} {_pct(mse[2])} ({_epochs_of(o, '20 epochs')} epochs)"
                              if mse else "-")))
    te = _m(d["ex2-test"], "test_accuracy")
    ok = None if None in (te, ce) else abs(te - ce) < 0.02
    out.append(CheckResult("2", "test accuracy of the final CNN is in line with its validation accuracy "
                                "(within 2 points)", _verdict(ok), f"test {_pct(te)}, validation {_pct(ce)}"))
    return out


def _epochs_of(s: StudyData, grid: str | None, **where) -> str:
    cells = s.cells(grid, **where)
    return str(cells[0].config.epochs) if cells else "-"


def _check_ex3(d: dict[str, StudyData]) -> list[CheckResult]:
    out = []
    a = d["ex3-architecture"]
    col = {sh: _m(a, "val_color_accuracy", "main", shared_trunk=sh) for sh in (True, False)}
    ok = None if None in col.values() else all(v >= 0.99 for v in col.values())
    out.append(CheckResult("3", "colour is easy: >= 99% colour accuracy with a shared or with separate trunks",
                           _verdict(ok), f"shared {_pct(col[True])}, separate {_pct(col[False])}"))
    dig = {sh: _m(a, "val_digit_accuracy", "main", shared_trunk=sh) for sh in (True, False)}
    ok = None if None in dig.values() else abs(dig[True] - dig[False]) < 0.05
    out.append(CheckResult("3", "shared or separate trunks: both satisfying, no clear winner on digits (within 5 "
                                "points)", _verdict(ok), f"digit accuracy shared {_pct(dig[True])}, separate "
                                                         f"{_pct(dig[False])}"))
    acts = {x: _m(a, "val_accuracy", "activation", activation=x) for x in ("relu", "sigmoid", "tanh")}
    known = {k: v for k, v in acts.items() if v is not None}
    ok = None if len(known) < 3 else max(known, key=known.get) == "tanh"
    out.append(CheckResult("3", "with one conv layer the best activation is tanh", _verdict(ok),
                           ", ".join(f"{k} {_pct(v)}" for k, v in acts.items())))
    o = d["ex3-optimizer"]
    grid = {}
    for cell in o.spec.runs:
        for g in cell.grids:
            key = (g, cell.config.lr)
            if key not in grid:
                grid[key] = _m(o, "val_accuracy", g, lr=key[1])
    known = {k: v for k, v in grid.items() if v is not None}
    if known:
        best = max(known, key=known.get)
        chosen = known.get(("cosine", 0.001))
        ok = None if chosen is None else chosen >= known[best] - 0.01
        out.append(CheckResult("3", "Adam lr 1e-3 with cosine annealing is a robust choice: within 1 point of the "
                                    "best lr/schedule tried", _verdict(ok),
                               f"cosine lr 1e-3: {_pct(chosen)}; best: "
                               f"{'constant' if best[0] == 'main' else best[0]} lr {best[1]:g} {_pct(known[best])}"))
    lo = d["ex3-loss"]
    ce, mse = _m(lo, "val_accuracy", loss="cross_entropy"), _m(lo, "val_accuracy", loss="mse")
    out.append(CheckResult("3", "cross-entropy works better than MSE for the two classification heads",
                           _verdict(None if None in (ce, mse) else ce > mse),
                           f"cross-entropy {_pct(ce)}, MSE {_pct(mse)} (both heads right)"))
    t = d["ex3-test"]
    tc, td, tb = (_m(t, m) for m in ("test_color_accuracy", "test_digit_accuracy", "test_accuracy"))
    out.append(CheckResult("3", "on the test split the colour head is (near) perfect: >= 99.5% (study: 100%)",
                           _verdict(None if tc is None else tc >= 0.995), f"colour {_pct(tc)}"))
    ok = None if None in (td, tb) else (tb <= td + 1e-9 and td - tb < 0.01)
    out.append(CheckResult("3", "both-heads-right accuracy equals the digit accuracy up to colour mistakes "
                                "(within 1 point)", _verdict(ok), f"digit {_pct(td)}, both {_pct(tb)}"))
    return out


def _check_ex4(d: dict[str, StudyData]) -> list[CheckResult]:
    out = []
    a = d["ex4-architecture"]
    raw = a.status_counts("unnormalised")
    norm = a.status_counts("linear")
    ok = None if not raw else (raw.get("diverged", 0) == sum(raw.values()) and norm.get("diverged", 0) == 0)
    raw_tanh = a.status_counts("unnormalised tanh")
    tanh_mse = _m(a, "val_mse", "unnormalised tanh")
    out.append(CheckResult("4", "unnormalised regression diverges (linear model, SGD lr 0.01, raw diabetes "
                                "features and target)", _verdict(ok),
                           f"raw: {', '.join(f'{k} {v}' for k, v in sorted(raw.items()))}; normalised: "
                           f"{', '.join(f'{k} {v}' for k, v in sorted(norm.items()))}; a tanh net on the raw data "
                           f"does not diverge but saturates: {', '.join(f'{k} {v}' for k, v in sorted(raw_tanh.items()))}"
                           + (f", val MSE {tanh_mse:.4g} (raw units)" if tanh_mse is not None else "")))
    depths = sorted({len(c.config.hidden) for c in a.cells("main")})
    wins = []
    for depth in depths:
        hidden = [5] * depth
        per = {x: _m(a, "val_mse", "main", hidden=hidden, activation=x) for x in ("sigmoid", "tanh", "relu")}
        known = {k: v for k, v in per.items() if v is not None}
        if len(known) == 3:
            wins.append((depth + 1, min(known, key=known.get), per))
    ok = None if not wins else all(w[1] == "tanh" for w in wins)
    out.append(CheckResult("4", "tanh gives the lowest loss at every depth", _verdict(ok),
                           "; ".join(f"{n} layers: " + ", ".join(f"{k} {v:.4g}" for k, v in per.items())
                                     for n, _, per in wins)))
    widths = {}
    for cell in a.cells("width"):
        widths.setdefault(tuple(cell.config.hidden), None)
    vals = {h: _m(a, "val_mse", "width", hidden=list(h)) for h in widths}
    pairs = []
    for depth in (2, 4):
        row = sorted((h[0], v) for h, v in vals.items() if len(h) == depth and v is not None)
        if len(row) >= 2:
            pairs.append((depth + 1, row))
    ok = None if not pairs else all(r[-1][1] < r[0][1] for _, r in pairs)
    out.append(CheckResult("4", "more neurons give a lower loss (widest below narrowest, for 3 and 5 layers)",
                           _verdict(ok), "; ".join(f"{n} layers: " + ", ".join(f"{w}: {v:.4g}" for w, v in r)
                                                   for n, r in pairs)))

    o = d["ex4-optimizer"]
    big = o.status_counts("main", lr=1.0)
    ok = None if not big else big.get("diverged", 0) > 0
    small = o.status_counts("main", lr=0.1)
    out.append(CheckResult("4", "lr >= 1 gives nan (SGD lr 1.0 diverges)", _verdict(ok),
                           f"lr 1.0: {', '.join(f'{k} {v}' for k, v in sorted(big.items()))}; lr 0.1: "
                           f"{', '.join(f'{k} {v}' for k, v in sorted(small.items()))}"))
    per_bs = {}
    for bs in sorted({c.config.batch_size for c in o.cells("main")}):
        vs = [v for lr in (0.01, 0.1) for v in o.values("val_mse", "main", batch_size=bs, lr=lr)]
        per_bs[bs] = statistics.fmean(vs) if vs else None
    known = [(bs, v) for bs, v in per_bs.items() if v is not None]
    ok = None if len(known) < 2 else all(known[i][1] < known[i + 1][1] for i in range(len(known) - 1))
    out.append(CheckResult("4", "the higher the batch size, the higher the loss (fixed epochs; lr 0.01 and 0.1)",
                           _verdict(ok), ", ".join(f"batch {bs}: {v:.4g}" for bs, v in known)))
    opts = {}
    for opt in ("sgd", "adam", "rmsprop"):
        per_lr = {c.config.lr: None for c in o.cells("20 epochs", optimizer=opt)}
        for lr in per_lr:
            per_lr[lr] = (_m(o, "val_mse", "20 epochs", optimizer=opt, lr=lr),
                          o.status_counts("20 epochs", optimizer=opt, lr=lr).get("diverged", 0))
        opts[opt] = per_lr
    bad = []
    for opt, per_lr in opts.items():
        if 0.5 not in per_lr:
            continue
        m05, div = per_lr[0.5]
        best = min((v for lr, (v, _) in per_lr.items() if v is not None and lr != 0.5), default=None)
        bad.append((opt, m05, div, best, div > 0 or (m05 is not None and best is not None and m05 > best)))
    ok = None if not bad else all(b[-1] for b in bad)
    out.append(CheckResult("4", "lr 0.5 always performs badly or gives nan (every optimizer)", _verdict(ok),
                           "; ".join(f"{opt}: lr 0.5 " + (f"{m:.4g}" if m is not None else "-")
                                     + (f" ({div} diverged)" if div else "") + (f", best other {b:.4g}" if b else "")
                                     for opt, m, div, b, _ in bad)))
    best_cell = min(((opt, lr, v) for opt, per in opts.items() for lr, (v, _) in per.items() if v is not None),
                    key=lambda t: t[2], default=None)
    if best_cell:
        out.append(CheckResult("4", "at 20 epochs the best optimizer is RMSprop (lr 0.005)",
                               _verdict(best_cell[0] == "rmsprop"),
                               f"best: {best_cell[0]} lr {best_cell[1]:g} val MSE {best_cell[2]:.4g}"))

    lo = d["ex4-loss"]
    nll = {ds: _m(lo, "val_nll", dataset=ds, lr=0.001) for ds in ("hetero1d", "diabetes")}
    numbers = ", ".join(f"{ds} {v:.3f}" for ds, v in nll.items() if v is not None)
    out.append(CheckResult("4", "Gaussian NLL goes negative (hetero1d)",
                           _verdict(None if nll["hetero1d"] is None else nll["hetero1d"] < 0),
                           f"val NLL at the last epoch, lr 0.001: {numbers or 'no runs'}"))
    rise = {}
    for lr in (0.005, 0.001):
        ups = []
        for c in lo.curves("val_nll", lr=lr):
            vals = [v for v in c if v is not None]
            if vals:
                ups.append(vals[-1] - min(vals))
        rise[lr] = statistics.fmean(ups) if ups else None
    ok = None if None in rise.values() else rise[0.005] > rise[0.001]
    out.append(CheckResult("4", "with lr 0.005 the NLL goes back up after a while; lr 0.001 fixes it (final minus "
                                "best val NLL)", _verdict(ok),
                           ", ".join(f"lr {lr:g}: +{v:.3f}" if v is not None else f"lr {lr:g}: -"
                                     for lr, v in rise.items())))
    t = _m(d["ex4-test"], "test_nll", dataset="hetero1d")
    v = nll["hetero1d"]
    ok = None if None in (t, v) else abs(t - v) < 0.5
    out.append(CheckResult("4", "the test NLL is in the same range as the validation NLL (within 0.5)",
                           _verdict(ok), f"hetero1d: test {t:.3f}, val {v:.3f}" if ok is not None else "no runs"))
    return out


CHECKS = (_check_ex1, _check_ex2, _check_ex3, _check_ex4)


# --- the report -------------------------------------------------------------------------------------------------------

def load_specs(studies_dir: Path | None = None, quick: bool = False) -> dict[str, StudySpec]:
    studies_dir = Path(studies_dir) if studies_dir else STUDIES_DIR
    specs = {}
    for name in STUDY_FILES:
        spec = load_study(studies_dir / name, quick=quick)
        specs[spec.name] = spec
    return specs


class _WithEmpty(dict):
    """The studies' data; a study that is not there reads as one without runs (its rows show '-', checks N/A)."""

    def __init__(self, data: dict[str, StudyData], store):
        super().__init__(data)
        self.store = store

    def __missing__(self, key: str) -> StudyData:
        empty = StudyData(StudySpec(Path(key), key, "", "val_loss", "min", (0,), {}, ()), self.store)
        self[key] = empty
        return empty


def build_report(store, specs: dict[str, StudySpec], quick: bool, reference: list[dict[str, str]] | None = None,
                 header: str = "") -> tuple[str, list[CheckResult]]:
    """The markdown report and the checks, from the store alone. Missing studies or runs show as '-' / N/A."""
    reference = reference if reference is not None else reference_rows()
    data = {name: StudyData.load(spec, store) for name, spec in specs.items()}
    d = _WithEmpty(data, store)

    lines = ["# Ablation Lab: the reference study, reproduced" + (" (quick)" if quick else ""), ""]
    if header:
        lines += [header, ""]
    lines += [
        "Reference: `../shared/reference/reference-study.txt` and `reference-results.csv`. Every measured value "
        "below is read from the run store (mean +- sample std over seeds, n = completed runs; accuracies in percent "
        "of the validation or test split). **The data sets differ from the study's**: 2-D `circles` points (1,000 "
        "samples), the 5,000-image MNIST sample shipped offline (not the 60,000 of full MNIST), coloured digits "
        "built from that sample, scikit-learn's diabetes data (standardised) and a synthetic heteroscedastic 1-D "
        "set; so numbers may differ while the findings can still hold. With 3,500 training images instead of ~50,000, "
        "an MNIST epoch here is about 14 times fewer optimizer steps, so MNIST accuracies after the same number of "
        "epochs are lower (and ex2's MSE studies use a larger SGD learning rate: see `studies/ex2_architecture.toml`). "
        "Regression MSE is in standardised target units." + (" Quick mode: fewer epochs, seeds and cells than the study used (see each "
                    "`studies/*.toml` [quick] table), so values fall short of the full runs." if quick else ""),
        "", "## Results", "",
        "| ex | question | setting (reference) | metric | split | reference | measured here | study, cells | note |",
        "|---|---|---|---|---|---|---|---|---|"]
    for ref in reference:
        key = (ref["exercise"], ref["question"], ref["setting"])
        row = ROWS.get(key)
        if row is None:
            lines.append(f"| {ref['exercise']} | {ref['question']} | {ref['setting']} | {ref['metric']} | "
                         f"{ref['split']} | {ref['value']} | - | - | no mapping to a study cell |")
            continue
        values = _row_values(row, d)
        m, sd = mean_std(values)
        scale = row.scale
        measured = (f"{_fmt(m, scale, row.metric)} +- {_fmt(sd, scale, row.metric)} (n={len(values)})"
                    if m is not None else "- (no completed runs)")
        s = d[row.study]
        counts = s.status_counts(row.grid, **row.where) if not row.metric.startswith("best:") else \
            s.status_counts(**row.where)
        where = ", ".join(f"{k}={_show(v)}" for k, v in row.where.items())
        cells = f"{row.study}" + (f" [{row.grid}]" if row.grid and row.grid != "main" else "") + \
                (f": {where}" if where else "")
        notes = []
        odd = {k: v for k, v in counts.items() if k != "completed"}
        if odd:
            notes.append(", ".join(f"{v} {k}" for k, v in sorted(odd.items())))
        if row.note is not None and values:
            try:
                notes.append(row.note(d))
            except Exception as e:  # a note never breaks the report
                notes.append(f"(note failed: {e})")
        lines.append(f"| {ref['exercise']} | {ref['question']} | {ref['setting']} | {ref['metric']} | {ref['split']} "
                     f"| {ref['value']} | {measured} | {cells} | {'; '.join(notes)} |")
    checks: list[CheckResult] = []
    for fn in CHECKS:
        try:
            checks.extend(fn(d))
        except Exception as e:  # a check that cannot be computed is reported, not fatal
            checks.append(CheckResult("?", fn.__name__, "N/A", f"could not be computed: {type(e).__name__}: {e}"))
    passed = sum(c.status == "PASS" for c in checks)
    failed = sum(c.status == "FAIL" for c in checks)
    lines += ["", f"## Findings of the study, checked here ({passed} PASS, {failed} FAIL, "
                  f"{len(checks) - passed - failed} N/A)", "",
              "| ex | finding | result | numbers (from the store) |", "|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c.exercise} | {c.finding} | {c.status} | {c.numbers} |")
    lines += ["", "## Studies", "", "| study | file | cells | runs | completed | diverged | other |",
              "|---|---|---|---|---|---|---|"]
    for name, spec in specs.items():
        counts = data[name].status_counts()
        other = {k: v for k, v in counts.items() if k not in ("completed", "diverged")}
        lines.append(f"| {spec.study_name} | `{_rel(spec.path)}` | {len(spec.cell_labels())} | {len(spec.runs)} | "
                     f"{counts.get('completed', 0)} | {counts.get('diverged', 0)} | "
                     f"{', '.join(f'{k} {v}' for k, v in sorted(other.items())) or '-'} |")
    return "\n".join(lines) + "\n", checks


def _show(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ",".join(str(x) for x in v) + "]"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def reproduce(store, quick: bool = False, out: str | None = None, studies_dir: str | None = None,
              workers: int | None = None, device: str = "auto", show_progress: bool = True,
              train: bool = True) -> int:
    """Run every study (unless ``train`` is False), write the report to ``out`` and print it. Returns the exit code
    (0; 1 when some run failed; 130 after Ctrl-C)."""
    import time

    from engine.study.executor import format_result, run_study
    from engine.study.pool import TrainerPool
    from engine.study.schedule import default_workers
    from engine.train import resolve_device

    specs = load_specs(Path(studies_dir) if studies_dir else None, quick=quick)  # all validated before training
    reference = reference_rows()
    code = 0
    started = time.perf_counter()
    if train:
        dev = resolve_device(device)
        n = workers or default_workers()
        pool = TrainerPool(n) if dev.type == "cpu" and n > 1 else None  # one pool for all studies
        try:
            for name, spec in specs.items():
                result = run_study(spec, store, workers=n, device=device, show_progress=show_progress, pool=pool)
                print(format_result(result), file=sys.stderr)
                if result.interrupted:
                    return 130
                if not result.ok:
                    code = 1
        finally:
            if pool is not None:
                pool.close()
    elapsed = time.perf_counter() - started
    header = (f"Mode: {'quick' if quick else 'full'}; store `{store.root}`; {platform.machine()}, "
              f"{os.cpu_count()} cores; {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}"
              + (f"; trained in {elapsed / 60:.1f} min" if train else "; report only (nothing trained)") + ".")
    text, checks = build_report(store, specs, quick, reference, header)
    path = Path(out) if out else Path(f"reproduce-report{'-quick' if quick else ''}.md")
    path.write_text(text)
    print(text)
    print(f"report written to {path}", file=sys.stderr)
    return code
