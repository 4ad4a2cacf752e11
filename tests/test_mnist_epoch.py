"""One epoch of the exercise-2 CNN on full MNIST reaches the reference's accuracy range (issue 10's acceptance).

The reference trains its 3-layer CNN (20 channels, tanh, max-pool) with SGD at batch 10 and reports 96.5% to 98.2%
validation accuracy; one epoch is 5,100 steps on the 51,000 training images. Measured here: 96.8% after one epoch
(cross-entropy, SGD lr 0.025, the reference's best settings, seed 0). 95% leaves 1.8 points for other seeds and
kernels, while a broken model, loss, data order or optimizer step stays far below it (a linear model reaches 88%,
a net that does not train 10%).

Uses ``../shared/data/mnist`` (the four idx files) and skips, saying so, where that folder is absent.
"""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from engine.config import RunConfig
from engine.sinks import MemorySink
from engine.tasks import DataNotAvailableError
from engine.tasks import mnist
from engine.train import train_stack

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="module")
def full_mnist_dir(tmp_path_factory) -> Path:
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"full MNIST is not on this machine ({SHARED_MNIST} is absent)")
    try:
        mnist.full(SHARED_MNIST)
        return SHARED_MNIST
    except DataNotAvailableError:
        # A loader that reads only the .gz form: hand it a compressed copy (level 1: a few seconds).
        folder = tmp_path_factory.mktemp("mnist-gz")
        for name in mnist.MNIST_FILES:
            with open(SHARED_MNIST / name.removesuffix(".gz"), "rb") as src, gzip.open(folder / name, "wb", 1) as dst:
                shutil.copyfileobj(src, dst)
        return folder


@pytest.mark.slow
def test_one_epoch_of_the_exercise2_cnn_reaches_95_percent(full_mnist_dir, monkeypatch):
    monkeypatch.setenv(mnist.DATA_ENV, str(full_mnist_dir))
    config = RunConfig(task="mnist", dataset="full", model="cnn", channels=(20, 20, 20), activation="tanh",
                       loss="cross_entropy", optimizer="sgd", lr=0.025, batch_size=10, epochs=1, seed=0)
    sink = MemorySink()
    assert train_stack([config], [sink], device="cpu") == ["completed"]
    (epoch, metrics), = sink.epochs
    assert epoch == 0
    assert metrics["val_accuracy"] >= 0.95, metrics
