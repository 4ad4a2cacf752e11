"""engine/inspect.py: task views rebuilt from real checkpoints agree with what training logged on the same split."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.config import RunConfig
from engine.errors import is_user_error
from engine.inspect import (CALIBRATION_LEVELS, InspectError, confusion, confusion_frame, decision_boundary,
                            load_run, regression_view, task_view, view_for_checkpoint)
from engine.sinks import MemorySink
from engine.train import train_stack


def train(config: RunConfig) -> MemorySink:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sink = MemorySink()
        train_stack([config], [sink], device="cpu")
        return sink
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def points_run():
    return train(RunConfig(task="points", dataset="moons", epochs=3))


@pytest.fixture(scope="module")
def mnist_run():
    return train(RunConfig(task="mnist", hidden=[16], epochs=1, batch_size=100))


@pytest.fixture(scope="module")
def colored_run():
    return train(RunConfig(task="colored_mnist", hidden=[16], epochs=1, batch_size=100))


@pytest.fixture(scope="module")
def gaussian_run():
    return train(RunConfig(task="regression", dataset="hetero1d", n_samples=300, loss="gaussian_nll", hidden=[16],
                           epochs=4))


def last(sink: MemorySink, metric: str) -> float:
    return sink.metric(metric)[-1]


def test_decision_boundary_matches_logged_accuracy(points_run):
    view = view_for_checkpoint(points_run.checkpoint)
    assert view.kind == "boundary" and view.split == "val"
    grid, points = view.frames["grid"], view.frames["points"]
    assert len(grid) == 80 * 80 and grid["p1"].between(0, 1).all()
    assert set(points.columns) >= {"x1", "x2", "label", "predicted", "correct"}
    # The same model on the same val split: exactly the accuracy the training loop logged last.
    assert view.summary["accuracy"] == pytest.approx(last(points_run, "val_accuracy"), abs=1e-6)
    # The grid spans every point of the data.
    assert grid["x1"].min() <= points["x1"].min() and grid["x1"].max() >= points["x1"].max()


def test_decision_boundary_resolution_is_clamped(points_run):
    run = load_run(points_run.checkpoint)
    assert len(decision_boundary(run, resolution=5).frames["grid"]) == 10 * 10
    assert len(decision_boundary(run, "test", resolution=10_000).frames["grid"]) == 300 * 300


def test_mnist_confusion_matrix(mnist_run):
    view = view_for_checkpoint(mnist_run.checkpoint)
    assert view.kind == "confusion" and list(view.frames) == ["digit"]
    cm = view.frames["digit"]
    assert len(cm) == 100 and cm["count"].sum() == view.summary["n"] == 750
    diag = cm[cm["true"] == cm["predicted"]]["count"].sum()
    assert diag / cm["count"].sum() == pytest.approx(last(mnist_run, "val_accuracy"), abs=1e-6)
    rows = cm.groupby("true")["share"].sum()
    assert np.allclose(rows[rows > 0], 1.0)


def test_colored_mnist_has_both_heads(colored_run):
    view = view_for_checkpoint(colored_run.checkpoint)
    assert list(view.frames) == ["digit", "colour"]
    assert len(view.frames["colour"]) == 3 * 3
    assert set(view.frames["colour"]["true"]) == {"red", "green", "blue"}
    assert view.summary["digit_accuracy"] == pytest.approx(last(colored_run, "val_digit_accuracy"), abs=1e-6)
    assert view.summary["colour_accuracy"] == pytest.approx(last(colored_run, "val_color_accuracy"), abs=1e-6)
    assert view.summary["accuracy"] == pytest.approx(last(colored_run, "val_accuracy"), abs=1e-6)


def test_gaussian_regression_band_and_calibration(gaussian_run):
    view = view_for_checkpoint(gaussian_run.checkpoint)
    assert view.kind == "regression" and view.summary["per_sample_std"]
    preds, cal = view.frames["predictions"], view.frames["calibration"]
    assert (preds["upper"] - preds["lower"]).gt(0).all()
    assert np.allclose(preds["upper"] - preds["mean"], 2 * preds["std"], rtol=1e-5)
    assert preds["x"].is_monotonic_increasing  # 1-D input: plotted against x
    # z-scores do not depend on the units: the share within 2 std equals the logged metric.
    assert view.summary["within_2std"] == pytest.approx(last(gaussian_run, "val_within_2std"), abs=1e-6)
    assert list(cal["nominal"]) == list(CALIBRATION_LEVELS)
    assert cal["observed"].is_monotonic_increasing and cal["observed"].between(0, 1).all()
    # RMSE in raw units = sqrt(logged MSE on standardised targets) * target std.
    data_std = load_run(gaussian_run.checkpoint).data.target_scale[1]
    assert view.summary["rmse"] == pytest.approx(math.sqrt(last(gaussian_run, "val_mse")) * data_std, rel=1e-4)


def test_mse_regression_uses_train_residual_std():
    sink = train(RunConfig(task="regression", dataset="diabetes", hidden=[8], epochs=2))
    view = view_for_checkpoint(sink.checkpoint, split="test")
    preds = view.frames["predictions"]
    assert not view.summary["per_sample_std"] and preds["std"].nunique() == 1
    assert any("constant std" in n for n in view.notes)
    assert view.summary["x_axis"] == "sample" and preds["mean"].is_monotonic_increasing


def test_runs_without_weights_say_why():
    sink = train(RunConfig(task="regression", dataset="diabetes", normalize=False, optimizer="sgd", lr=0.01,
                           hidden=[], epochs=5))
    assert sink.status == "diverged" and sink.checkpoint is None
    with pytest.raises(InspectError, match="no checkpoint") as e:
        view_for_checkpoint(sink.checkpoint, what="run x")
    assert is_user_error(e.value)
    with pytest.raises(InspectError, match="cannot be read"):
        view_for_checkpoint(b"not a checkpoint")


def test_wrong_view_for_task_and_bad_split(points_run, mnist_run):
    with pytest.raises(InspectError, match="mnist"):
        confusion(load_run(points_run.checkpoint))
    with pytest.raises(InspectError, match="regression"):
        regression_view(load_run(mnist_run.checkpoint))
    with pytest.raises(InspectError, match="split"):
        task_view(load_run(points_run.checkpoint), split="holdout")


def test_confusion_frame_counts_every_cell():
    cm = confusion_frame(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), ["a", "b", "c"])
    assert len(cm) == 9 and cm["count"].sum() == 4
    assert cm.set_index(["true", "predicted"]).loc[("a", "b"), "count"] == 1
    assert cm.set_index(["true", "predicted"]).loc[("c", "c"), "share"] == 0.0
