"""Shared base of the task modules: the data classes, the cache key and the train/val/test split.

Each task module (``points``, ``mnist``, ``colored_mnist``, ``regression``) exposes

    load(key: DataKey) -> TaskData              builds the data on the CPU
    data_source(config: RunConfig) -> str | None   the files the data is read from, part of the cache key
                                                   (None: generated or bundled with a library)

and engine/tasks/__init__.py picks the module and caches what it loads.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch



class DataNotAvailableError(RuntimeError):
    """Data that cannot be generated (full MNIST) is not on disk; the message says where it was looked for and how
    to get it."""


@dataclass(frozen=True)
class Split:
    """One split: inputs ``x`` float32 (N, *input_shape) and targets ``y`` (dtype and shape depend on the task)."""
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: str | torch.device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class TaskData:
    """Everything a run needs to know about its data. Treat the tensors as read-only: they are shared through the
    cache by every run with the same data config."""
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    heads: tuple[int, ...]
    target_dim: int
    description: str
    # Regression with normalize=True: (mean, std) of the raw target fitted on the train split, so predictions can be
    # converted back to raw units as ``y_raw = y * std + mean``. None when targets are raw or the task classifies.
    target_scale: tuple[float, float] | None = None

    def to(self, device: str | torch.device) -> "TaskData":
        return dataclasses.replace(self, train=self.train.to(device), val=self.val.to(device),
                                   test=self.test.to(device))


class DataKey(NamedTuple):
    """The fields of a RunConfig that decide the data; the cache key. ``data_dir`` is the task's ``data_source``:
    the resolved folder of on-disk data (full MNIST), so that pointing ABLATION_LAB_DATA elsewhere is not served
    stale data; None otherwise."""
    task: str
    dataset: str
    n_samples: int | None
    noise: float | None
    class_balance: float | None
    n_colors: int | None
    normalize: bool | None
    data_seed: int
    val_fraction: float
    test_fraction: float
    data_dir: str | None


def split_indices(n: int, data_seed: int, val_fraction: float,
                  test_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint (train, val, test) index arrays over ``range(n)``, fixed by ``data_seed``.

    A Generator seeded by ``data_seed`` permutes the indices; test takes the first ``round(n * test_fraction)``,
    val the next ``round(n * val_fraction)``, train the rest.
    """
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    if n - n_test - n_val < 1:
        raise ValueError(f"{n} samples leave no training data with val_fraction={val_fraction}, "
                         f"test_fraction={test_fraction}")
    perm = np.random.default_rng(data_seed).permutation(n)
    return perm[n_test + n_val:], perm[n_test:n_test + n_val], perm[:n_test]


def take(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> Split:
    """The rows ``idx`` of numpy inputs/targets as a Split of contiguous tensors (x becomes float32, y keeps its
    dtype)."""
    return Split(torch.from_numpy(np.ascontiguousarray(x[idx], dtype=np.float32)),
                 torch.from_numpy(np.ascontiguousarray(y[idx])))


def generator(data_seed: int, purpose: int) -> np.random.Generator:
    """A Generator for one purpose (sampling, colouring, ...) that is independent of the split permutation, which
    uses ``default_rng(data_seed)`` itself: the same seed must not drive two streams in lockstep."""
    return np.random.default_rng([data_seed, purpose])


def sizes(*splits: Split) -> str:
    """'700/150/150' for a description."""
    return "/".join(str(len(s)) for s in splits)
