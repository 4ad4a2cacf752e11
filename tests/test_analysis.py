"""engine/analysis.py over a real store (written with the store's own writer): cells agree with engine.stats called
directly, diverged / NaN / running runs are counted and kept out of the mean, a factor varying inside a cell is
named, bad names give errors that list the allowed ones, and ``engine analyze --format json`` gives the same
numbers."""
from __future__ import annotations

import contextlib
import io
import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import analysis, stats  # noqa: E402
from engine.analysis import AnalysisError, analyze  # noqa: E402
from engine.config import RunConfig  # noqa: E402
from engine.store import QueryError, RunStore  # noqa: E402

pytestmark = pytest.mark.timeout(60)
META = {"device": "cpu", "torch_version": "2.13.0", "hostname": "h", "pid": 1}
SEEDS = (0, 1, 2, 3)


def acc(act: str, opt: str, seed: int, lr: float = 0.01) -> float:
    return ({"relu": 0.80, "tanh": 0.70}[act] + {"adam": 0.05, "sgd": 0.0}[opt] + 0.011 * seed * (1 + (opt == "sgd"))
            + (0.03 if lr == 0.1 else 0.0))


def write(store, study: str, cfg: RunConfig, finals: list[float], status: str = "completed"):
    w = store.open_run(cfg.run_id, cfg.to_dict(), dict(META, study=study), heartbeat_s=0.5)
    for e, v in enumerate(finals):
        w.log_epoch(e, {"val_accuracy": v, "val_loss": 1 - v})
    if status is None:
        return w
    w.finish(status, {})
    return None


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("a") / "runs", durable=False, compact_threshold=None)
    # "grid": activation x optimizer x 4 seeds, plus a diverged run, a NaN final value and a running run.
    for act in ("relu", "tanh"):
        for opt in ("adam", "sgd"):
            for seed in SEEDS:
                write(store, "grid", RunConfig(activation=act, optimizer=opt, seed=seed, epochs=2),
                      [0.5, acc(act, opt, seed)])
    write(store, "grid", RunConfig(activation="tanh", optimizer="sgd", seed=4, epochs=2), [0.5, 0.1], "diverged")
    write(store, "grid", RunConfig(activation="relu", optimizer="sgd", seed=5, epochs=2), [0.5, math.nan])
    running = write(store, "grid", RunConfig(activation="relu", optimizer="adam", seed=9, epochs=2), [0.99], None)
    # "pooled": activation x lr x 3 seeds; by activation alone the lr varies inside each cell.
    for act in ("relu", "tanh"):
        for lr in (0.01, 0.1):
            for seed in range(3):
                write(store, "pooled", RunConfig(activation=act, lr=lr, seed=seed, epochs=3),
                      [acc(act, "adam", seed, lr)])
    # "edge": one seed of adam; sgd's three seeds all identical.
    write(store, "edge", RunConfig(optimizer="adam", seed=0, epochs=4), [0.9])
    for seed in range(3):
        write(store, "edge", RunConfig(optimizer="sgd", seed=seed, epochs=4), [0.5])
    yield store
    running.finish("cancelled", error="test module ended")


def values(cell_runs: list[tuple[str, str, int]]) -> list[float]:
    return [acc(a, o, s) for a, o, s in cell_runs]


def test_cells_agree_with_engine_stats(store):
    res = analyze(store, "grid", by=["activation", "optimizer"])
    assert res.metric == "val_accuracy" and res.direction == "higher"   # the headline metric of points
    assert res.unfinished == {"running": 1} and res.varying == {}
    assert [c.label for c in res.cells] == ["activation=relu, optimizer=adam", "activation=relu, optimizer=sgd",
                                            "activation=tanh, optimizer=adam", "activation=tanh, optimizer=sgd"]
    cells = {tuple(c.key.values()): c for c in res.cells}
    for (act, opt), cell in cells.items():
        direct = stats.summarize(values([(act, opt, s) for s in SEEDS]))
        assert cell.n == 4 and cell.mean == pytest.approx(direct.mean, abs=1e-9)
        assert (cell.ci_low, cell.ci_high) == pytest.approx((direct.ci_low, direct.ci_high), abs=1e-9)
        assert (cell.interval_low, cell.interval_high) == (cell.ci_low, cell.ci_high)
    # The diverged run and the NaN final are counted beside the mean, not in it; the running run is not a run here.
    assert cells[("tanh", "sgd")].n_diverged == 1 and cells[("tanh", "sgd")].n_runs == 5
    assert cells[("relu", "sgd")].n_diverged == 1 and cells[("relu", "adam")].n_runs == 4
    assert res.n_runs == 18
    assert res.best == "activation=relu, optimizer=adam" and cells[("relu", "adam")].mark == "best"
    assert cells[("tanh", "sgd")].mark == "worse"
    json.dumps(res.to_dict(), allow_nan=False)


