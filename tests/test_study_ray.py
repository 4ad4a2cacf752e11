"""`--executor ray`: on a local Ray instance the study yields the same runs (ids, statuses, metrics per epoch) as
the local executor; the results are written to the store by the driver."""
from __future__ import annotations

from pathlib import Path

import pytest

from engine import queries
from engine.store import RunStore
from engine.study.executor import format_result, run_study
from engine.study.ray_executor import ClusterError
from engine.study.spec import load_study

ENGINE = Path(__file__).resolve().parents[1] / "engine"

STUDY = """\
name = "ray-vs-local"
metric = "val_loss"
seeds = [0, 1]
[base]
task = "regression"
dataset = "diabetes"
hidden = [8]
activation = "tanh"
optimizer = "sgd"
batch_size = 32
epochs = 3
[factors]
lr = [0.01, 0.05]
# raw diabetes with a linear model and SGD: diverges
[[cells]]
label = "raw"
normalize = false
hidden = []
activation = "identity"
lr = 0.01
"""


NEEDS_FULL_MNIST = """\
name = "full-mnist-on-ray"
metric = "val_loss"
seeds = [0]
[base]
task = "mnist"
dataset = "full"
epochs = 1
"""


@pytest.mark.timeout(240)
def test_ray_executor_yields_the_same_runs_as_the_local_executor(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    path = tmp_path / "study.toml"
    path.write_text(STUDY)
    spec = load_study(path)
    no_data = tmp_path / "no-mnist-here"
    no_data.mkdir()
    monkeypatch.setenv("ABLATION_LAB_DATA", str(no_data))  # Ray's workers, started below, see this folder
    local_store, ray_store = RunStore(tmp_path / "local"), RunStore(tmp_path / "ray")
    local = run_study(spec, local_store, workers=2, device="cpu", show_progress=False)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"py_modules": [str(ENGINE)], "excludes": ["__pycache__"]})
    try:
        remote = run_study(spec, ray_store, executor="ray", device="cpu", show_progress=False)
        again = run_study(spec, ray_store, executor="ray", device="cpu", show_progress=False)
        mnist_path = tmp_path / "mnist.toml"
        mnist_path.write_text(NEEDS_FULL_MNIST)
        no_mnist = run_study(load_study(mnist_path), ray_store, executor="ray", device="cpu", show_progress=False)
        # CUDA: every task asks Ray for a GPU; a cluster without one is told at once, not left waiting
        with pytest.raises(ClusterError, match="has no GPU, and --device cuda asks one per task"):
            run_study(load_study(mnist_path), ray_store, executor="ray", device="cuda", show_progress=False)
    finally:
        ray.shutdown()

    ids = [c.run_id for c in spec.runs]
    assert len(ids) == 6
    assert set(local.outcomes) == set(remote.outcomes) == set(ids)
    assert again.n_trained == 0 and again.outcomes == {}  # cached: nothing sent to Ray the second time
    assert "6 were cached" in format_result(again)
    for rid in ids:
        a, b = local_store.get(rid), ray_store.get(rid)
        assert a.status == b.status and a.n_epochs == b.n_epochs and a.config == b.config
        assert b.meta["executor"] == "ray" and b.meta["study"] == "ray-vs-local"
        assert a.summary.get("diverged_epoch") == b.summary.get("diverged_epoch")
        assert a.has_checkpoint == b.has_checkpoint
    statuses = {local_store.get(r).status for r in ids}
    assert statuses == {"completed", "diverged"}
    metrics = ["train_loss", "val_loss", "val_mse", "grad_norm"]
    ca = queries.curves(local_store, ids, metrics).sort_values(["run_id", "epoch"]).reset_index(drop=True)
    cb = queries.curves(ray_store, ids, metrics).sort_values(["run_id", "epoch"]).reset_index(drop=True)
    assert len(ca) == len(cb) > 0 and list(ca["run_id"]) == list(cb["run_id"])
    for m in metrics:
        assert ca[m].tolist() == pytest.approx(cb[m].tolist(), rel=1e-6, abs=1e-9, nan_ok=True)
    # membership was recorded by the driver for every cell
    members = queries.sql(ray_store, "SELECT run_id FROM study_members WHERE study = 'ray-vs-local'")
    assert set(members["run_id"]) == set(ids)

    # A node without full MNIST fails the stack's runs, saying which node and how to provide the data.
    [(rid, outcome)] = no_mnist.outcomes.items()
    assert outcome.status == "failed" and ray_store.get(rid).status == "failed"
    error = ray_store.get(rid).error
    assert error.startswith("on Ray node ") and "full MNIST not found" in error and str(no_data) in error
    assert "python -m engine data download mnist" in error
