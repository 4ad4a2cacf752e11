"""Seeded run stores for the dashboard's tests (a pytest plugin: ``pytest_plugins = ["tests.dashboard_fixtures"]``).

``seeded_store`` trains real tiny runs into a temporary store once per test session (per xdist worker):

* the "ablation" study: points/moons, activation relu|tanh x optimizer adam|sgd x seeds 0,1,2, 3 epochs (12 runs)
* one tiny run each of mnist, colored_mnist (sample5k, an MLP, 1 epoch) and regression/hetero1d with gaussian_nll
  (the Runs page's task views)
* two diverged runs: regression/hetero1d on raw data with sgd lr 0.5 (blows up in epoch 5, after 5 logged epochs),
  and regression on raw diabetes data with sgd (blows up within the first epoch: nothing logged, as in the study)
* a hand-logged run with a NaN in the middle of its val_loss curve
* a run still running (a writer left open for the whole session, heartbeat alive)
* a damaged Parquet file in the sealed folder (the store skips it and reports it)

``empty_store`` is a store root with no runs. Both set nothing globally: tests pass the root to the app through the
``ABLATION_LAB_STORE`` environment variable (``monkeypatch.setenv``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STUDY = "ablation"
ACTIVATIONS = ("relu", "tanh")
OPTIMIZERS = ("adam", "sgd")
SEEDS = (0, 1, 2)


@dataclass
class SeededStore:
    root: Path
    study_ids: list[str]
    mnist_id: str
    colored_id: str
    regression_id: str
    diverged_id: str
    diverged_early_id: str
    nan_id: str
    running_id: str
    damaged_file: Path
    by_cell: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (activation, optimizer) -> run ids

    @property
    def n_runs(self) -> int:
        return len(self.study_ids) + 7

    def store(self):
        from engine.store import RunStore
        return RunStore(self.root)


def study_configs():
    from engine.config import RunConfig
    return [RunConfig(task="points", dataset="moons", activation=a, optimizer=o, lr=0.01 if o == "adam" else 0.1,
                      epochs=3, seed=s)
            for a in ACTIVATIONS for o in OPTIMIZERS for s in SEEDS]


def build_seeded_store(root: Path) -> tuple[SeededStore, object]:
    """Train everything into ``root``; returns the description and the open writer of the running run."""
    import torch

    threads = torch.get_num_threads()
    # Tiny models: one thread is several times faster than many fighting over a shared CPU.
    torch.set_num_threads(1)
    try:
        return _build(root)
    finally:
        torch.set_num_threads(threads)


def _build(root: Path) -> tuple[SeededStore, object]:
    from engine.config import RunConfig
    from engine.store import RunStore
    from engine.train import run_configs

    store = RunStore(root, durable=False, compact_threshold=None)
    study = study_configs()
    run_configs(study, store, device="cpu")
    store.add_to_study(STUDY, [c.run_id for c in study])

    mnist = RunConfig(task="mnist", hidden=[16], epochs=1, batch_size=100)
    colored = RunConfig(task="colored_mnist", hidden=[16], epochs=1, batch_size=100)
    regression = RunConfig(task="regression", dataset="hetero1d", n_samples=300, loss="gaussian_nll", hidden=[16],
                           epochs=3)
    diverged = RunConfig(task="regression", dataset="hetero1d", n_samples=200, normalize=False, optimizer="sgd",
                         lr=0.5, hidden=[], epochs=8)
    diverged_early = RunConfig(task="regression", dataset="diabetes", normalize=False, optimizer="sgd", lr=0.01,
                               hidden=[], epochs=5)
    outcomes = run_configs([mnist, colored, regression, diverged, diverged_early], store, device="cpu")
    assert [o.status for o in outcomes[-2:]] == ["diverged", "diverged"], outcomes

    # A run whose val_loss is NaN in the middle epoch (logged by hand: the loop never logs a NaN itself).
    nan_cfg = RunConfig(task="points", dataset="moons", epochs=3, seed=99)
    with store.open_run(nan_cfg.run_id, nan_cfg.to_dict(), {"device": "cpu"}) as w:
        for epoch, (loss, acc) in enumerate([(0.5, 0.7), (math.nan, 0.8), (0.3, 0.9)]):
            w.log_epoch(epoch, {"train_loss": loss, "val_loss": loss, "val_accuracy": acc, "lr": 0.01,
                                "grad_norm": 1.0})
        w.finish("completed", summary={"n_params": 301})

    # A run still running: its writer stays open (and beating) until the session ends.
    running_cfg = RunConfig(task="points", dataset="moons", epochs=10, seed=7)
    writer = store.open_run(running_cfg.run_id, running_cfg.to_dict(), {"device": "cpu"}, heartbeat_s=1.0)
    for epoch in range(2):
        writer.log_epoch(epoch, {"train_loss": 0.6 - 0.1 * epoch, "val_loss": 0.6 - 0.1 * epoch,
                                 "val_accuracy": 0.6 + 0.1 * epoch, "lr": 0.01, "grad_norm": 1.0})

    # A damaged file where a sealed run row would be: the store must skip it and say so.
    damaged = store.layout.sealed / "0badf11e0badf11e.0001.run.parquet"
    damaged.parent.mkdir(parents=True, exist_ok=True)
    damaged.write_bytes(b"PAR1 this is not a parquet file at all PAR1")

    by_cell: dict[tuple[str, str], list[str]] = {}
    for c in study:
        by_cell.setdefault((c.activation, c.optimizer), []).append(c.run_id)
    seeded = SeededStore(root, [c.run_id for c in study], mnist.run_id, colored.run_id, regression.run_id,
                         diverged.run_id, diverged_early.run_id, nan_cfg.run_id, running_cfg.run_id, damaged, by_cell)
    return seeded, writer


@pytest.fixture(scope="session")
def seeded_store(tmp_path_factory) -> SeededStore:
    root = tmp_path_factory.mktemp("dashboard-store")
    seeded, writer = build_seeded_store(root)
    yield seeded
    writer.finish("cancelled", error="test session ended")


@pytest.fixture()
def empty_store(tmp_path) -> Path:
    root = tmp_path / "empty-store"
    root.mkdir()
    return root


@pytest.fixture()
def use_store(monkeypatch):
    """Point the app (AppTest runs in this process) at a store root."""
    def point(root) -> None:
        monkeypatch.setenv("ABLATION_LAB_STORE", str(root))
        monkeypatch.chdir(REPO)
    return point


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """test-artifacts/ under the repo root (git-ignored): screenshots for reviewers."""
    path = Path(os.environ.get("ABLATION_LAB_ARTIFACTS", REPO / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- a store of several studies (the first-minutes journeys) ------------------------------------------------------

OLD_STUDY, NEW_STUDY = "points-old", "widths-new"
WIDTHS = ([8], [16, 16])


@dataclass
class StudiesStore:
    root: Path
    old_ids: list[str]
    new_ids: list[str]        # trained ones of the newest study (regression: hidden x activation x seeds)
    diverged_id: str          # a member of the newest study that blew up: 1e30 at epoch 0, diverged in epoch 1
    nan_id: str               # a member of the newest study with a NaN mid-curve
    cancelled_id: str
    timed_out_id: str

    @property
    def n_runs(self) -> int:
        return len(self.old_ids) + len(self.new_ids) + 4


def build_studies_store(root: Path) -> StudiesStore:
    """Two small studies trained one after the other (the second is the newest), plus hand-logged runs: a diverged
    member with a huge value before the blow-up, a NaN, a cancelled and a timed-out run."""
    import torch

    from engine.config import RunConfig
    from engine.store import RunStore
    from engine.train import run_configs

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        store = RunStore(root, durable=False, compact_threshold=None)
        old = [RunConfig(task="points", dataset="moons", activation=a, epochs=2, seed=s)
               for a in ("relu", "tanh") for s in (0, 1)]
        run_configs(old, store, device="cpu")
        store.add_to_study(OLD_STUDY, [c.run_id for c in old])
        new = [RunConfig(task="regression", dataset="hetero1d", n_samples=200, hidden=h, activation=a, epochs=3,
                         seed=s) for h in WIDTHS for a in ("relu", "tanh", "sigmoid") for s in (0, 1)]
        run_configs(new, store, device="cpu")
    finally:
        torch.set_num_threads(threads)

    def hand_logged(cfg, values, status, summary=None):
        with store.open_run(cfg.run_id, cfg.to_dict(), {"device": "cpu"}) as w:
            for epoch, v in enumerate(values):
                w.log_epoch(epoch, {"train_loss": v, "val_loss": v, "val_mse": v, "lr": 0.01, "grad_norm": 1.0})
            w.finish(status, summary=summary or {})
        return cfg.run_id

    base = dict(task="regression", dataset="hetero1d", n_samples=200, hidden=[8], activation="relu", epochs=3)
    diverged = hand_logged(RunConfig(**base, seed=5), [1e30], "diverged", {"diverged_epoch": 1, "diverged_step": 7})
    nan = hand_logged(RunConfig(**base, seed=6), [0.9, math.nan, 0.5], "completed")
    cancelled = hand_logged(RunConfig(**base, seed=7), [0.9], "cancelled")
    timed_out = hand_logged(RunConfig(**base, seed=8), [0.9, 0.8], "timed_out")
    store.add_to_study(NEW_STUDY, [c.run_id for c in new] + [diverged, nan, cancelled, timed_out])
    return StudiesStore(root, [c.run_id for c in old], [c.run_id for c in new], diverged, nan, cancelled, timed_out)


@pytest.fixture(scope="session")
def studies_store(tmp_path_factory) -> StudiesStore:
    return build_studies_store(tmp_path_factory.mktemp("studies-store"))