def test_interval_choice_and_baseline(store):
    res = analyze(store, "grid", by=["optimizer"], hold={"activation": "relu"}, interval="sem",
                  baseline={"optimizer": "sgd"})
    assert res.hold == {"activation": "relu"} and res.varying == {}
    adam = next(c for c in res.cells if c.key == {"optimizer": "adam"})
    direct = stats.summarize(values([("relu", "adam", s) for s in SEEDS]))
    assert (adam.interval_low, adam.interval_high) == pytest.approx((direct.mean - direct.sem,
                                                                     direct.mean + direct.sem), abs=1e-12)
    # relu/sgd holds seed 5 (a NaN final): the seed sets differ, so engine.stats compares unpaired (Welch).
    cmp = stats.compare(values([("relu", "adam", s) for s in SEEDS]),
                        values([("relu", "sgd", s) for s in SEEDS]) + [math.nan], seeds_a=SEEDS, seeds_b=SEEDS + (5,))
    assert adam.vs_baseline == pytest.approx(cmp.difference) and adam.vs_baseline_p == pytest.approx(cmp.p_value)
    assert (adam.vs_baseline_ci_low, adam.vs_baseline_ci_high) == pytest.approx((cmp.ci_low, cmp.ci_high))
    assert adam.vs_baseline_method.startswith("Welch") and adam.vs_baseline_mark == "no clear difference"
    # adam's two activations hold the same seeds (the running seed 9 is not a run here): paired, and the difference
    # is exactly -0.1 on every seed, so it is exact and worse without a test.
    paired = analyze(store, "grid", by=["activation"], hold={"optimizer": "adam"}, baseline={"activation": "relu"})
    tanh = next(c for c in paired.cells if c.key == {"activation": "tanh"})
    assert tanh.vs_baseline_method.startswith("paired") and tanh.vs_baseline_mark == "worse"
    assert tanh.vs_baseline == pytest.approx(-0.1) and tanh.vs_baseline_p is None
    sgd = next(c for c in res.cells if c.key == {"optimizer": "sgd"})
    assert sgd.vs_baseline_mark == "baseline" and sgd.n_diverged == 1


def test_a_factor_varying_inside_a_cell_is_named(store):
    res = analyze(store, "pooled", by=["activation"])
    assert res.varying == {"lr": ["0.01", "0.1"]}
    assert res.cells[0].n == 6                                  # pooled, but not silently
    assert analyze(store, "pooled", by=["activation"], hold={"lr": 0.1}).varying == {}
    held = analyze(store, "pooled", by=["activation"], hold={"lr": "0.1"})
    assert held.cells[0].n == 3 and held.cells[0].mean == pytest.approx(
        sum(acc("relu", "adam", s, 0.1) for s in range(3)) / 3)
    averaged = analyze(store, "pooled", by=["activation"], average_over=["lr"])
    assert averaged.varying == {} and averaged.cells[0].n == 6
    assert analyze(store, "pooled").by == ("activation", "lr")   # default: the study's varying factors
    # momentum applies to sgd only (n/a for adam): it follows the optimizer and is not named on its own; averaging
    # over the optimizer averages over it too.
    grid = analyze(store, "grid", by=["activation"])
    assert grid.varying == {"optimizer": ["adam", "sgd"]}
    assert analyze(store, "grid", by=["activation"], average_over=["optimizer"]).varying == {}
    assert analysis.pooled_factors(grid_runs(store), ["activation"]) == {"optimizer": ["adam", "sgd"]}


def grid_runs(store):
    from engine import queries
    runs = queries.study_runs(store, "grid")
    return runs[runs["status"].isin(analysis.FINISHED)]


def test_single_seed_and_identical_runs(store):
    res = analyze(store, "edge", by=["optimizer"], interval="std", baseline={"optimizer": "sgd"})
    adam, sgd = res.cells
    assert adam.n == 1 and adam.mean == 0.9 and adam.std is None and adam.ci_low is None
    assert adam.mark == "too few seeds" and adam.vs_baseline_mark == "too few seeds"
    assert adam.reason.startswith("too few seeds")
    assert sgd.n == 3 and sgd.std == 0.0 and (sgd.ci_low, sgd.ci_high) == (0.5, 0.5) and sgd.mark == "best"
    assert (sgd.interval_low, sgd.interval_high) == (0.5, 0.5)
    json.dumps(res.to_dict(), allow_nan=False)


