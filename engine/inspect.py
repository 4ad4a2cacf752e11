"""What a trained run does with its data: the task views of the dashboard's Runs page, without Streamlit.

A finished run's weights come from the small checkpoint the engine stores with every completed run
(``engine.train.checkpoint_bytes``: the run's config, input shape, output sizes and its flat parameter vector). The
model is rebuilt with ``StackedModel.from_state`` and evaluated on the run's own data split (fixed by ``data_seed``):

* points:        the decision boundary, P(class 1) on a grid over the 2-D data, plus the split's points
* mnist:         the confusion matrix of the digit head
* colored_mnist: one confusion matrix per head (digit, colour)
* regression:    predicted mean +- 2 std against the truth, and a calibration table (nominal vs observed coverage)

Why the checkpoint and not a retrain: it is the exact model whose curves are on screen, it costs one forward pass,
and it does not depend on the retrain reproducing the original bit for bit (runs trained on a GPU, or in a stack of
K runs, need not). Runs without a checkpoint (diverged, failed, cancelled, still running) have no usable weights;
:class:`InspectError` says so and why.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
import torch

from engine.config import RunConfig
from engine.models import StackedModel
from engine.tasks import TaskData, load_task_data
from engine.train import load_checkpoint

SPLITS = ("train", "val", "test")
EVAL_CHUNK = 2048
CALIBRATION_LEVELS = (0.5, 0.68, 0.8, 0.9, 0.95, 0.99)
COLOR_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white")


class InspectError(Exception):
    """A run's task view cannot be computed; the message says why and what to do instead."""


@dataclass
class LoadedRun:
    """A run's model rebuilt from its checkpoint, with its config and data."""
    config: RunConfig
    model: StackedModel
    data: TaskData


@dataclass
class TaskView:
    """One run's task view. ``kind`` is boundary | confusion | regression; the frames depend on it:

    boundary:   frames["grid"] (x1, x2, p1), frames["points"] (x1, x2, label, predicted, correct)
    confusion:  frames[head] (true, predicted, count, share) per head name ("digit"; "digit", "colour")
    regression: frames["predictions"] (x, truth, mean, std, lower, upper, inside), frames["calibration"]
                (nominal, observed, n)
    ``summary`` holds the headline numbers (accuracy per head, RMSE, coverage), ``notes`` what the user should know.
    """
    kind: str
    split: str
    frames: dict[str, pd.DataFrame]
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def load_run(checkpoint: bytes | None, what: str = "this run") -> LoadedRun:
    """Rebuild a run from its checkpoint bytes. Raises InspectError when there are none or they cannot be read."""
    if checkpoint is None:
        raise InspectError(f"{what} has no checkpoint: only completed runs keep their weights (a diverged, failed, "
                           "cancelled or still-running run has none). Pick a completed run to see its task view.")
    try:
        state = load_checkpoint(checkpoint)
        config = RunConfig.from_dict(state["config"])
    except Exception as exc:  # a damaged or foreign file: say so, never a traceback
        raise InspectError(f"the checkpoint of {what} cannot be read ({type(exc).__name__}: {exc}); it may be "
                           "damaged: run `python -m engine store check` and retrain the run if needed") from None
    data = load_task_data(config)
    try:
        model = StackedModel.from_state(state, data.heads, data.target_dim)
    except Exception as exc:
        raise InspectError(f"the checkpoint of {what} does not fit its config ({type(exc).__name__}: {exc}); "
                           "it was probably written by another engine version: retrain the run") from None
    if not torch.isfinite(model.flat).all():
        raise InspectError(f"{what} has non-finite weights: it diverged, so there is no model to show")
    return LoadedRun(config, model, data)


@torch.no_grad()
def predict(model: StackedModel, x: torch.Tensor) -> list[torch.Tensor]:
    """The model's outputs on x (N, *input_shape): a list of (N, units) per head, computed in chunks on the CPU."""
    outs: list[list[torch.Tensor]] = []
    for start in range(0, x.shape[0], EVAL_CHUNK):
        heads = model(x[start:start + EVAL_CHUNK].unsqueeze(0))
        outs.append([h[0] for h in heads])
    if not outs:
        return [torch.zeros(0, u) for u in model.out_sizes]
    return [torch.cat([chunk[h] for chunk in outs]) for h in range(len(outs[0]))]


def _split(run: LoadedRun, split: str):
    if split not in SPLITS:
        raise InspectError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return getattr(run.data, split)


