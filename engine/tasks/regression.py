"""Exercise 4: regression, where input/target scale and a predicted variance matter.

Data sets:

* ``diabetes``: scikit-learn's ``load_diabetes(scaled=False)``: 442 patients, 10 raw features of large magnitude
  (age, blood pressure, serum values up to ~300), target up to 346.
* ``hetero1d``: synthetic 1-D heteroscedastic data, x ~ U(-3, 3), y = 2 sin(x) + x + noise * (0.1 + 0.5 |x|) * eps,
  eps ~ N(0, 1): the noise grows with |x|, so a model that predicts the variance (gaussian_nll) can beat one that
  does not.

With ``normalize`` (the default) inputs and targets are standardised with mean/std fitted on the train split only;
``TaskData.target_scale`` then holds the target's (mean, std) to convert predictions back. With ``normalize=False``
the raw values are kept (on diabetes, training then blows up: that is one finding of the study).
Inputs float32 (N, n_features); targets float32 (N, 1).
"""
from __future__ import annotations

import numpy as np
import torch

from engine.config import RunConfig
from engine.tasks.common import DataKey, Split, TaskData, generator, sizes, split_indices


def data_source(config: RunConfig) -> None:
    """diabetes ships with scikit-learn and hetero1d is generated: nothing of ours on disk."""
    return None


def _diabetes() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes
    data = load_diabetes(scaled=False)
    return data.data.astype(np.float64), data.target.astype(np.float64)[:, None]


def hetero1d(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(x (n, 1), y (n, 1)) of the heteroscedastic 1-D set."""
    x = rng.uniform(-3.0, 3.0, size=(n, 1))
    y = 2.0 * np.sin(x) + x + noise * (0.1 + 0.5 * np.abs(x)) * rng.normal(size=(n, 1))
    return x, y


def _standardiser(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = a.mean(axis=0), a.std(axis=0)
    # A constant column would divide by zero; leave it centred instead.
    return mean, np.where(std > 0, std, 1.0)


def load(key: DataKey) -> TaskData:
    if key.dataset == "diabetes":
        x, y = _diabetes()
        what = f"diabetes, {len(x)} patients, {x.shape[1]} raw features"
    else:
        x, y = hetero1d(key.n_samples, key.noise, generator(key.data_seed, 1))
        what = f"hetero1d, {key.n_samples} samples, noise {key.noise:g}"
    idx = split_indices(len(x), key.data_seed, key.val_fraction, key.test_fraction)

    target_scale = None
    if key.normalize:
        # Fit on train only: val/test must not leak into the statistics the model is trained under.
        train = idx[0]
        x_mean, x_std = _standardiser(x[train])
        y_mean, y_std = _standardiser(y[train])
        x, y = (x - x_mean) / x_std, (y - y_mean) / y_std
        target_scale = (float(y_mean[0]), float(y_std[0]))
        what += ", standardised on train"
    else:
        what += ", raw (not normalised)"

    def split(i: np.ndarray) -> Split:
        return Split(torch.from_numpy(x[i].astype(np.float32)), torch.from_numpy(y[i].astype(np.float32)))

    train, val, test = (split(i) for i in idx)
    return TaskData(train, val, test, input_shape=(x.shape[1],), heads=(), target_dim=y.shape[1],
                    description=f"{what}: {sizes(train, val, test)}", target_scale=target_scale)
