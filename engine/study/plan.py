"""A study against the store: which runs are cached, which are missing, and how long the missing ones will take.

The time estimate comes from the store when it holds finished runs of the same shape (same stack key: the same
model, data and batch size, any seed or learning rate) trained on this machine (the hostname their runs recorded):
their logged ``epoch_time_s`` per stack of their recorded ``stack_size``. Otherwise a short calibration trains a few steps of each missing stack in this process (one torch
thread, as a training process) and extrapolates to the full epochs. The plan says which source each estimate used.
Stacks are then packed longest first onto the processes, as they train (engine/study/schedule.py).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from engine.config import RunConfig
from engine.study.results import cell_table, read_runs
from engine.study.schedule import default_workers, makespan, order_stacks
from engine.study.spec import Cell, StudySpec
from engine.train import stack_key

CALIBRATION_STEPS = 8


@dataclass
class Plan:
    spec: StudySpec
    store: Any
    cached: dict[str, dict[str, Any]]          # run_id -> store record of runs never to retrain
    missing: list[Cell]
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    stacks: list[list[RunConfig]] = field(default_factory=list)
    estimate_s: float | None = None            # wall time of the missing runs on `workers` workers
    estimate_sources: dict[str, int] = field(default_factory=dict)  # "store" / "calibration" -> stacks
    measured_runs: int = 0                     # stored runs of this machine whose epoch times the estimate used
    workers: int = 1


def make_plan(spec: StudySpec, store, workers: int | None = None, estimate: bool = True,
              max_stack: int = 64) -> Plan:
    """Split the study's runs into cached and missing; with ``estimate``, time the missing ones."""
    from engine.store import CACHED_STATUSES
    records = read_runs(store, [c.run_id for c in spec.runs])
    cached = {rid: rec for rid, rec in records.items() if rec["status"] in CACHED_STATUSES}
    missing = [c for c in spec.runs if c.run_id not in cached]
    plan = Plan(spec, store, cached, missing, records)
    if estimate and missing:
        plan.workers = workers or default_workers()
        plan.stacks = order_stacks([c.config for c in missing], plan.workers, max_stack)
        _estimate(plan)
    return plan


# --- time estimate ---------------------------------------------------------------------------------------------------

