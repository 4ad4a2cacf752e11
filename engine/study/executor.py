"""Running a study: train only the missing cells, stacked, through the one training driver, and say how it went.

``run_study`` is the one entry point (CLI, reproduce, the dashboard's demo, tests, bench):

1. plan: which runs the store already has (completed or diverged: never retrained) and which are missing;
2. record study membership of every run (cached ones too) with ``store.add_to_study``;
3. train the missing ones with ``engine.train.run_configs``, stacked and ordered longest first for the processes
   (engine/study/schedule.py), on one of three executors: ``local`` runs a pool of training processes, one per
   core with one torch thread each (engine/study/pool.py), or, with ``--workers 1`` or on a GPU, the stacks one
   after the other in this process; ``ray`` hands stacks to Ray tasks (engine/study/ray_executor.py);
4. report: every run's outcome, diverged and failed ones with their reason, and the study's winner so far.

A progress bar (tqdm) counts run-epochs over the whole study. Ctrl-C: the open runs end as ``cancelled``, the
summary is printed and the CLI exits 130. Finished runs are in the store, so a restart trains only what is still
missing (cancelled runs are retried).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from functools import partial

from engine.sinks import RunOutcome
from engine.study.plan import Plan, make_plan
from engine.study.pool import TrainerPool
from engine.study.results import cell_table, read_runs
from engine.study.schedule import default_workers, order_stacks
from engine.study.spec import StudySpec
from engine.train import InProcess, StackExecutor, TrainingInterrupted, run_configs

EXECUTORS = ("local", "ray")


@dataclass
class StudyResult:
    spec: StudySpec
    plan: Plan
    outcomes: dict[str, RunOutcome] = field(default_factory=dict)  # run_id -> outcome of what ran now
    interrupted: bool = False
    elapsed_s: float = 0.0
    executor: str = "local"
    workers: int = 1  # stacks that trained at once

    @property
    def n_trained(self) -> int:
        return sum(1 for o in self.outcomes.values() if o.status in ("completed", "diverged"))

    def statuses(self) -> dict[str, str]:
        """run_id -> status for every run of the study: cached ones, what ran now, 'not started' for the rest."""
        out = {}
        for cell in self.spec.runs:
            rid = cell.run_id
            if rid in self.plan.cached:
                out[rid] = self.plan.cached[rid]["status"]
            elif rid in self.outcomes:
                out[rid] = self.outcomes[rid].status
            else:
                out[rid] = "not started"
        return out

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(s in ("completed", "diverged") for s in self.statuses().values())


def run_study(spec: StudySpec, store, executor: str = "local", workers: int | None = None, device: str = "auto",
              address: str | None = None, show_progress: bool = True, max_stack: int = 64,
              out=None, pool: TrainerPool | None = None, retries: int | None = None) -> StudyResult:
    """Train the study's missing runs; see the module docstring. Never raises for a failed or diverged run.

    ``workers``: training processes (local) or Ray tasks in flight (ray). ``pool``: a TrainerPool to use (several
    studies in a row); by default the local executor starts its own when it trains on more than one process.
    ``address``, ``retries``: the Ray cluster, and how often a stack lost with its node is sent again (ray only);
    a cluster that cannot be used raises ClusterError before anything is recorded.
    """
    from engine.train import resolve_device

    out = out if out is not None else sys.stderr
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    started = time.perf_counter()
    dev = resolve_device(device) if executor == "local" else None
    ray_runner = None
    if executor == "ray":
        from engine.study.ray_executor import DEFAULT_RETRIES, RayExecutor
        ray_runner = RayExecutor(address, workers, DEFAULT_RETRIES if retries is None else retries)
        ray_runner.connect()
    if executor == "ray":
        n_workers = workers or 0  # 0: as many as the cluster has CPUs (decided once connected)
    elif dev.type != "cpu":
        n_workers = 1  # one GPU: the stacks run one after the other in this process
    else:
        n_workers = pool.n if pool is not None else (workers or default_workers())
    plan = make_plan(spec, store, estimate=False)
    store.add_to_study(spec.study_name, [c.run_id for c in spec.runs])
    result = StudyResult(spec, plan, executor=executor, workers=max(n_workers, 1))
    missing = [c.config for c in plan.missing]
    own_pool = None
    if ray_runner is not None:
        runner: StackExecutor = ray_runner
    elif dev.type == "cpu" and n_workers > 1:
        _warm_up()  # before the pool forks its processes: they inherit the imports
        runner = pool if pool is not None else (own_pool := TrainerPool(n_workers))
    else:
        runner = InProcess(keep_going=True)
    bar = _progress_bar(sum(c.epochs for c in missing), show_progress, out, spec.study_name)

    def collect(finished: list[RunOutcome]) -> None:
        result.outcomes.update((o.run_id, o) for o in finished)

    try:
        if missing:
            run_configs(missing, store, device=dev if executor == "local" else device,
                        extra_meta={"study": spec.study_name}, executor=runner, on_outcomes=collect,
                        schedule=partial(order_stacks, workers=max(n_workers, 1), max_stack=max_stack),
                        progress=lambda event: bar.update(event["run_epochs_done"] - bar.n))
            result.workers = runner.parallelism
    except TrainingInterrupted as stop:
        collect(stop.outcomes)
        result.interrupted = True
    finally:
        bar.close()
        if own_pool is not None:
            own_pool.close()
    if result.interrupted or any(c.run_id not in result.outcomes for c in plan.missing):
        _settle_from_store(store, plan, result.outcomes)
    if missing and not result.interrupted:
        store.maybe_compact()  # the end of a study: after its training, never inside it (no run is paused)
    result.elapsed_s = time.perf_counter() - started
    return result


def _warm_up() -> None:
    """Import in this process what every training process needs, so that forked ones do not each import it again."""
    import pyarrow.parquet  # noqa: F401  (the store seals runs into Parquet)

    import engine.store  # noqa: F401  (its writer)
    import engine.train  # noqa: F401


def _settle_from_store(store, plan: Plan, outcomes: dict[str, RunOutcome]) -> None:
    """The store has the last word on how a run that ran now ended (a process's message can be lost to Ctrl-C)."""
    from engine.store import CACHED_STATUSES
    ids = [c.run_id for c in plan.missing]
    records = read_runs(store, ids)
    for rid in ids:
        rec, o = records.get(rid), outcomes.get(rid)
        if rec is None or rec["status"] == "running":
            continue
        if o is not None and o.status != "skipped":
            outcomes[rid] = replace(o, status=rec["status"], error=rec["error"] or o.error,
                                    summary=rec["summary"] or o.summary)
        elif o is None and rec["status"] in CACHED_STATUSES:
            outcomes[rid] = RunOutcome(rid, rec["status"], error=rec["error"], summary=rec["summary"])


class _NoBar:
    n = 0

    def update(self, k: int = 1) -> None:
        self.n += k

    def close(self) -> None:
        pass


def _progress_bar(total: int, show: bool, out, name: str):
    if not show or total == 0:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, unit="run-epoch", file=out, desc=name, dynamic_ncols=True, smoothing=0.05)


