"""Engine vs a plain PyTorch DataLoader loop, same models, same data, same epochs, in one process.

The baseline is the training loop the reference study wrote: ``TensorDataset`` + ``DataLoader(shuffle=True)``, an
``nn.Sequential`` model, ``torch.optim``, one ``loss.backward()`` per batch, and the validation accuracy computed at
the end of each epoch. The engine side goes through the real path, store included: ``run_configs`` (or, for the
full-MNIST figures, ``train_stack`` with the same store sinks) writes every epoch to a temporary run store.

    .venv/bin/python bench/train_throughput.py            # exercise 1 and 2 on the sample (about a minute)
    .venv/bin/python bench/train_throughput.py --quick    # a few epochs, for a smoke check
    ABLATION_LAB_DATA=../shared/data/mnist .venv/bin/python bench/train_throughput.py --mnist [--fraction 0.1]

``--mnist``: the exercise-2 CNN of the reference (3 conv layers of 20 channels, tanh, cross-entropy, SGD lr 0.025)
on full MNIST: one epoch at batch 10 and at batch 64, and a 12-run grid (3 learning rates x 4 seeds, batch 10)
trained as one stack against 12 DataLoader loops one after the other. To keep it minutes, each side trains one
epoch on the first ``--fraction`` of the 51,000 training images and validates on the same fraction of the 9,000
validation images; per-epoch seconds are that time divided by the fraction (both sides' cost is per step, so the
ratio does not depend on it). Both sides use ``--threads`` torch threads (default: torch's own, what ``engine
train`` uses).

Ends with one ``name: value`` line per headline figure.
"""
from __future__ import annotations

import argparse
import dataclasses
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
from engine.sinks import StoreSink  # noqa: E402
from engine.store import RunStore  # noqa: E402
from engine.tasks import Split, load_task_data  # noqa: E402
from engine.train import run_configs, train_stack  # noqa: E402


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


def dataloader_loop(config: RunConfig, data=None, device: str = "cpu") -> float:
    """Seconds for the study-style loop: DataLoader batches, torch.optim, per-epoch validation accuracy."""
    data = data or load_task_data(config)
    torch.manual_seed(config.seed)
    binary = config.task == "points"
    model = study_model(config, data.input_shape, 1 if binary else 10).to(device)
    val_x, val_y = data.val.x.to(device), data.val.y.to(device)
    opt_cls = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[config.optimizer]
    optimizer = opt_cls(model.parameters(), lr=config.lr)
    loader = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=config.batch_size, shuffle=True)
    start = time.perf_counter()
    for _ in range(config.epochs):
        model.train()
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            optimizer.zero_grad()
            out = model(xb)
            if binary:
                loss = nn.functional.mse_loss(torch.sigmoid(out.squeeze(1)), yb)
            elif config.loss == "mse":  # the study's MSE between the softmax and the one-hot target
                loss = nn.functional.mse_loss(torch.softmax(out, 1), nn.functional.one_hot(yb, 10).float())
            else:
                loss = nn.functional.cross_entropy(out, yb)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            out = model(val_x)
            pred = (out.squeeze(1) > 0).float() if binary else out.argmax(1)
            (pred == val_y).float().mean().item()
    return time.perf_counter() - start


def engine_loop(config: RunConfig, device: str = "cpu") -> float:
    """Seconds for the engine to train the same config, logging every epoch to a fresh store."""
    load_task_data(config)  # data loading is outside both timings
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        outcomes = run_configs([config], RunStore(root), device=device)
        elapsed = time.perf_counter() - start
    assert outcomes[0].status == "completed", outcomes
    return elapsed


def stack_loop(configs: list[RunConfig], data, device: str = "cpu") -> float:
    """Seconds for the engine to train ``configs`` as one stack on ``data``, every epoch written to a fresh store."""
    with tempfile.TemporaryDirectory() as root:
        store = RunStore(root)
        sinks = [StoreSink(store) for _ in configs]
        statuses = train_stack(configs, sinks, device=device, data=data)
    assert statuses == ["completed"] * len(configs), statuses


def timed(fn, *args) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one call. On a machine shared with other jobs the CPU time is
    the steadier figure: it counts only what this process computed, not the time it waited for a core."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def ratio_line(name: str, base: list[tuple[float, float]], eng: list[tuple[float, float]], scale: float,
               figures: dict[str, float]) -> None:
    """Median wall and CPU seconds of both sides (times ``scale``), their ratios, into ``figures``."""
    med = lambda pairs, i: statistics.median(p[i] for p in pairs) * scale
    for i, clock in ((0, "wall"), (1, "cpu")):
        figures[f"{name}_dataloader_{clock}_s"] = med(base, i)
        figures[f"{name}_engine_{clock}_s"] = med(eng, i)
        figures[f"{name}_speedup_{clock}"] = med(base, i) / med(eng, i)
    print(f"{name}: dataloader {med(base, 0):.1f}s wall / {med(base, 1):.1f}s cpu, engine {med(eng, 0):.1f}s wall / "
          f"{med(eng, 1):.1f}s cpu (median of {len(base)}; per-repeat cpu ratios "
          f"{', '.join(f'{b[1] / e[1]:.2f}' for b, e in zip(base, eng))})")


