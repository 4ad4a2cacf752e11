"""How fast the dashboard answers on a large store: each page's script under Streamlit's AppTest with a warm cache,
and, separately, the queries behind each page (uncached, as on the first visit after a write).

    .venv/bin/python bench/dashboard_latency.py                    # 10,000 runs x 20 epochs (a few minutes)
    .venv/bin/python bench/dashboard_latency.py --runs 1000        # quicker
    .venv/bin/python bench/dashboard_latency.py --store DIR        # reuse a store made by an earlier --keep DIR

The store is made by bench/store_scale.py's generator (synthetic runs written through the store's own write path),
compacted as the store does on its own, plus two really trained points runs whose checkpoints feed the Runs page's
task view. Every page must run in under 1.5 s (warm). Ends with one ``name: value`` line per figure.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

BUDGET_S = 1.5


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def build_store(root: Path, runs: int, epochs: int, workers: int) -> list[str]:
    """The synthetic runs, compacted, plus two trained runs with checkpoints; returns the trained runs' ids."""
    import torch

    from engine.config import RunConfig
    from engine.store import RunStore
    from engine.train import run_configs
    from store_scale import generate

    t = time.perf_counter()
    generate(root, runs, epochs, workers)
    print(f"  generated {runs} runs x {epochs} epochs in {time.perf_counter() - t:.0f} s", flush=True)
    store = RunStore(root)
    t = time.perf_counter()
    store.compact(full=True)
    print(f"  compacted in {time.perf_counter() - t:.1f} s", flush=True)
    torch.set_num_threads(1)
    trained = [RunConfig(task="points", dataset="moons", epochs=3, seed=s) for s in (1000, 1001)]
    run_configs(trained, store, device="cpu")
    return [c.run_id for c in trained]


def page_params(trained: list[str]) -> dict[str, tuple[str | None, dict]]:
    """The views timed: each page as a user first opens it, and the typical narrowed views."""
    return {
        "overview": (None, {}),
        "curves_all_runs": ("pages/curves.py", {}),
        "curves_filtered": ("pages/curves.py", {"f.dataset": "moons", "f.optimizer": "adam",
                                                "metric": "val_accuracy", "color": "activation"}),
        "tables_all_runs": ("pages/tables.py", {"metric": "val_accuracy", "row": "activation", "col": "optimizer"}),
        "runs": ("pages/runs.py", {"runs": trained}),
        "sql": ("pages/sql.py", {"q": "SELECT activation, optimizer, count(*) AS n, avg(final_val_accuracy) AS acc "
                                      "FROM runs GROUP BY ALL ORDER BY acc DESC", "run": "1"}),
    }


def time_pages(trained: list[str], repeats: int) -> dict[str, tuple[float, float]]:
    """name -> (first run ms, warm median ms). The first run fills the cache; warm runs hit it."""
    from streamlit.testing.v1 import AppTest

    out = {}
    for name, (page, params) in page_params(trained).items():
        at = AppTest.from_file(str(REPO / "dashboard.py"), default_timeout=600)
        for k, v in params.items():
            at.query_params[k] = v
        at.run()
        if page is not None:
            at.switch_page(page)
        t = time.perf_counter()
        at.run()
        first = (time.perf_counter() - t) * 1000
        if at.exception:
            raise SystemExit(f"{name}: the page raised {at.exception[0].value}")
        warm = median_ms(at.run, repeats)
        out[name] = (first, warm)
        print(f"  page {name}: first {first:.0f} ms, warm {warm:.0f} ms", flush=True)
    return out


def time_queries(root: Path, trained: list[str], repeats: int) -> dict[str, float]:
    """Each query a page makes, uncached (what a visit right after a write costs)."""
    from engine import queries
    from engine.inspect import view_for_checkpoint
    from engine.sql_console import SqlConsole
    from engine.store import RunStore

    store = RunStore(root)
    runs = queries.list_runs(store)
    moons_adam = runs[(runs.dataset == "moons") & (runs.optimizer == "adam")].run_id.tolist()
    console = SqlConsole.for_store(store)
    sql = page_params(trained)["sql"][1]["q"]
    checkpoint = store.load_checkpoint(trained[0])
    cases = {
        "store_version": lambda: store.version(),
        "list_runs_all": lambda: queries.list_runs(store),
        "status_counts": lambda: queries.status_counts(store),
        "study_progress": lambda: queries.study_progress(store),
        "curves_all_runs": lambda: queries.curves(store, runs.run_id.tolist(), ["val_loss"]),
        f"curves_{len(moons_adam)}_runs": lambda: queries.curves(store, moons_adam, ["val_accuracy"]),
        "final_and_best_all": lambda: queries.final_and_best(store, "val_accuracy", "max"),
        "sql_console_query": lambda: console.run(sql),
        "task_view_points": lambda: view_for_checkpoint(checkpoint),
    }
    out = {}
    for name, fn in cases.items():
        out[name] = median_ms(fn, repeats)
        print(f"  query {name}: {out[name]:.0f} ms", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--store", type=Path, default=None, help="reuse this store (made with --keep)")
    ap.add_argument("--keep", type=Path, default=None, help="build the store here and keep it")
    args = ap.parse_args(argv)

    tmp = None
    trained_file = None
    if args.store is not None:
        root = args.store
        trained = (root / "bench-trained.txt").read_text().split()
    else:
        if args.keep is not None:
            root = args.keep
            if root.exists() and any(root.iterdir()):
                ap.error(f"--keep {root} is not empty")
        else:
            tmp = Path(tempfile.mkdtemp(prefix="dashboard_latency_"))
            root = tmp / "runs"
        print(f"building a store of {args.runs} runs in {root} ...", flush=True)
        trained = build_store(root, args.runs, args.epochs, args.workers)
        trained_file = root / "bench-trained.txt"
        trained_file.write_text("\n".join(trained))
    os.environ["ABLATION_LAB_STORE"] = str(root)
    os.chdir(REPO)
    try:
        import torch
        torch.set_num_threads(1)
        from engine import queries
        from engine.store import RunStore
        n_runs = len(queries.list_runs(RunStore(root)))
        print(f"store: {root} ({n_runs} runs)", flush=True)
        pages = time_pages(trained, args.repeats)
        qs = time_queries(root, trained, args.repeats)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, store of {n_runs} runs")
    worst = max(w for _, w in pages.values())
    for name, (first, warm) in pages.items():
        print(f"page_{name}_warm_ms: {warm:.0f}")
        print(f"page_{name}_first_ms: {first:.0f}")
    for name, ms in qs.items():
        print(f"query_{name}_ms: {ms:.0f}")
    print(f"page_worst_warm_ms: {worst:.0f}")
    print(f"all_pages_under_{BUDGET_S}s: {'yes' if worst < BUDGET_S * 1000 else 'no'}")
    return 0 if worst < BUDGET_S * 1000 else 1


if __name__ == "__main__":
    raise SystemExit(main())