def _class_of(out: torch.Tensor) -> torch.Tensor:
    return (out.squeeze(-1) > 0).long() if out.shape[-1] == 1 else out.argmax(-1)


def _prob1(out: torch.Tensor) -> torch.Tensor:
    """P(class 1) of a binary head: sigmoid of one logit, or softmax of two."""
    return torch.sigmoid(out.squeeze(-1)) if out.shape[-1] == 1 else torch.softmax(out, -1)[:, 1]


# --- points ------------------------------------------------------------------------------------------------------

def decision_boundary(run: LoadedRun, split: str = "val", resolution: int = 80, margin: float = 0.25) -> TaskView:
    """P(class 1) over a resolution x resolution grid spanning all of the task's data, plus the split's points."""
    if run.config.task != "points":
        raise InspectError(f"a decision boundary needs 2-D data (task points), this run is task {run.config.task}")
    resolution = max(10, min(int(resolution), 300))
    s = _split(run, split)
    every = torch.cat([run.data.train.x, run.data.val.x, run.data.test.x])
    lo, hi = every.min(0).values - margin, every.max(0).values + margin
    g1, g2 = torch.linspace(lo[0], hi[0], resolution), torch.linspace(lo[1], hi[1], resolution)
    xx, yy = torch.meshgrid(g1, g2, indexing="xy")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    p = _prob1(predict(run.model, grid)[0])
    out = predict(run.model, s.x)[0]
    predicted = _class_of(out)
    label = s.y.long()
    points = pd.DataFrame({"x1": s.x[:, 0].numpy(), "x2": s.x[:, 1].numpy(), "label": label.numpy(),
                           "predicted": predicted.numpy(), "correct": (predicted == label).numpy()})
    frame = pd.DataFrame({"x1": grid[:, 0].numpy(), "x2": grid[:, 1].numpy(), "p1": p.numpy()})
    acc = float(points["correct"].mean()) if len(points) else float("nan")
    return TaskView("boundary", split, {"grid": frame, "points": points},
                    summary={"accuracy": acc, "n": len(points), "step_x1": float(g1[1] - g1[0]),
                             "step_x2": float(g2[1] - g2[0])})


# --- mnist / colored_mnist ------------------------------------------------------------------------------------------

def confusion_frame(true: np.ndarray, predicted: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """Every (true, predicted) cell, zeros included, with its count and its share of the true class's row."""
    k = len(labels)
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (true, predicted), 1)
    rows = counts.sum(1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts, dtype=float), where=rows > 0)
    t, p = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    return pd.DataFrame({"true": [labels[i] for i in t.ravel()], "predicted": [labels[i] for i in p.ravel()],
                         "count": counts.ravel(), "share": share.ravel()})


def confusion(run: LoadedRun, split: str = "val") -> TaskView:
    """Confusion matrices: the digit head of mnist, both heads (digit, colour) of colored_mnist."""
    task = run.config.task
    if task not in ("mnist", "colored_mnist"):
        raise InspectError(f"confusion matrices are for mnist and colored_mnist, this run is task {task}")
    s = _split(run, split)
    outs = predict(run.model, s.x)
    y = s.y.numpy()
    frames, summary = {}, {"n": int(len(y))}
    if task == "mnist":
        heads = [("digit", outs[0], y, [str(d) for d in range(10)])]
    else:
        n_colors = run.config.n_colors
        heads = [("digit", outs[0], y[:, 0], [str(d) for d in range(10)]),
                 ("colour", outs[1], y[:, 1], list(COLOR_NAMES[:n_colors]))]
    right = np.ones(len(y), dtype=bool)
    for name, out, truth, labels in heads:
        predicted = _class_of(out).numpy()
        frames[name] = confusion_frame(truth, predicted, labels)
        ok = predicted == truth
        right &= ok
        summary[f"{name}_accuracy"] = float(ok.mean()) if len(ok) else float("nan")
    if task == "colored_mnist":
        summary["accuracy"] = float(right.mean()) if len(right) else float("nan")
    return TaskView("confusion", split, frames, summary=summary)


# --- regression ------------------------------------------------------------------------------------------------------

