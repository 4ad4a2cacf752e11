"""One epoch of the exercise-2 CNN on full MNIST reaches the reference's accuracy range (issue 10's acceptance).

The reference trains its 3-layer CNN (20 channels, tanh, max-pool) with SGD at batch 10 and reports 96.5% to 98.2%
validation accuracy; one epoch is 5,100 steps on the 51,000 training images. Measured here: 96.8% after one epoch
(cross-entropy, SGD lr 0.025, the reference's best settings, seed 0). 95% leaves 1.8 points for other seeds and
kernels, while a broken model, loss, data order or optimizer step stays far below it (a linear model reaches 88%,
a net that does not train 10%).

Uses ``../shared/data/mnist`` (the four idx files) and skips, saying so, where that folder is absent.
"""
from __future__ import annotations

import pytest

from engine.config import RunConfig
from engine.sinks import MemorySink
from engine.tasks import mnist
from engine.train import train_stack

@pytest.mark.slow
def test_one_epoch_of_the_exercise2_cnn_reaches_95_percent(shared_mnist, monkeypatch):
    monkeypatch.setenv(mnist.DATA_ENV, str(shared_mnist))
    config = RunConfig(task="mnist", dataset="full", model="cnn", channels=(20, 20, 20), activation="tanh",
                       loss="cross_entropy", optimizer="sgd", lr=0.025, batch_size=10, epochs=1, seed=0)
    sink = MemorySink()
    assert train_stack([config], [sink], device="cpu") == ["completed"]
    (epoch, metrics), = sink.epochs
    assert epoch == 0
    assert metrics["val_accuracy"] >= 0.95, metrics
