"""engine/queries.py over a real store: filters, curves, final and best, pivots over seeds, validation errors."""
from __future__ import annotations

import statistics
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import queries  # noqa: E402
from engine.config import RunConfig  # noqa: E402
from engine.store import QueryError, RunStore  # noqa: E402

pytestmark = pytest.mark.timeout(60)
META = {"device": "cpu", "torch_version": "2.13.0", "hostname": "h", "pid": 1}


def curve(act: str, opt: str, seed: int) -> list[float]:
    """Deterministic val_accuracy curve whose best and final differ (a peak, then a dip)."""
    base = {"relu": 0.80, "tanh": 0.70}[act] + {"adam": 0.05, "sgd": 0.0}[opt] + 0.01 * seed
    return [base - 0.2, base, base - 0.05]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> RunStore:
    store = RunStore(tmp_path_factory.mktemp("q") / "runs", durable=False, compact_threshold=None)
    for act in ("relu", "tanh"):
        for opt in ("adam", "sgd"):
            for seed in range(3):
                cfg = RunConfig(activation=act, optimizer=opt, seed=seed, lr=0.001 if opt == "adam" else 0.05,
                                hidden=(100, 150) if act == "tanh" else (75,))
                w = store.open_run(cfg.run_id, cfg.to_dict(), dict(META, study="grid"), heartbeat_s=0.5)
                for e, acc in enumerate(curve(act, opt, seed)):
                    w.log_epoch(e, {"val_accuracy": acc, "val_loss": 1 - acc})
                w.finish("completed", {"test_accuracy": curve(act, opt, seed)[1]})
    store.compact()  # half of the queries run over a part, the rest over fresh small files below
    reg = RunConfig(task="regression", seed=7, activation="gelu", lr=0.02)
    w = store.open_run(reg.run_id, reg.to_dict(), META, heartbeat_s=0.5)
    w.log_epoch(0, {"val_mse": 3.0})
    w.log_epoch(1, {"val_mse": 2.0})
    w.finish("diverged", {"diverged_epoch": 2})
    return store


def ids_where(store, **cfg) -> list[str]:
    return sorted(queries.list_runs(store, cfg).run_id)


def test_list_runs_filters(store):
    assert len(queries.list_runs(store)) == 13
    assert len(ids_where(store, activation="relu")) == 6
    assert len(ids_where(store, activation="relu", optimizer=["adam", "sgd"])) == 6
    assert len(ids_where(store, lr=(None, 0.01))) == 6            # inclusive range, open below
    assert len(ids_where(store, lr=(0.01, None), task="points")) == 6
    assert len(ids_where(store, seed=(1, 2), activation="tanh")) == 4
    assert len(ids_where(store, hidden=[100, 150])) == 6          # a list column compares whole lists
    assert len(ids_where(store, hidden=[[75], [100, 150]])) == 12  # ... or any of several lists
    assert len(ids_where(store, hidden=None)) == 0
    assert len(ids_where(store, class_balance=None)) == 1          # the regression run
    regression = RunConfig(task="regression", seed=7, activation="gelu", lr=0.02)
    assert ids_where(store, status="diverged") == [regression.run_id]
    assert len(queries.list_runs(store, limit=5)) == 5
    df = queries.list_runs(store)
    assert df.started_at.is_monotonic_decreasing and "config_json" in df and not any(c.startswith("stats_")
                                                                                      for c in df.columns)
    assert df.attrs["problems"] == []
    assert list(queries.list_runs(store, {"seed": 0}, columns=["run_id", "seed"]).columns) == ["run_id", "seed"]


def test_unknown_names_give_actionable_errors(store):
    with pytest.raises(QueryError, match="unknown filter column 'colour'.*allowed:.*activation"):
        queries.list_runs(store, {"colour": "red"})
    with pytest.raises(QueryError, match="unknown metric 'val_acc'.*val_accuracy"):
        queries.final_and_best(store, "val_acc", "max")
    with pytest.raises(QueryError, match="unknown metric 'f1'.*val_loss"):
        queries.curves(store, ids_where(store), ["f1"])
    with pytest.raises(QueryError, match="mode"):
        queries.pivot(store, "val_accuracy", "activation", mode="best")
    with pytest.raises(QueryError, match="stat"):
        queries.pivot(store, "val_accuracy", "activation", stat="median")
    with pytest.raises(QueryError, match="unknown row"):
        queries.pivot(store, "val_accuracy", 'activation"; DROP TABLE runs; --')
    with pytest.raises(QueryError, match="different"):
        queries.pivot(store, "val_accuracy", "activation", "activation")
    with pytest.raises(QueryError, match="bad run id"):
        queries.curves(store, ["x' OR 1=1"])
    with pytest.raises(QueryError, match="query failed"):
        queries.sql(store, "SELECT no_such_column FROM runs")
    with pytest.raises(QueryError, match="read-only SELECT"):
        queries.sql(store, "DELETE FROM runs")