def epoch_fraction(data, fraction: float):
    """The first ``fraction`` of the training and validation images (the test split is not used)."""
    cut = lambda split: Split(split.x[:round(len(split.x) * fraction)], split.y[:round(len(split.y) * fraction)])
    return dataclasses.replace(data, train=cut(data.train), val=cut(data.val))


def mnist_figures(args) -> dict[str, float]:
    """Full-MNIST exercise 2: one epoch at batch 10 and 64, and a 12-run grid, engine vs DataLoader loops."""
    ex2 = RunConfig(task="mnist", dataset="full", model="cnn", channels=(20, 20, 20), activation="tanh",
                    loss="cross_entropy", optimizer="sgd", lr=0.025, batch_size=10, epochs=1)
    data = epoch_fraction(load_task_data(ex2), args.fraction)
    print(f"full MNIST: {len(data.train.x)} training and {len(data.val.x)} validation images per timed epoch "
          f"(fraction {args.fraction:g} of an epoch; per-epoch seconds are extrapolated), "
          f"{torch.get_num_threads()} torch thread(s) each side")
    figures: dict[str, float] = {}
    stack_loop([ex2], epoch_fraction(data, 0.01), args.device)  # warm-up: first-call costs off both sides
    dataloader_loop(ex2, epoch_fraction(data, 0.01), args.device)
    for batch in (10, 64):
        base, eng = [], []
        for r in range(args.repeats):  # alternating, so drift in the machine's load hits both sides alike
            cfg = ex2.replace(batch_size=batch, seed=r)
            base.append(timed(dataloader_loop, cfg, data, args.device))
            eng.append(timed(stack_loop, [cfg], data, args.device))
        ratio_line(f"mnist_epoch_b{batch}", base, eng, 1 / args.fraction, figures)
    grid = [ex2.replace(lr=lr, seed=seed) for lr in (0.01, 0.025, 0.05) for seed in range(4)]
    base, eng = [], []
    for _ in range(max(1, args.repeats - 1)):
        runs = [timed(dataloader_loop, cfg, data, args.device) for cfg in grid]
        base.append((sum(w for w, _ in runs), sum(c for _, c in runs)))
        eng.append(timed(stack_loop, grid, data, args.device))
    ratio_line(f"mnist_grid{len(grid)}", base, eng, 1 / args.fraction, figures)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repeats")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mnist", action="store_true", help="the full-MNIST exercise-2 figures instead")
    parser.add_argument("--fraction", type=float, default=0.1, help="--mnist: share of an epoch timed [0.1]")
    parser.add_argument("--threads", type=int, default=None, help="--mnist: torch threads [torch's default]")
    parser.add_argument("--device", default="cpu", help="where both sides train: cpu or cuda [cpu]")
    args = parser.parse_args()
    if args.mnist:
        if args.threads:
            torch.set_num_threads(args.threads)
        figures = mnist_figures(args)
        for name, value in figures.items():
            print(f"{name}: {value:.3f}")
        return
    torch.set_num_threads(1)  # one thread each, as a study's training processes use
    epochs1, epochs2 = (2, 1) if args.quick else (20, 2)
    repeats = 1 if args.quick else args.repeats
    ex1 = RunConfig(task="points", hidden=(75,), activation="tanh", optimizer="adam", lr=0.01, batch_size=10,
                    epochs=epochs1, loss="mse")
    ex2 = RunConfig(task="mnist", model="cnn", channels=(10, 10, 10), activation="tanh", optimizer="sgd", lr=0.1,
                    batch_size=10, epochs=epochs2)
    figures: dict[str, float] = {}
    for name, config in (("ex1", ex1), ("ex2", ex2)):
        # Warm-up, untimed: the first call of each side in a process pays one-off costs (the optimizer's and the
        # DataLoader's first use, the store's first Parquet write, oneDNN primitive creation), up to 2.5 s of CPU
        # for the baseline here, and on a fresh machine more. A run of 0.3 s cannot absorb that.
        dataloader_loop(config.replace(seed=10_000, epochs=1), None, args.device)
        engine_loop(config.replace(seed=10_000, epochs=1), args.device)
        base, eng = [], []
        for r in range(repeats):
            # Alternate so that drift in machine load hits both sides alike; distinct seeds defeat the run cache.
            cfg = config.replace(seed=r)
            base.append(timed(dataloader_loop, cfg, None, args.device))
            eng.append(timed(engine_loop, cfg, args.device))
        ratio_line(f"{name}_{config.epochs}_epochs", base, eng, 1.0, figures)
        figures[f"speedup_vs_dataloader_{name}"] = figures[f"{name}_{config.epochs}_epochs_speedup_wall"]
    for name, value in figures.items():
        print(f"{name}: {value:.3f}")


if __name__ == "__main__":
    main()
