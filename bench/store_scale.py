"""How the run store scales: a synthetic store of N runs x E epochs, written through the store's own write path
(open_run / log_epoch / finish, in worker processes), then timed queries.

    .venv/bin/python bench/store_scale.py --runs 1000 --epochs 100
    .venv/bin/python bench/store_scale.py --runs 10000 --epochs 100

Timed (median of repeats, each a fresh snapshot + fresh DuckDB cursor, as the dashboard does):
  * list_runs with a filter (activation = relu AND lr < 0.01), and unfiltered (all runs to pandas)
  * curves of 50 runs (3 metrics x all epochs)
  * mean/std pivot of best val_accuracy by activation x optimizer over all runs
  * the same pivot computed with pandas reading the per-run Parquet files (timed before compaction)
  * list_runs before compaction (every run still in its own small files; first and warm call) and compaction
  * median log_epoch overhead (4 metrics), measured on its own run
The last lines are `name: value`, one per headline figure.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config import RunConfig  # noqa: E402
from engine.store import RunStore  # noqa: E402

DATASETS = ("circles", "moons", "xor", "spirals")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu", "elu", "gelu")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
LRS = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
HIDDEN = ((75,), (100,), (100, 150), (32, 32, 32))


def config_for(i: int, epochs: int) -> RunConfig:
    """A varied, deterministic grid: dataset x activation x optimizer x lr x hidden, then seeds."""
    rest, ds = divmod(i, len(DATASETS))
    rest, act = divmod(rest, len(ACTIVATIONS))
    rest, opt = divmod(rest, len(OPTIMIZERS))
    rest, lr = divmod(rest, len(LRS))
    seed, hid = divmod(rest, len(HIDDEN))
    return RunConfig(task="points", dataset=DATASETS[ds], activation=ACTIVATIONS[act], optimizer=OPTIMIZERS[opt],
                     lr=LRS[lr], hidden=HIDDEN[hid], seed=seed, epochs=epochs)


def _write_chunk(root: str, lo: int, hi: int, epochs: int) -> int:
    store = RunStore(root, compact_threshold=None)  # compaction is timed separately, after the pandas baseline
    meta = {"device": "cpu", "torch_version": "n/a", "hostname": "bench", "pid": os.getpid(), "study": "bench"}
    for i in range(lo, hi):
        cfg = config_for(i, epochs)
        rng = random.Random(i)
        quality = 0.6 + 0.3 * rng.random()
        w = store.open_run(cfg.run_id, cfg.to_dict(), meta)
        for e in range(epochs):
            p = 1 - math.exp(-(e + 1) / (5 + 20 * rng.random()))
            w.log_epoch(e, {"train_loss": 1.0 - 0.9 * p + 0.02 * rng.random(),
                            "val_loss": 1.05 - 0.85 * p + 0.04 * rng.random(),
                            "val_accuracy": 0.5 + (quality - 0.5) * p + 0.02 * rng.random()})
        diverged = rng.random() < 0.03
        w.finish("diverged" if diverged else "completed",
                 {"test_accuracy": quality, "wall_time_s": 1.0, "n_params": 301})
    return hi - lo


def generate(root: Path, runs: int, epochs: int, workers: int) -> float:
    t0 = time.perf_counter()
    chunk = max(1, math.ceil(runs / (workers * 8)))
    bounds = [(lo, min(runs, lo + chunk)) for lo in range(0, runs, chunk)]
    with ProcessPoolExecutor(max_workers=workers) as ex:
        done = sum(ex.map(_write_chunk, [str(root)] * len(bounds), [b[0] for b in bounds],
                          [b[1] for b in bounds], [epochs] * len(bounds)))
    assert done == runs
    return time.perf_counter() - t0


def timed(fn, repeats: int) -> tuple[float, object]:
    times = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), out


def pandas_pivot(root: Path):
    """The baseline a tracker without a query engine would run: read every run's files with pandas."""
    import pandas as pd
    rows = []
    sealed = root / "sealed"
    for run_file in sorted(sealed.glob("*.run.parquet")):
        run = pd.read_parquet(run_file, columns=["run_id", "activation", "optimizer"])
        ep = pd.read_parquet(sealed / run_file.name.replace(".run.", ".epochs."), columns=["val_accuracy"])
        rows.append((run.at[0, "activation"], run.at[0, "optimizer"], ep["val_accuracy"].max()))
    df = pd.DataFrame(rows, columns=["activation", "optimizer", "best"])
    return df.groupby(["activation", "optimizer"])["best"].agg(["mean", "std", "count"]).reset_index()


FIRST_CALL = """
import sys, time
sys.path.insert(0, {repo!r})
import duckdb, pandas, pyarrow.parquet  # a dashboard has these loaded before its first query
from engine import queries
from engine.store import RunStore
t = time.perf_counter()
queries.list_runs(RunStore({root!r}), {{"activation": "relu", "lr": (None, 0.0099)}})
print((time.perf_counter() - t) * 1000)
"""