def test_only_unfinished_runs_give_an_empty_result_that_says_why(store):
    from engine import queries
    runs = queries.study_runs(store, "grid")
    res = analysis.analyze_runs(runs[runs["status"] == "running"], "val_accuracy", ["activation"])
    assert res.cells == () and res.unfinished == {"running": 1} and res.reason == "no finished run in the selection"
    json.dumps(res.to_dict(), allow_nan=False)


def test_factor_importance_of_a_study(store):
    fi = analysis.study_importance(store, "pooled")
    assert fi.factors == ("activation", "lr") or list(fi.factors) == ["activation", "lr"]
    import pandas as pd
    rows = [{"activation": a, "lr": lr, "v": acc(a, "adam", s, lr)}
            for a in ("relu", "tanh") for lr in (0.01, 0.1) for s in range(3)]
    direct = stats.factor_importance(pd.DataFrame(rows), ["activation", "lr"], "v")
    assert [t.sum_sq for t in fi.terms] == pytest.approx([t.sum_sq for t in direct.terms], abs=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(study="nope"), r"unknown study 'nope'.*edge, grid, pooled"),
    (dict(study="grid", metric="val_f1"), r"unknown metric 'val_f1'.*val_accuracy, val_loss"),
    (dict(study="grid", by=["colour"]), r"unknown factor 'colour'.*activation"),
    (dict(study="grid", by=["optimizer"], hold={"activation": "gelu"}), r"activation=gelu.*takes relu, tanh"),
    (dict(study="grid", by=["optimizer"], baseline={"optimizer": "rmsprop"}), r"optimizer=rmsprop.*adam, sgd"),
    (dict(study="grid", by=["optimizer"], baseline={"activation": "relu"}), r"missing optimizer"),
    (dict(study="grid", by=["optimizer"], hold={"optimizer": "adam"}), r"used twice"),
    (dict(study="grid", interval="iqr"), r"interval must be one of std, sem, ci"),
])
def test_bad_requests_name_what_is_allowed(store, kwargs, match):
    with pytest.raises((AnalysisError, QueryError), match=match):
        analyze(store, **kwargs)


def cli(*argv: str) -> tuple[int, str, str]:
    from engine.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_cli_json_gives_the_same_numbers(store):
    code, out, _ = cli("analyze", "--study", "grid", "--by", "activation,optimizer", "--baseline",
                       "activation=relu,optimizer=sgd", "--interval", "sem", "--format", "json",
                       "--store", str(store.root))
    assert code == 0
    got = json.loads(out)
    want = analyze(store, "grid", by=["activation", "optimizer"], baseline={"activation": "relu", "optimizer": "sgd"},
                   interval="sem").to_dict()
    assert got == want and got["interval"] == "sem" and len(got["cells"]) == 4


def test_cli_table_markdown_and_errors(store):
    code, out, _ = cli("analyze", "--study", "pooled", "--by", "activation", "--format", "markdown",
                       "--store", str(store.root))
    assert code == 0 and out.startswith("| activation | mean [95% CI] | n | diverged | mark |")
    assert "cells pool different configs: lr takes 0.01, 0.1" in out
    code, out, _ = cli("analyze", "--study", "grid", "--store", str(store.root))
    assert code == 0 and "relu" in out and "best" in out and "running" in out
    code, out, _ = cli("analyze", "--study", "pooled", "--by", "activation", "--hold", "lr=0.1", "--baseline",
                       "activation=relu", "--interval", "std", "--store", str(store.root))
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["activation", "mean", "±"]
    assert lines[1].split()[0] == "relu" and lines[1].endswith("baseline") and "WARNING" not in out
    assert lines[2].split()[0] == "tanh" and lines[2].endswith("worse")   # -0.1 on every seed: exact
    code, out, err = cli("analyze", "--study", "grid", "--by", "colour", "--store", str(store.root))
    assert code == 2 and out == "" and err.count("\n") == 1 and "unknown factor 'colour'" in err
    code, _, err = cli("analyze", "--study", "grid", "--hold", "lr", "--store", str(store.root))
    assert code == 2 and "expected FIELD=VALUE" in err


# --- the Factors page's and the report's queries -------------------------------------------------------------------

def test_factor_views_and_interaction_are_analyze_runs_with_the_other_factors_averaged(store):
    from engine import queries
    runs = queries.study_runs(store, "pooled")
    views = analysis.factor_views(runs, "val_accuracy")
    assert set(views) == {"activation", "lr"}
    for f, view in views.items():
        other = [g for g in views if g != f]
        direct = analysis.analyze_runs(runs, "val_accuracy", [f], average_over=other)
        assert view.to_dict() == direct.to_dict() and view.varying == {}
    lr = {c.key["lr"]: c for c in views["lr"].cells}
    assert lr[0.1].n == 6 and lr[0.1].mean == pytest.approx(
        sum(acc(a, "adam", s, 0.1) for a in ("relu", "tanh") for s in range(3)) / 6, abs=1e-12)
    pair = analysis.interaction(runs, "val_accuracy", "lr", "activation")
    assert pair.to_dict() == analysis.analyze_runs(runs, "val_accuracy", ["lr", "activation"]).to_dict()
    assert analysis.factor_views(runs, "val_accuracy", only=["lr"]).keys() == {"lr"}


