"""A hand-logged store for the Factors and Report tests (a pytest plugin: ``pytest_plugins =
["tests.insight_fixtures"]``). No training: every run's epochs are logged directly, so the values, and therefore
every mean, interval and winner, are known exactly.

* "lrgrid": activation relu|tanh x lr 0.001, 0.01, 0.1, 1.0 (adam), seeds 0, 1, 2. val_accuracy = LEVEL[lr] +
  (0.02 + NOISE[seed] for relu, 2 NOISE[seed] for tanh: the paired differences vary). Every lr 1.0 run diverged;
  tanh/0.1 seed 2 ends with a NaN val_accuracy (completed); a fourth seed of relu/0.01 is still running (writer
  open, heartbeat alive).
* "oneseed": activation relu|tanh, seed 0 only.
* "same": activation relu|tanh x seeds 0, 1, 2, every run of a cell with the same value (relu 0.9, tanh 0.8).
* "pending": only the running run of "lrgrid" (nothing finished yet).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest

LEVEL = {0.001: 0.80, 0.01: 0.90, 0.1: 0.85}
NOISE = {0: -0.01, 1: 0.0, 2: 0.01}
ACTIVATIONS = ("relu", "tanh")


def accuracy(activation: str, lr: float, seed: int) -> float:
    return LEVEL[lr] + (0.02 + NOISE[seed] if activation == "relu" else 2 * NOISE[seed])


@dataclass
class InsightStore:
    root: Path
    running_id: str

    def store(self):
        from engine.store import RunStore
        return RunStore(self.root)


def _log(store, config, values: list[float], status: str = "completed", heartbeat_s: float = 5.0, finish=True):
    writer = store.open_run(config.run_id, config.to_dict(), {"device": "cpu"}, heartbeat_s=heartbeat_s)
    for epoch, v in enumerate(values):
        writer.log_epoch(epoch, {"train_loss": 1.0 - (v if math.isfinite(v) else 0.0), "val_loss": 1.0 - v
                                 if math.isfinite(v) else math.nan, "val_accuracy": v, "lr": config.lr,
                                 "grad_norm": 1.0})
    if finish:
        writer.finish(status, error="loss became nan" if status == "diverged" else None)
    return writer


def build_insight_store(root: Path):
    """Returns (InsightStore, the open writer of the running run)."""
    from engine.config import RunConfig
    from engine.store import RunStore

    store = RunStore(root, durable=False, compact_threshold=None)

    def config(activation: str, lr: float, seed: int, epochs: int = 2) -> RunConfig:
        return RunConfig(task="points", dataset="moons", activation=activation, optimizer="adam", lr=lr,
                         epochs=epochs, seed=seed)

    grid = []
    for a in ACTIVATIONS:
        for lr in (0.001, 0.01, 0.1, 1.0):
            for s in (0, 1, 2):
                c = config(a, lr, s)
                grid.append(c.run_id)
                if lr == 1.0:
                    _log(store, c, [0.5], status="diverged")
                elif (a, lr, s) == ("tanh", 0.1, 2):
                    _log(store, c, [0.6, math.nan])
                else:
                    v = accuracy(a, lr, s)
                    _log(store, c, [v - 0.1, v])
    running = config("relu", 0.01, 3)
    writer = _log(store, running, [0.7], heartbeat_s=1.0, finish=False)
    grid.append(running.run_id)
    store.add_to_study("lrgrid", grid)
    store.add_to_study("pending", [running.run_id])

    one = [config(a, 0.01, 0, epochs=3) for a in ACTIVATIONS]
    for c, v in zip(one, (0.9, 0.8)):
        _log(store, c, [v, v])
    store.add_to_study("oneseed", [c.run_id for c in one])

    same = [config(a, 0.01, s, epochs=4) for a in ACTIVATIONS for s in (0, 1, 2)]
    for c in same:
        v = 0.9 if c.activation == "relu" else 0.8
        _log(store, c, [v, v])
    store.add_to_study("same", [c.run_id for c in same])
    return InsightStore(root, running.run_id), writer


@pytest.fixture(scope="session")
def insight_store(tmp_path_factory) -> InsightStore:
    root = tmp_path_factory.mktemp("insight-store")
    built, writer = build_insight_store(root)
    yield built
    writer.finish("cancelled", error="test session ended")