def _regression_outputs(run: LoadedRun, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
    out = predict(run.model, x)[0]
    if run.config.gaussian_head:
        mean, log_var = out.chunk(2, dim=-1)
        return mean.numpy(), log_var.exp().sqrt().numpy()
    return out.numpy(), None


def regression_view(run: LoadedRun, split: str = "val", max_points: int = 2000) -> TaskView:
    """Predicted mean +- 2 std against the truth (raw target units when the task standardised them), and a
    calibration table: for each nominal level the share of targets inside mean +- z * std.

    A gaussian_nll run predicts its own std per sample. An mse run predicts none: it gets one constant std, the RMSE
    of its train residuals (the homoscedastic assumption the mse loss makes), and a note says so.
    """
    if run.config.task != "regression":
        raise InspectError(f"predicted mean +- 2 std is for regression, this run is task {run.config.task}")
    s = _split(run, split)
    mean, std = _regression_outputs(run, s.x)
    truth = s.y.numpy()
    notes = []
    if std is None:
        train_mean, _ = _regression_outputs(run, run.data.train.x)
        resid = train_mean - run.data.train.y.numpy()
        rmse_train = float(np.sqrt(np.mean(resid ** 2))) if resid.size else float("nan")
        std = np.full_like(mean, rmse_train)
        notes.append("loss=mse predicts no variance: the band uses one constant std, the RMSE of the train "
                     "residuals. Train with loss=gaussian_nll to get a per-sample std.")
    scale_std, shift = 1.0, 0.0
    if run.data.target_scale is not None:
        shift, scale_std = run.data.target_scale
        notes.append("values are in the target's raw units (the model was trained on standardised targets).")
    # Only the first target of a multi-target task is shown; the tasks of the study have one.
    mean_r, std_r, truth_r = mean[:, 0] * scale_std + shift, std[:, 0] * scale_std, truth[:, 0] * scale_std + shift
    finite = np.isfinite(mean_r) & np.isfinite(std_r)
    z = np.abs(truth_r - mean_r) / np.where(std_r > 0, std_r, np.nan)
    if s.x.shape[1] == 1:
        x, x_name = s.x[:, 0].numpy(), "x"
    else:
        x, x_name = np.arange(len(mean_r), dtype=float), "sample"
    preds = pd.DataFrame({"x": x, "truth": truth_r, "mean": mean_r, "std": std_r,
                          "lower": mean_r - 2 * std_r, "upper": mean_r + 2 * std_r,
                          "inside": (z <= 2) & finite})
    if x_name == "sample":
        # Several inputs: order the samples by their prediction so the band reads left to right.
        preds = preds.sort_values("mean", kind="stable").reset_index(drop=True)
        preds["x"] = np.arange(len(preds), dtype=float)
    else:
        preds = preds.sort_values("x", kind="stable").reset_index(drop=True)
    if len(preds) > max_points:
        preds = preds.iloc[np.linspace(0, len(preds) - 1, max_points).round().astype(int)].reset_index(drop=True)
    rows = []
    n = int(finite.sum())
    for level in CALIBRATION_LEVELS:
        zq = NormalDist().inv_cdf(0.5 + level / 2)
        observed = float(np.mean(z[finite] <= zq)) if n else float("nan")
        rows.append({"nominal": level, "z": zq, "observed": observed, "n": n})
    calibration = pd.DataFrame(rows)
    err = mean_r[finite] - truth_r[finite]
    summary = {"rmse": float(np.sqrt(np.mean(err ** 2))) if n else float("nan"),
               "within_2std": float(np.mean(z[finite] <= 2)) if n else float("nan"),
               "n": n, "x_axis": x_name, "per_sample_std": bool(run.config.gaussian_head)}
    if n < len(mean_r):
        notes.append(f"{len(mean_r) - n} predictions are not finite and are left out.")
    return TaskView("regression", split, {"predictions": preds, "calibration": calibration}, summary, notes)


def task_view(run: LoadedRun, split: str = "val") -> TaskView:
    """The view that fits the run's task."""
    task = run.config.task
    if task == "points":
        return decision_boundary(run, split)
    if task in ("mnist", "colored_mnist"):
        return confusion(run, split)
    return regression_view(run, split)


def view_for_checkpoint(checkpoint: bytes | None, split: str = "val", what: str = "this run") -> TaskView:
    """Checkpoint bytes -> the task view (the one call the dashboard makes)."""
    return task_view(load_run(checkpoint, what), split)


def view_for_run(store, run_id: str, split: str = "val") -> TaskView:
    """The task view of a run in a RunStore, from its stored checkpoint."""
    return view_for_checkpoint(store.load_checkpoint(run_id), split, what=f"run {run_id}")


__all__ = ["InspectError", "LoadedRun", "TaskView", "load_run", "predict", "decision_boundary", "confusion",
           "confusion_frame", "regression_view", "task_view", "view_for_checkpoint", "view_for_run",
           "CALIBRATION_LEVELS", "SPLITS"]
