"""Exercise 1: 2-D binary classification that a linear model cannot solve.

Data sets: ``circles`` and ``moons`` (scikit-learn), ``xor`` (uniform square labelled by the sign of x*y) and
``spirals`` (two interleaved spirals). Inputs are float32 (N, 2) within about [-1.5, 1.5]; no normalisation is
applied. Targets are float32 (N,) of 0./1. The share of class 1 is exactly ``class_balance`` over all splits.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engine.config import RunConfig
from engine.tasks.common import DataKey, TaskData, generator, sizes, split_indices, take

# Draws m labelled points (X float (m, 2), y int (m,)); each class must get a fair share so that oversampling works.
Sampler = Callable[[int, np.random.Generator, float], tuple[np.ndarray, np.ndarray]]


def _circles(m: int, rng: np.random.Generator, noise: float) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_circles
    # factor 0.5: inner radius 0.5, outer 1, so noise 0.1 leaves a visible gap.
    return make_circles(n_samples=m, noise=noise, factor=0.5, random_state=int(rng.integers(2**31)))


def _moons(m: int, rng: np.random.Generator, noise: float) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_moons
    x, y = make_moons(n_samples=m, noise=noise, random_state=int(rng.integers(2**31)))
    # make_moons spans x in [-1, 2], y in [-0.5, 1]; centre it at the origin.
    return x - np.array([0.5, 0.25]), y


def _xor(m: int, rng: np.random.Generator, noise: float) -> tuple[np.ndarray, np.ndarray]:
    # Labels come from the clean point; the noise then blurs the points across the axes.
    x = rng.uniform(-1.0, 1.0, size=(m, 2))
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    return x + rng.normal(0.0, noise, size=x.shape), y


def _spirals(m: int, rng: np.random.Generator, noise: float) -> tuple[np.ndarray, np.ndarray]:
    y = np.arange(m) % 2
    # sqrt spreads points evenly over the area rather than crowding the centre; 1.5 turns, radius up to 1.5.
    t = np.sqrt(rng.uniform(0.0, 1.0, size=m))
    angle = t * 3 * np.pi + y * np.pi  # class 1 is class 0 rotated by half a turn
    r = 1.5 * t
    x = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)
    return x + rng.normal(0.0, noise, size=x.shape), y.astype(np.int64)


SAMPLERS: dict[str, Sampler] = {"circles": _circles, "moons": _moons, "xor": _xor, "spirals": _spirals}


def data_source(config: RunConfig) -> None:
    """Generated from the data fields of the config: nothing on disk."""
    return None


def sample_balanced(sampler: Sampler, n0: int, n1: int, rng: np.random.Generator,
                    noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Exactly n0 points of class 0 and n1 of class 1: generate enough and subsample each class."""
    m = 2 * max(n0, n1) + 16
    while True:
        x, y = sampler(m, rng, noise)
        i0, i1 = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
        if len(i0) >= n0 and len(i1) >= n1:
            break
        m *= 2  # only the random-label xor sampler can fall short
    keep = np.concatenate([rng.choice(i0, n0, replace=False), rng.choice(i1, n1, replace=False)])
    return x[keep], y[keep]


def load(key: DataKey) -> TaskData:
    n = key.n_samples
    n1 = int(round(n * key.class_balance))
    x, y = sample_balanced(SAMPLERS[key.dataset], n - n1, n1, generator(key.data_seed, 1), key.noise)
    y = y.astype(np.float32)  # bce/mse losses take float 0./1. targets
    train, val, test = (take(x, y, idx) for idx in split_indices(n, key.data_seed, key.val_fraction,
                                                                  key.test_fraction))
    balance = "" if key.class_balance == 0.5 else f", class 1 share {key.class_balance:g}"
    return TaskData(train, val, test, input_shape=(2,), heads=(2,), target_dim=0,
                    description=f"{key.dataset}, {n} samples, noise {key.noise:g}{balance}: "
                                f"{sizes(train, val, test)}")
