"""Running studies against a real store with real training processes: the plan counts what is cached, a run trains
only what is missing (a second run trains nothing), membership is recorded for every cell, and a diverged or
failed cell does not stop the study."""
from __future__ import annotations

from pathlib import Path

import pytest

from engine import queries
from engine.cli import main
from engine.store import RunStore
from engine.study.executor import format_result, run_study
from engine.study.plan import format_plan, make_plan
from engine.study.schedule import order_stacks
from engine.study.spec import load_study

STUDY = """\
name = "tiny"
seeds = [0, 1, 2]
[base]
task = "points"
n_samples = 120
hidden = [8]
batch_size = 20
epochs = 3
[factors]
activation = ["tanh", "relu"]
lr = [0.01, 0.05]
"""


def write(tmp_path: Path, text: str, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def attempts(store: RunStore, spec) -> dict[str, dict[int, str]]:
    return {c.run_id: store.attempts(c.run_id) for c in spec.runs}


def test_plan_counts_cached_and_missing_and_run_trains_only_the_missing(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "store")
    full = load_study(write(tmp_path, STUDY))
    part = load_study(write(tmp_path, STUDY.replace("seeds = [0, 1, 2]", "seeds = [1]").replace('"tiny"', '"part"'),
                             "part.toml"))
    assert {c.run_id for c in part.runs} < {c.run_id for c in full.runs}

    first = run_study(part, store, workers=2, device="cpu", show_progress=False)
    assert first.ok and first.n_trained == 4 and set(first.outcomes) == {c.run_id for c in part.runs}

    plan = make_plan(full, store, workers=2)
    assert len(plan.cached) == 4 and len(plan.missing) == 8
    assert {c.seed for c in plan.missing} == {0, 2}
    text = format_plan(plan)
    assert "4 cells x 3 seeds = 12 runs" in text and "cached: 4  missing: 8" in text
    assert "estimated time for the missing runs:" in text
    # the part run has the same shapes: its 4 runs, trained here, are what the estimate measured
    assert plan.measured_runs == 4 and plan.estimate_sources.get("store")
    assert "(from 4 runs measured on this machine)" in text

    # Epoch times another machine recorded say nothing of this one: a calibration on this machine instead.
    import platform
    here = platform.node()
    monkeypatch.setattr(platform, "node", lambda: here + "-elsewhere")
    elsewhere = make_plan(full, store, workers=2)
    monkeypatch.undo()
    assert elsewhere.measured_runs == 0 and set(elsewhere.estimate_sources) == {"calibration"}
    assert elsewhere.estimate_s is not None and elsewhere.estimate_s > 0
    assert "calibration" in format_plan(elsewhere) and "measured" not in format_plan(elsewhere)

    second = run_study(full, store, workers=2, device="cpu", show_progress=False)
    assert second.ok and second.n_trained == 8
    assert set(second.outcomes) == {c.run_id for c in plan.missing}  # the cached 4 were not retrained
    before = attempts(store, full)
    assert all(a == {1: "completed"} for a in before.values())

    third = run_study(full, store, workers=2, device="cpu", show_progress=False)
    assert third.ok and third.n_trained == 0 and third.outcomes == {}
    assert attempts(store, full) == before
    plan = make_plan(full, store)
    assert len(plan.cached) == 12 and not plan.missing
    assert "nothing to train" in format_plan(plan)
    summary = format_result(third)
    assert "12 were cached, 0 ran now" in summary and "winner by val_accuracy" in summary

    # membership: every run of both studies (cached ones too), as the store's study view reports it
    members = queries.sql(store, "SELECT study, count(*) AS n FROM study_members GROUP BY study ORDER BY study")
    assert dict(zip(members["study"], members["n"])) == {"part": 4, "tiny": 12}
    # results agree with what the store holds, run by run
    runs = queries.list_runs(store)
    assert len(runs) == 12 and set(runs["status"]) == {"completed"} and set(runs["n_epochs"]) == {3}


def test_stacks_are_balanced_over_workers(tmp_path):
    spec = load_study(write(tmp_path, STUDY.replace('lr = [0.01, 0.05]', 'lr = [0.01, 0.02, 0.03, 0.05]')
                            .replace('activation = ["tanh", "relu"]', 'activation = ["tanh", "relu", "sigmoid"]')))
    configs = spec.configs()
    one = order_stacks(configs, 1)
    assert sorted(len(s) for s in one) == [12, 12, 12]  # one stack per activation: 4 lrs x 3 seeds
    two = order_stacks(configs, 2)
    assert sorted(len(s) for s in two) == [6, 6, 12, 12]  # 3 stacks on 2 workers: halve one
    assert sorted(c.run_id for s in two for c in s) == sorted(c.run_id for c in configs)


def test_a_diverged_and_a_failed_cell_do_not_stop_the_study(tmp_path, monkeypatch, capsys):
    # Unnormalised regression with SGD diverges; full MNIST is not on disk here, so that cell fails to load.
    monkeypatch.setenv("ABLATION_LAB_DATA", str(tmp_path / "no-mnist"))
    text = """\
name = "faults"
metric = "val_loss"
seeds = [0]
[base]
task = "regression"
dataset = "diabetes"
hidden = []
activation = "identity"
optimizer = "sgd"
lr = 0.01
epochs = 3
[factors]
normalize = [true, false]
[[cells]]
label = "no data"
task = "mnist"
dataset = "full"
"""
    path = write(tmp_path, text)
    spec = load_study(path)
    store = RunStore(tmp_path / "store")
    code = main(["study", "run", str(path), "--store", str(store.root), "--workers", "2", "--quiet"])
    out = capsys.readouterr().out
    assert code == 1  # not everything completed
    by_cell = {c.label: store.get(c.run_id) for c in spec.runs}
    assert by_cell["normalize=true"].status == "completed"
    diverged = by_cell["normalize=false"]
    assert diverged.status == "diverged" and diverged.summary["diverged_epoch"] == 0
    failed = by_cell["no data: task=mnist dataset=full"]
    assert failed.status == "failed" and "DataNotAvailableError" in failed.error
    assert "status: completed 1, diverged 1, failed 1" in out
    assert "normalize=false seed=0: diverged at epoch 0" in out
    assert "no data: task=mnist dataset=full seed=0: failed: DataNotAvailableError" in out
    # a diverged run is a finished result (cached); the failed one is retried by the next run
    plan = make_plan(spec, store, estimate=False)
    assert len(plan.cached) == 2 and [c.label for c in plan.missing] == ["no data: task=mnist dataset=full"]


@pytest.mark.parametrize("workers", [1])
def test_in_process_run_gives_the_same_results_as_workers(tmp_path, workers):
    spec = load_study(write(tmp_path, STUDY))
    a, b = RunStore(tmp_path / "a"), RunStore(tmp_path / "b")
    ra = run_study(spec, a, workers=workers, device="cpu", show_progress=False)
    rb = run_study(spec, b, workers=2, device="cpu", show_progress=False)
    assert ra.ok and rb.ok
    for cell in spec.runs:
        x, y = a.get(cell.run_id), b.get(cell.run_id)
        assert x.status == y.status == "completed"
        for name in ("train_loss", "val_loss", "val_accuracy"):
            assert x.final[name] == pytest.approx(y.final[name], rel=1e-6, abs=1e-7)