def test_curves(store):
    relu_adam = ids_where(store, activation="relu", optimizer="adam")
    df = queries.curves(store, relu_adam, ["val_accuracy"])
    assert list(df.columns) == ["run_id", "attempt", "epoch", "time_s", "val_accuracy"]
    assert len(df) == 9 and df.epoch.tolist() == [0, 1, 2] * 3
    by_seed = {queries.list_runs(store, {"run_id": r}).seed[0]: r for r in relu_adam}
    got = df[df.run_id == by_seed[2]].val_accuracy.tolist()
    assert got == pytest.approx(curve("relu", "adam", 2))
    everything = queries.curves(store, ids_where(store))
    assert {"val_accuracy", "val_loss", "val_mse"} <= set(everything.columns) and len(everything) == 12 * 3 + 2
    assert queries.curves(store, []).empty


def test_final_and_best(store):
    df = queries.final_and_best(store, "val_accuracy", "max").set_index("run_id")
    assert len(df) == 12  # the regression run never logged val_accuracy
    rid = queries.list_runs(store, {"activation": "tanh", "optimizer": "sgd", "seed": 1}).run_id[0]
    c = curve("tanh", "sgd", 1)
    row = df.loc[rid]
    assert (row.best, row.best_epoch, row.final, row.final_epoch) == (pytest.approx(c[1]), 1, pytest.approx(c[2]), 2)
    assert row.activation == "tanh" and row.n_epochs == 3 and row.n_nonfinite == 0
    low = queries.final_and_best(store, "val_loss", "min", {"activation": "tanh"})
    assert len(low) == 6 and set(low.best_epoch) == {1}
    mse = queries.final_and_best(store, "val_mse", "min")
    assert mse.best.tolist() == [2.0] and mse.status.tolist() == ["diverged"]


def test_pivot_mean_std_over_seeds(store):
    pv = queries.pivot(store, "val_accuracy", "activation", "optimizer", mode="max")
    assert pv[["activation", "optimizer"]].values.tolist() == [["relu", "adam"], ["relu", "sgd"], ["tanh", "adam"],
                                                               ["tanh", "sgd"]]
    for _, r in pv.iterrows():
        best = [curve(r.activation, r.optimizer, s)[1] for s in range(3)]
        assert r.n == 3 and r["mean"] == pytest.approx(statistics.mean(best))
        assert r["std"] == pytest.approx(statistics.stdev(best))
    final = queries.pivot(store, "val_accuracy", "activation", None, stat="final")
    assert final.set_index("activation").loc["relu", "mean"] == pytest.approx(
        statistics.mean(curve("relu", o, s)[2] for o in ("adam", "sgd") for s in range(3)))
    only = queries.pivot(store, "val_accuracy", "width", "n_hidden", filters={"optimizer": "adam"})
    assert only[["width", "n_hidden", "n"]].values.tolist() == [[75, 1, 3], [150, 2, 3]]
    by_summary = queries.pivot(store, "val_accuracy", "activation", filters={"test_accuracy": (0.8, None)})
    assert by_summary.activation.tolist() == ["relu"]


def test_over_seeds_distinct_status_study(store):
    groups = queries.over_seeds(store, "val_accuracy", "max")
    assert len(groups) == 4 and set(groups.n) == {3}
    assert all(list(s) == [0, 1, 2] for s in groups.seeds)
    g = groups[(groups.activation == "relu") & (groups.optimizer == "sgd")].iloc[0]
    assert g["mean"] == pytest.approx(statistics.mean(curve("relu", "sgd", s)[1] for s in range(3)))
    assert len(g.run_ids) == 3
    dv = queries.distinct_values(store, "activation")
    assert dv.values.tolist() == [["gelu", 1], ["relu", 6], ["tanh", 6]]
    sc = queries.status_counts(store).set_index("status").n.to_dict()
    assert sc == {"running": 0, "completed": 12, "diverged": 1, "failed": 0, "cancelled": 0, "timed_out": 0,
                  "interrupted": 0}
    sp = queries.study_progress(store).set_index("study")
    assert sp.at["grid", "n_runs"] == 12 and sp.at["grid", "completed"] == 12 and sp.at["grid", "done_fraction"] == 1


def test_live_runs_show_in_every_view(store, tmp_path):
    s = RunStore(tmp_path / "runs", durable=False)
    cfg = RunConfig(seed=99)
    w = s.open_run(cfg.run_id, cfg.to_dict(), META, heartbeat_s=0.05)
    w.log_epoch(0, {"val_accuracy": 0.5})
    w.log_epoch(1, {"val_accuracy": 0.7})
    runs = queries.list_runs(s)
    assert runs.status.tolist() == ["running"] and runs.n_epochs.tolist() == [2]
    assert runs.final_val_accuracy.tolist() == [0.7]
    fb = queries.final_and_best(s, "val_accuracy", "max")
    assert fb.best.tolist() == [0.7] and fb.best_epoch.tolist() == [1]
    assert queries.curves(s, [cfg.run_id]).val_accuracy.tolist() == [0.5, 0.7]
    w.finish("completed")
    assert queries.list_runs(s).status.tolist() == ["completed"]


def test_parallel_queries_from_threads(store):
    """The dashboard queries from several threads: each call has its own cursor and views."""
    errors: list[BaseException] = []

    def work():
        try:
            for _ in range(5):
                assert len(queries.list_runs(store)) == 13
                assert queries.pivot(store, "val_accuracy", "activation").n.sum() == 12
                assert len(queries.sql(store, "SELECT run_id FROM runs")) == 13  # temp views per cursor
        except BaseException as e:  # noqa: BLE001 - collected and re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
