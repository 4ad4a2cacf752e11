"""Engine vs a plain PyTorch DataLoader loop, same models, same data, same epochs, in one process.

The baseline is the training loop the reference study wrote: ``TensorDataset`` + ``DataLoader(shuffle=True)``, an
``nn.Sequential`` model, ``torch.optim``, one ``loss.backward()`` per batch, and the validation accuracy computed at
the end of each epoch. The engine side goes through the real path, store included: ``run_configs`` writes every
epoch to a temporary run store.

    .venv/bin/python bench/train_throughput.py            # full figures (about a minute on 2 cores)
    .venv/bin/python bench/train_throughput.py --quick    # a few epochs, for a smoke check

Ends with one ``name: value`` line per headline figure.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config import RunConfig  # noqa: E402
from engine.store import RunStore  # noqa: E402
from engine.tasks import load_task_data  # noqa: E402
from engine.train import run_configs  # noqa: E402


def study_model(config: RunConfig, input_shape, n_out: int) -> nn.Module:
    """The study's models written the usual way: nn.Linear / nn.Conv2d layers in an nn.Sequential."""
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[config.activation]
    if config.model == "mlp":
        layers, width = [nn.Flatten()], input_shape[0]
        for units in config.hidden:
            layers += [nn.Linear(width, units), act()]
            width = units
        return nn.Sequential(*layers, nn.Linear(width, n_out))
    layers, c, hw = [], input_shape[0], input_shape[1]
    for out_c, k in zip(config.channels, config.kernel_sizes):
        layers += [nn.Conv2d(c, out_c, k, padding=k // 2), act(), nn.MaxPool2d(2)]
        c, hw = out_c, hw // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * hw * hw, n_out))


def dataloader_loop(config: RunConfig) -> float:
    """Seconds for the study-style loop: DataLoader batches, torch.optim, per-epoch validation accuracy."""
    data = load_task_data(config)
    torch.manual_seed(config.seed)
    binary = config.task == "points"
    model = study_model(config, data.input_shape, 1 if binary else 10)
    opt_cls = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[config.optimizer]
    optimizer = opt_cls(model.parameters(), lr=config.lr)
    loader = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=config.batch_size, shuffle=True)
    start = time.perf_counter()
    for _ in range(config.epochs):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            out = model(xb)
            if binary:
                loss = nn.functional.mse_loss(torch.sigmoid(out.squeeze(1)), yb)
            else:
                loss = nn.functional.cross_entropy(out, yb)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            out = model(data.val.x)
            pred = (out.squeeze(1) > 0).float() if binary else out.argmax(1)
            (pred == data.val.y).float().mean().item()
    return time.perf_counter() - start


def engine_loop(config: RunConfig) -> float:
    """Seconds for the engine to train the same config, logging every epoch to a fresh store."""
    load_task_data(config)  # data loading is outside both timings
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        outcomes = run_configs([config], RunStore(root), device="cpu")
        elapsed = time.perf_counter() - start
    assert outcomes[0].status == "completed", outcomes
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repeats")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread each, as a study's training processes use
    epochs1, epochs2 = (2, 1) if args.quick else (20, 2)
    repeats = 1 if args.quick else args.repeats
    ex1 = RunConfig(task="points", hidden=(75,), activation="tanh", optimizer="adam", lr=0.01, batch_size=10,
                    epochs=epochs1, loss="mse")
    ex2 = RunConfig(task="mnist", model="cnn", channels=(10, 10, 10), activation="tanh", optimizer="sgd", lr=0.1,
                    batch_size=10, epochs=epochs2)
    figures = {}
    for name, config in (("ex1", ex1), ("ex2", ex2)):
        base, eng = [], []
        for r in range(repeats):
            # Alternate so that drift in machine load hits both sides alike; distinct seeds defeat the run cache.
            cfg = config.replace(seed=r)
            base.append(dataloader_loop(cfg))
            eng.append(engine_loop(cfg))
        b, e = statistics.median(base), statistics.median(eng)
        print(f"{name}: {config.epochs} epochs, dataloader {b:.3f}s, engine {e:.3f}s (median of {repeats})")
        figures[f"dataloader_s_{name}"] = b
        figures[f"engine_s_{name}"] = e
        figures[f"speedup_vs_dataloader_{name}"] = b / e
    for name, value in figures.items():
        print(f"{name}: {value:.3f}")


if __name__ == "__main__":
    main()
