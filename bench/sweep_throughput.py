"""A 48-run exercise-1 sweep: the study runner vs the same 48 runs as sequential plain-PyTorch DataLoader loops.

The grid: 3 activations (sigmoid, tanh, relu) x 4 learning rates (0.01, 0.03, 0.1, 0.3) x 4 seeds of an
exercise-1 model with 2 hidden layers (default 2 -> 75 -> 75 -> 1: the study's 75 neurons, twice; ``--hidden 100,150``
for its best 3-layer net), MSE on the sigmoid output, SGD, batch 10, 20 epochs on the circles points (700 training
samples), validation accuracy every epoch.

* study runner: ``run_study`` on a fresh temporary store, as ``python -m engine study run`` does it: runs that differ
  only in seed and learning rate train as one stacked model (3 stacks of 16), the stacks in parallel training processes
  (one per core, one torch thread each), every epoch of every run written to the store. Timed end to end: planning,
  process start-up (fork, or spawn + import torch), training, store writes.
* baseline: the loop the reference study wrote, once per run, one after the other: ``TensorDataset`` +
  ``DataLoader(shuffle=True)``, an ``nn.Sequential`` model, ``torch.optim.SGD``, ``loss.backward()`` per batch, and
  the validation accuracy at the end of each epoch. One torch thread (faster than two for a model this small,
  ``--baseline-threads`` to change). Data loading is outside the timing.

    .venv/bin/python bench/sweep_throughput.py             # the full comparison (~2 minutes on 2 cores)
    .venv/bin/python bench/sweep_throughput.py --quick     # 2 epochs, for a smoke check

Ends with one ``name: value`` line per headline figure.
"""
from __future__ import annotations

import argparse
import os
import statistics
import platform
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
from engine.study.spec import load_study  # noqa: E402
from engine.tasks import load_task_data  # noqa: E402

ACTIVATIONS = ("sigmoid", "tanh", "relu")
LRS = (0.01, 0.03, 0.1, 0.3)
SEEDS = (0, 1, 2, 3)

STUDY = """
name = "bench-sweep"
description = "48-run exercise-1 grid for bench/sweep_throughput.py"
seeds = [0, 1, 2, 3]
[base]
task = "points"
dataset = "circles"
hidden = {hidden}
loss = "mse"
optimizer = "sgd"
batch_size = 10
epochs = {epochs}
[factors]
activation = ["sigmoid", "tanh", "relu"]
lr = [0.01, 0.03, 0.1, 0.3]
"""


def dataloader_run(config: RunConfig) -> float:
    """One run the way the study wrote it; returns the final validation accuracy."""
    data = load_task_data(config)
    torch.manual_seed(config.seed)
    act = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}[config.activation]
    layers, width = [], 2
    for units in config.hidden:
        layers += [nn.Linear(width, units), act()]
        width = units
    model = nn.Sequential(*layers, nn.Linear(width, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    loader = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=config.batch_size, shuffle=True)
    acc = 0.0
    for _ in range(config.epochs):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(torch.sigmoid(model(xb).squeeze(1)), yb)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            pred = (model(data.val.x).squeeze(1) > 0).float()
            acc = (pred == data.val.y).float().mean().item()
    return acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs instead of 20")
    parser.add_argument("--workers", type=int, default=None, help="training processes [default: one per core]")
    parser.add_argument("--hidden", default="50,50", help="the two hidden widths [default: 50,50]")
    parser.add_argument("--baseline-threads", type=int, default=1, help="torch threads of the baseline [default: 1]")
    parser.add_argument("--device", default="cpu", help="where the study runner trains: cpu or cuda [cpu]")
    parser.add_argument("--repeats", type=int, default=3,
                        help="study runner repeats, each on a fresh store; the median counts [default: 3]")
    args = parser.parse_args()
    hidden = [int(w) for w in args.hidden.split(",")]
    epochs = 2 if args.quick else 20
    from engine.study.executor import format_result, run_study

    times = []
    with tempfile.TemporaryDirectory() as tmp:
        study_file = Path(tmp) / "bench_sweep.toml"
        study_file.write_text(STUDY.format(epochs=epochs, hidden=hidden))
        spec = load_study(study_file)
        assert len(spec.runs) == 48, len(spec.runs)
        load_task_data(spec.runs[0].config)  # data loading is outside both timings
        for r in range(args.repeats):
            store = RunStore(Path(tmp) / f"store{r}")  # a fresh store each time: nothing is cached
            t0 = time.perf_counter()
            result = run_study(spec, store, workers=args.workers, device=args.device, show_progress=False)
            times.append(time.perf_counter() - t0)
            assert result.ok and result.n_trained == 48, result.statuses()
        print(format_result(result))
    study_s = statistics.median(times)

    configs = [c.config for c in spec.runs]
    torch.set_num_threads(args.baseline_threads)
    dataloader_run(configs[0].replace(epochs=1))  # warm-up
    t0 = time.perf_counter()
    for config in configs:
        dataloader_run(config)
    baseline_s = time.perf_counter() - t0

    workers = result.workers
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch thread(s) for the baseline on the CPU, study runner on {args.device}")
    print(f"grid: {len(configs)} runs ({len(ACTIVATIONS)} activations x {len(LRS)} lrs x {len(SEEDS)} seeds), "
          f"hidden {hidden}, batch 10, {epochs} epochs")
    print(f"study runner: {study_s:.2f}s median of {len(times)} ({', '.join(f'{t:.2f}' for t in times)}; "
          f"{workers} training processes, stacked; store writes included)")
    print(f"dataloader loops: {baseline_s:.2f}s (48 runs one after the other)")
    print(f"sweep_runs: {len(configs)}")
    print(f"sweep_epochs: {epochs}")
    print(f"sweep_study_runner_s: {study_s:.3f}")
    print(f"sweep_dataloader_s: {baseline_s:.3f}")
    print(f"sweep_speedup_vs_dataloader: {baseline_s / study_s:.2f}")


if __name__ == "__main__":
    main()
