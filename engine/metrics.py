"""What a run logs, and which way is better: the facts about metric names, in one place (no torch).

engine/objectives.py computes the task metrics and engine/train/loop.py logs them under these names; a test holds the
training loop to ``logged_metrics``. Study files (engine/study/spec.py) and the dashboard's "better is" choices
(ui/shape.py) ask here.
"""
from __future__ import annotations

from engine.config import RunConfig

# Logged every epoch by every run, beside val_loss and val_<task metric>.
EPOCH_METRICS = ("train_loss", "grad_norm", "lr", "epoch_time_s")
# A metric whose name contains one of these is better high; every other one (losses, errors, NLL, norms, times) low.
HIGHER_IS_BETTER = ("accuracy", "within_")


def task_metrics(config: RunConfig) -> tuple[str, ...]:
    """The metrics of the config's task, measured on every evaluated split (val_<m>, test_<m>) beside the loss."""
    if config.task == "regression":
        return ("mse", "nll", "within_1std", "within_2std") if config.gaussian_head else ("mse",)
    if config.task == "colored_mnist":
        return ("digit_accuracy", "color_accuracy", "accuracy")
    return ("accuracy",)


def logged_metrics(config: RunConfig) -> set[str]:
    """Every metric name a run of ``config`` logs per epoch, plus its test_* summary values."""
    names = ("loss",) + task_metrics(config)
    out = set(EPOCH_METRICS) | {f"val_{n}" for n in names}
    if config.evaluate_test:
        out |= {f"test_{n}" for n in names}
    return out


def goal(metric: str) -> str:
    """'max' for accuracies and coverage (within_1std), 'min' for everything else."""
    return "max" if any(k in metric for k in HIGHER_IS_BETTER) else "min"


def headline_metric(config: RunConfig) -> tuple[str, str]:
    """The validation metric that ranks runs of this config's task, and whether higher ('max') or lower is better."""
    if config.task == "regression":
        metric = "val_nll" if config.gaussian_head else "val_mse"
    else:
        metric = "val_accuracy"
    return metric, goal(metric)