def _similar_epoch_times(store, stacks: list[list[RunConfig]]) -> dict[tuple, tuple[float, int, int]]:
    """stack key -> (median seconds per epoch, stack size it was measured at, runs measured), from finished runs in
    the store that trained on this machine: another machine's times (a store copied here, a cluster node) say
    nothing about this one's speed."""
    import platform

    from engine import queries
    here = platform.node()
    df = queries.epoch_times(store, sorted({s[0].task for s in stacks}))
    wanted = {stack_key(s[0]) for s in stacks}
    found: dict[tuple, list[tuple[float, int]]] = {}
    for row in df.to_dict("records"):
        t = row["epoch_time_s"]
        if t is None or (isinstance(t, float) and math.isnan(t)):
            continue
        try:
            config = RunConfig.from_dict(json.loads(row["config_json"]))
        except ValueError:  # a config an older engine stored (ConfigError is a ValueError): not comparable
            continue
        key = stack_key(config)
        meta = json.loads(row.get("meta_json") or "{}")
        if key in wanted and meta.get("hostname") == here:
            found.setdefault(key, []).append((float(t), int(meta.get("stack_size", 1) or 1)))
    out = {}
    for key, vals in found.items():
        vals.sort()
        out[key] = (*vals[len(vals) // 2], len(vals))
    return out


def _calibrate(stack: list[RunConfig]) -> float:
    """Seconds per epoch of this stack, from a few timed steps on a slice of its data (single-threaded)."""
    import dataclasses

    import torch

    from engine.sinks import MemorySink
    from engine.tasks import Split, load_task_data
    from engine.train import train_stack

    data = load_task_data(stack[0])
    bs = stack[0].batch_size
    n_train = len(data.train)
    steps_per_epoch = math.ceil(n_train / bs)
    steps = min(steps_per_epoch, CALIBRATION_STEPS)
    n_val = len(data.val)
    cut = lambda s, n: Split(s.x[:n], s.y[:n])
    val_part = min(n_val, max(bs, 64))
    small = dataclasses.replace(data, train=cut(data.train, steps * bs), val=cut(data.val, val_part))
    configs = [c.replace(epochs=1, evaluate_test=False) for c in stack]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_stack(configs, [MemorySink() for _ in configs], device="cpu", data=small)  # warm-up
        t0 = time.perf_counter()
        train_stack(configs, [MemorySink() for _ in configs], device="cpu", data=small)
        elapsed = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    # Evaluation costs about a third of a training pass over as many samples.
    per_step = elapsed / (steps + val_part / bs / 3)
    return per_step * (steps_per_epoch + n_val / bs / 3)


def _estimate(plan: Plan) -> None:
    known = _similar_epoch_times(plan.store, plan.stacks)
    durations = []
    calibrated: dict[tuple, float] = {}
    used: dict[tuple, int] = {}  # stack key -> runs measured, of the stored times used
    for stack in plan.stacks:
        key = stack_key(stack[0])
        k = len(stack)
        if key in known:
            t, k_rec, n_measured = known[key]
            # Per-epoch time grows with the stack size, less than linearly; scale linearly (an upper bound).
            per_epoch = t * max(1.0, k / k_rec)
            plan.estimate_sources["store"] = plan.estimate_sources.get("store", 0) + 1
            used[key] = n_measured
        else:
            ck = (key, k)
            if ck not in calibrated:
                try:
                    calibrated[ck] = _calibrate(stack)
                except Exception:
                    calibrated[ck] = float("nan")
            per_epoch = calibrated[ck]
            plan.estimate_sources["calibration"] = plan.estimate_sources.get("calibration", 0) + 1
        durations.append(per_epoch * stack[0].epochs)
    plan.measured_runs = sum(used.values())
    if any(math.isnan(d) for d in durations):
        plan.estimate_s = None
        return
    # Longest first onto the least loaded process: what the training processes' shared queue does.
    processes = max(1, min(plan.workers, len(durations)))
    plan.estimate_s = makespan(durations, processes) + 2.0 * (processes > 1)  # process start-up


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return "under 1s"  # not "0s": something still trains
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_source(plan: Plan) -> str:
    """Where the plan's time estimate comes from, in a reader's words: "12 runs measured on this machine", "a
    calibration run on this machine", or both."""
    parts = []
    if plan.estimate_sources.get("store"):
        parts.append(f"{plan.measured_runs} run{'s' if plan.measured_runs != 1 else ''} measured on this machine")
    if plan.estimate_sources.get("calibration"):
        n = plan.estimate_sources["calibration"]
        parts.append(f"a calibration of {n} stack{'s' if n != 1 else ''} on this machine" if n > 1
                     else "a calibration run on this machine")
    return " and ".join(parts)


def format_plan(plan: Plan) -> str:
    spec = plan.spec
    table = cell_table(spec, plan.records)
    n_cells = len(table)
    lines = [f"study {spec.study_name} ({spec.path}): {spec.description}".rstrip(": "),
             f"{n_cells} cells x {len(spec.seeds)} seeds = {len(spec.runs)} runs; metric {spec.metric} "
             f"({spec.goal})"]
    by_label: dict[str, list[Cell]] = {}
    for cell in spec.runs:
        by_label.setdefault(cell.label, []).append(cell)
    width = min(70, max((len(r["label"]) for r in table), default=10))
    lines.append(f"  {'cell':<{width}}  runs  cached  missing  {spec.metric}")
    order = {label: i for i, label in enumerate(by_label)}
    for row in sorted(table, key=lambda r: order[r["label"]]):
        cells = by_label[row["label"]]
        n_cached = sum(1 for c in cells if c.run_id in plan.cached)
        value = f"{row['mean']:.4g} +- {row['std']:.2g} (n={row['n']})" if row["n"] else "-"
        lines.append(f"  {row['label']:<{width}}  {len(cells):>4}  {n_cached:>6}  {len(cells) - n_cached:>7}  "
                     f"{value}")
    n_missing = len(plan.missing)
    lines.append(f"cached: {len(plan.cached)}  missing: {n_missing}")
    if n_missing:
        other = [r for r in plan.missing if r.run_id in plan.records]
        if other:
            states: dict[str, int] = {}
            for c in other:
                s = plan.records[c.run_id]["status"]
                states[s] = states.get(s, 0) + 1
            lines.append("  of the missing, the store has unfinished attempts: "
                         + ", ".join(f"{s} {n}" for s, n in sorted(states.items()))
                         + " (failed, cancelled, timed-out and interrupted runs are retried)")
        if plan.stacks:
            lines.append(f"missing runs train as {len(plan.stacks)} stacks on {plan.workers} "
                         f"process{'es' if plan.workers != 1 else ''}")
        if plan.estimate_s is not None:
            lines.append(f"estimated time for the missing runs: {format_duration(plan.estimate_s)} "
                         f"(from {estimate_source(plan)})")
        elif plan.stacks:
            lines.append("estimated time: unknown (calibration failed; `study run` will show the real error)")
    else:
        lines.append("nothing to train: every run is in the store")
    return "\n".join(lines)