def test_run_points_hold_every_finished_run_with_its_diverged_flag(store):
    from engine import queries
    points = analysis.run_points(queries.study_runs(store, "grid"), "val_accuracy", ["activation", "optimizer"])
    assert len(points) == 2 * 2 * len(SEEDS) + 2                     # the running run is not there
    assert int(points["diverged"].sum()) == 2                         # the diverged run and the NaN final value
    assert set(points["optimizer"]) == {"adam", "sgd"} and points["optimizer__value"].isna().all()


@pytest.mark.parametrize("column, values, log", [
    ("lr", [0.001, 0.01], True),                        # a learning rate: log even with two levels
    ("weight_decay", [0.0, 0.01, 0.1], False),          # zero has no place on a log axis
    ("batch_size", [5, 10, 20], False),                 # a span of 4: linear
    ("n_samples", [100, 1000, 10000], True),            # three levels over a factor of 100
    ("activation", ["relu", "tanh"], False),
    ("hidden", [(5,), (10, 10)], False),
    ("momentum", [None, 0.9, 0.09, 0.009], True),       # n/a for some runs: the numbers decide
])
def test_log_spaced(column, values, log):
    import pandas as pd
    assert analysis.log_spaced(pd.DataFrame({column: pd.Series(values, dtype=object)}), column) is log


def test_fields_another_factor_fixes_are_dropped_from_the_model_and_named(store):
    from engine import queries
    runs = queries.study_runs(store, "grid")
    finished = runs[runs["status"].isin(analysis.FINISHED)]
    every = analysis.config_factors(finished)
    assert {"activation", "optimizer", "momentum"} <= set(every)      # momentum: n/a for adam, 0 for sgd
    assert analysis.independent_factors(finished, every) == ["activation", "optimizer"]
    fi = analysis.study_importance(store, "grid")
    assert fi.factors == ("activation", "optimizer") and fi.terms
    dropped = {d["term"]: d["reason"] for d in fi.dropped}
    assert "momentum" in dropped and "confounded" in dropped["momentum"]


def test_a_baseline_level_that_does_not_apply_resolves(store):
    # momentum is n/a (None) for adam: a float column holds it as NaN, and the baseline must still find it
    res = analyze(store, "grid", by=["optimizer", "momentum"], baseline={"optimizer": "adam", "momentum": "n/a"})
    base = next(c for c in res.cells if c.vs_baseline_mark == "baseline")
    assert base.key["optimizer"] == "adam" and base.key["momentum"] is None


def test_an_odd_cell_out_is_left_out_of_the_anova_and_named(tmp_path):
    """activation x optimizer is complete for relu/tanh x adam/sgd; one odd cell (sigmoid only with rmsprop) makes
    each of its levels stand for the other's, so the full model is confounded. The importance is that of the
    complete 2x2 part, and the levels left out are named with their run counts."""
    import pandas as pd
    store = RunStore(tmp_path / "runs", durable=False, compact_threshold=None)
    for act in ("relu", "tanh"):
        for opt in ("adam", "sgd"):
            for seed in range(3):
                write(store, "odd", RunConfig(activation=act, optimizer=opt, seed=seed, epochs=1),
                      [acc(act, opt, seed)])
    for seed in range(3):
        write(store, "odd", RunConfig(activation="sigmoid", optimizer="rmsprop", seed=seed, epochs=1), [0.3 + seed / 100])
    fi = analysis.study_importance(store, "odd")
    assert fi.reason is None and fi.n == 12
    rows = [{"activation": a, "optimizer": o, "v": acc(a, o, s)}
            for a in ("relu", "tanh") for o in ("adam", "sgd") for s in range(3)]
    direct = stats.factor_importance(pd.DataFrame(rows), ["activation", "optimizer"], "v")
    assert [t.term for t in fi.terms] == [t.term for t in direct.terms]
    assert [t.sum_sq for t in fi.terms] == pytest.approx([t.sum_sq for t in direct.terms], rel=1e-9)
    left_out = [d for d in fi.dropped if "left out" in d["reason"]]
    assert len(left_out) == 1 and left_out[0]["term"] in ("activation=sigmoid", "optimizer=rmsprop")
    assert left_out[0]["reason"].startswith("3 run(s) left out")