def first_call_in_new_process(root: Path) -> float:
    """The first query of a fresh process (a dashboard starting): it reads the compacted run rows into memory."""
    import subprocess
    code = FIRST_CALL.format(repo=str(Path(__file__).resolve().parents[1]), root=str(root))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def log_epoch_overhead(root: Path, n: int = 3000) -> float:
    store = RunStore(root)
    cfg = RunConfig(seed=987654)
    w = store.open_run(cfg.run_id, cfg.to_dict(), {"device": "cpu"})
    times = []
    for e in range(n):
        m = {"train_loss": 1.0 / (e + 1), "val_loss": 1.1 / (e + 1), "val_accuracy": 0.5 + e / (2 * n),
             "lr": 0.01}
        t = time.perf_counter_ns()
        w.log_epoch(e, m)
        times.append(time.perf_counter_ns() - t)
    w.finish("completed")
    return statistics.median(times) / 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None, help="store root to create (default: a temp dir, removed)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--baseline-repeats", type=int, default=3)
    ap.add_argument("--time-uncompacted", action=argparse.BooleanOptionalAction, default=None,
                    help="also time list_runs before compaction (default: only up to 2000 runs; it reads every "
                         "small file once)")
    args = ap.parse_args(argv)

    from engine import queries

    tmp = None
    if args.out is None:
        tmp = Path(tempfile.mkdtemp(prefix="store_scale_"))
        root = tmp / "runs"
    else:
        root = args.out
        if root.exists() and any(root.iterdir()):
            ap.error(f"--out {root} is not empty")
    N = args.runs
    if args.time_uncompacted is None:
        args.time_uncompacted = N <= 2000
    figures: dict[str, float] = {}
    try:
        print(f"generating {N} runs x {args.epochs} epochs with {args.workers} workers into {root} ...", flush=True)
        gen_s = generate(root, N, args.epochs, args.workers)
        figures[f"generate_s_{N}"] = gen_s
        figures[f"generate_runs_per_s_{N}"] = N / gen_s
        print(f"  {gen_s:.1f} s", flush=True)

        store = RunStore(root)
        filt = {"activation": "relu", "lr": (None, 0.0099)}
        if args.time_uncompacted:
            t, df = timed(lambda: queries.list_runs(store, filt), 1)
            figures[f"list_runs_uncompacted_first_ms_{N}"] = t
            t, df = timed(lambda: queries.list_runs(store, filt), 3)
            figures[f"list_runs_uncompacted_warm_ms_{N}"] = t
            print(f"list_runs over {N} uncompacted runs: first call (reads every small file) "
                  f"{figures[f'list_runs_uncompacted_first_ms_{N}']:.0f} ms, then {t:.0f} ms", flush=True)

        t, base = timed(lambda: pandas_pivot(root), args.baseline_repeats)
        figures[f"pandas_pivot_ms_{N}"] = t
        print(f"pandas pivot from per-run files: {t:.0f} ms", flush=True)

        t0 = time.perf_counter()
        r = store.compact(full=True)
        figures[f"compact_s_{N}"] = time.perf_counter() - t0
        print(f"compaction: {figures[f'compact_s_{N}']:.1f} s, {r.merged_attempts} attempts", flush=True)

        figures[f"list_runs_first_call_ms_{N}"] = first_call_in_new_process(root)
        t, df = timed(lambda: queries.list_runs(store, filt), args.repeats)
        assert len(df) > 0 and set(df.activation) == {"relu"} and (df.lr < 0.01).all()
        figures[f"list_runs_ms_{N}"] = t
        t, df = timed(lambda: queries.list_runs(store), args.repeats)
        assert len(df) == N
        figures[f"list_runs_all_ms_{N}"] = t

        ids = queries.list_runs(store, limit=None).run_id.tolist()
        pick = random.Random(0).sample(ids, min(50, len(ids)))
        t, cv = timed(lambda: queries.curves(store, pick, ["train_loss", "val_loss", "val_accuracy"]), args.repeats)
        assert len(cv) == len(pick) * args.epochs, len(cv)
        figures[f"curves50_ms_{N}"] = t

        t, pv = timed(lambda: queries.pivot(store, "val_accuracy", "activation", "optimizer", mode="max"),
                      args.repeats)
        assert int(pv["n"].sum()) == N
        merged = pv.merge(base, on=["activation", "optimizer"])
        assert (abs(merged["mean_x"] - merged["mean_y"]) < 1e-9).all() and (merged["n"] == merged["count"]).all()
        figures[f"pivot_ms_{N}"] = t
        figures[f"pivot_speedup_vs_pandas_{N}"] = figures[f"pandas_pivot_ms_{N}"] / t

        t, _ = timed(lambda: queries.final_and_best(store, "val_loss", "min"), args.repeats)
        figures[f"final_and_best_ms_{N}"] = t

        figures["log_epoch_median_ms"] = log_epoch_overhead(root.parent / "overhead")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    for k, v in figures.items():
        print(f"{k}: {v:.3f}" if v < 10 else f"{k}: {v:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