# --- the end-of-study report ----------------------------------------------------------------------------------------

def format_result(result: StudyResult) -> str:
    """What `study run` prints at the end: counts, every run that did not complete with its reason, the winner."""
    spec, plan = result.spec, result.plan
    statuses = result.statuses()
    counts: dict[str, int] = {}
    for s in statuses.values():
        counts[s] = counts.get(s, 0) + 1
    how = (f" ({result.executor}, {result.workers} process{'es' if result.workers != 1 else ''})"
           if result.outcomes else "")
    lines = [f"study {spec.study_name}: {len(spec.runs)} runs in {len(spec.cell_labels())} cells; "
             f"{len(plan.cached)} were cached, {len(result.outcomes)} ran now{how} in {result.elapsed_s:.1f}s"]
    lines.append("status: " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items())))
    records = read_runs(result.plan.store, [c.run_id for c in spec.runs])
    by_id = {c.run_id: c for c in spec.runs}
    problems = []
    for rid, status in statuses.items():
        if status in ("completed",):
            continue
        cell = by_id[rid]
        rec = records.get(rid, {})
        if status == "diverged":
            ran = result.outcomes.get(rid)
            summ = rec.get("summary") or (ran.summary if ran else {})
            why = f"diverged at epoch {summ.get('diverged_epoch', '?')} (step {summ.get('diverged_step', '?')})"
        elif status == "not started":
            why = "not started (stopped before it)"
        else:
            ran = result.outcomes.get(rid)
            err = (ran.error if ran else None) or rec.get("error") or ""
            why = f"{status}: {err}" if err else status
        problems.append(f"  {rid}  {cell.label} seed={cell.seed}: {why}")
    if problems:
        lines.append(f"runs that did not complete ({len(problems)}):")
        lines.extend(problems[:50])
        if len(problems) > 50:
            lines.append(f"  ... and {len(problems) - 50} more")
    table = cell_table(spec, records)
    if table:
        best = table[0]
        if best["n"]:
            lines.append(f"winner by {spec.metric} ({spec.goal}, final epoch, mean over seeds): {best['label']}: "
                         f"{best['mean']:.4g} +- {best['std']:.2g} (n={best['n']})")
    if result.interrupted:
        lines.append("interrupted: finished runs are kept in the store; running ones were marked cancelled. "
                     "Run the same command again to train what is missing.")
    return "\n".join(lines)
