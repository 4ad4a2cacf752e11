"""Losses and task metrics, computed per run for K stacked runs.

Every function takes the model's outputs as a list of (K, B, units) tensors (one per head) and the targets of the
same K batches, and returns per-run values of shape (K,): a run's loss is the mean over its own batch, exactly what
it would be if the run were trained alone. The metric names, and which way is better, are engine/metrics.py's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.config import RunConfig


def _classification_loss(loss: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """out (K, B, units), y (K, B) of class indices (float 0/1 for one-logit binary heads) -> (K,)."""
    k, b, units = out.shape
    if units == 1:  # binary head with one logit (points, as in the study)
        logit, target = out.squeeze(-1), y.float()
        if loss == "bce":
            return F.binary_cross_entropy_with_logits(logit, target, reduction="none").mean(1)
        return ((torch.sigmoid(logit) - target) ** 2).mean(1)  # MSE on the probability
    labels = y.long()
    if loss == "cross_entropy":
        return F.cross_entropy(out.reshape(k * b, units), labels.reshape(-1), reduction="none").view(k, b).mean(1)
    # MSE between the softmax probabilities and the one-hot target, averaged over classes (nn.MSELoss's mean).
    one_hot = F.one_hot(labels, units).to(out.dtype)
    return ((torch.softmax(out, dim=-1) - one_hot) ** 2).mean(dim=(1, 2))


def _gaussian_parts(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian head (K, B, 2T) -> mean (K, B, T), variance (K, B, T). The head predicts the log-variance."""
    mean, log_var = out.chunk(2, dim=-1)
    return mean, log_var.exp()


def per_run_loss(config: RunConfig, outs: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """Training loss of each of the K runs: (K,)."""
    if config.task == "regression":
        out = outs[0]
        if config.gaussian_head:
            mean, var = _gaussian_parts(out)
            return F.gaussian_nll_loss(mean, y, var, reduction="none").mean(dim=(1, 2))
        return ((out - y) ** 2).mean(dim=(1, 2))
    if config.task == "colored_mnist":
        # Two heads, one loss each, summed: both heads learn at the scale of a single-head task.
        return sum(_classification_loss(config.loss, out, y[..., h]) for h, out in enumerate(outs))
    return _classification_loss(config.loss, outs[0], y)


def _predicted_class(out: torch.Tensor) -> torch.Tensor:
    return (out.squeeze(-1) > 0).long() if out.shape[-1] == 1 else out.argmax(-1)


def metric_sums(config: RunConfig, outs: list[torch.Tensor], y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-run *sums* over the batch of each metric, (K,) each: summed across batches, divided by N at the end."""
    if config.task == "regression":
        out = outs[0]
        if not config.gaussian_head:
            return {"mse": ((out - y) ** 2).mean(-1).sum(1)}
        mean, var = _gaussian_parts(out)
        z = (y - mean).abs() / var.sqrt()
        return {"mse": ((mean - y) ** 2).mean(-1).sum(1),
                "nll": F.gaussian_nll_loss(mean, y, var, reduction="none").mean(-1).sum(1),
                "within_1std": (z <= 1).float().mean(-1).sum(1),
                "within_2std": (z <= 2).float().mean(-1).sum(1)}
    if config.task == "colored_mnist":
        digit = _predicted_class(outs[0]) == y[..., 0]
        color = _predicted_class(outs[1]) == y[..., 1]
        return {"digit_accuracy": digit.float().sum(1), "color_accuracy": color.float().sum(1),
                # "accuracy" of the two-head task is the strict one: both heads right.
                "accuracy": (digit & color).float().sum(1)}
    return {"accuracy": (_predicted_class(outs[0]) == y.long()).float().sum(1)}

