"""``python -m engine reproduce``: train the reference study's studies and write the report.

The reference (``../shared/reference/``) is a four-exercise study; ``studies/reference/reference-results.csv`` (a
copy, so a clone reproduces on its own) holds its numbers. ``studies/ex{1..4}_{architecture,optimizer,loss,test}.toml``
hold one study per question, each with the reference lines it answers and the findings it checks, as data
(engine/study/finding_spec.py). This driver

1. loads and checks every study (and that every answered line is a reference line);
2. prints each study's expected training time, from measured throughput (stored epoch times of runs of the same
   shape, or a short calibration run: engine/study/plan.py), then trains the missing runs (``--only`` limits which
   studies train; Ctrl-C stops, a rerun trains only what is missing);
3. evaluates the findings (engine/study/findings.py) and renders the report (engine/study/reproduce_report.py) into
   the store's ``reports/`` folder, or ``--out FILE``.
"""
from __future__ import annotations

import csv
import datetime
import os
import platform
import sys
from pathlib import Path

from engine.study.finding_spec import check_references
from engine.study.findings import StudyData, evaluate_all
from engine.study.reproduce_report import render, verdict_counts
from engine.study.spec import StudyError, StudySpec, load_study

REPO = Path(__file__).resolve().parents[2]
STUDIES_DIR = REPO / "studies"
REFERENCE_DIR = STUDIES_DIR / "reference"
QUESTIONS = ("architecture", "optimizer", "loss", "test")
STUDY_FILES = tuple(f"ex{e}_{q}.toml" for e in range(1, 5) for q in QUESTIONS)


def reference_rows(path: Path | None = None) -> list[dict[str, str]]:
    path = Path(path) if path else REFERENCE_DIR / "reference-results.csv"
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        raise StudyError(f"{path}: the reference results are not there; the report compares against them") from None


def load_specs(studies_dir: Path | None = None, quick: bool = False,
               reference: list[dict[str, str]] | None = None) -> dict[str, StudySpec]:
    """The reference studies by name, checked: every file on its own, then across files (``study =`` references
    and answered lines)."""
    studies_dir = Path(studies_dir) if studies_dir else STUDIES_DIR
    full = {}
    for name in STUDY_FILES:
        spec = load_study(studies_dir / name)
        full[spec.name] = spec
    reference = reference if reference is not None else reference_rows()
    check_references(full, {r["setting"] for r in reference})
    return {name: spec.quick_spec() for name, spec in full.items()} if quick else full


def select_studies(specs: dict[str, StudySpec], only: str | None) -> dict[str, StudySpec]:
    """The studies (or grids of a study) ``--only`` names: comma-separated study names or prefixes (``ex1``), each
    optionally ``:GRID`` to train only that grid's cells (``ex2-architecture:linear``); every study without it."""
    import dataclasses
    if not only:
        return dict(specs)
    chosen: dict[str, StudySpec] = {}
    for item in (w.strip() for w in only.split(",")):
        if not item:
            continue
        prefix, _, grid = item.partition(":")
        names = [n for n in specs if n.startswith(prefix)]
        if not names:
            raise StudyError(f"--only {item}: no study named {prefix!r}; studies: {', '.join(specs)}")
        for name in names:
            spec = specs[name]
            if grid:
                if grid not in {g.label for g in spec.grids}:
                    raise StudyError(f"--only {item}: {name} has no grid {grid!r}; grids: "
                                     f"{', '.join(g.label for g in spec.grids)}")
                kept = {c.run_id for c in spec.runs if grid in c.grids}
                if name in chosen:  # a second grid of the same study: add its cells
                    kept |= {c.run_id for c in chosen[name].runs}
                spec = dataclasses.replace(spec, runs=tuple(c for c in spec.runs if c.run_id in kept))
            chosen[name] = spec
    return chosen


def training_seconds(data: StudyData) -> tuple[float, int]:
    """The study's training time as the store recorded it, and its finished runs: each finished run's wall time
    over its stack size (stacked runs share one training loop), summed."""
    total, n = 0.0, 0
    for rec in data.records.values():
        wall = rec["summary"].get("wall_time_s")
        if rec["status"] in ("completed", "diverged") and isinstance(wall, (int, float)):
            total += wall / max(1, int(rec["meta"].get("stack_size", 1) or 1))
            n += 1
    return total, n


def training_time(data: StudyData) -> str:
    from engine.study.plan import format_duration
    total, n = training_seconds(data)
    return f"{format_duration(total)} ({n} run{'s' if n != 1 else ''})" if n else "not run"


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    return (f"{platform.system()} {platform.machine()}" + (f", {model}" if model else "")
            + f", {os.cpu_count()} cores, torch {torch.__version__}")


def default_report_path(store, quick: bool) -> Path:
    return Path(store.root) / "reports" / f"reproduce{'-quick' if quick else ''}.md"


def print_estimates(specs: dict[str, StudySpec], selected: dict[str, StudySpec], store,
                    workers: int | None) -> dict[str, str]:
    """Print each study's missing runs and their expected training time, before anything trains. Returns, by study,
    the expected time of the runs this invocation leaves untrained (``--only``), for the report's "not run"."""
    import dataclasses

    from engine.study.plan import estimate_source, format_duration, make_plan

    def estimate(spec: StudySpec):
        plan = make_plan(spec, store, workers=workers)
        if not plan.missing:
            return plan, None
        src = estimate_source(plan)
        est = format_duration(plan.estimate_s) if plan.estimate_s is not None else "unknown"
        return plan, f"{len(plan.missing)} runs, expected {est} on {plan.workers} process(es), from {src}"

    total = 0.0
    left: dict[str, str] = {}
    print("expected training time per study (from measured throughput: stored epoch times of runs of the same "
          "shape, else a short calibration run):", file=sys.stderr)
    for name, spec in specs.items():
        chosen = selected.get(name)
        plan, text = estimate(chosen or spec)
        if chosen is not None:
            total += plan.estimate_s or 0.0
            print(f"  {name}: " + (f"to train: {text}" if text else
                                    f"nothing to train ({len(plan.cached)} runs in the store)"), file=sys.stderr)
            kept = {c.run_id for c in chosen.runs}
            rest = dataclasses.replace(spec, runs=tuple(c for c in spec.runs if c.run_id not in kept))
            text = estimate(rest)[1] if rest.runs else None
            if text:
                print(f"    and left out by --only: {text}", file=sys.stderr)
        elif text:
            print(f"  {name}: not selected by --only: {text}", file=sys.stderr)
        if text:
            left[name] = text
    print(f"  total to train now: about {format_duration(total)}", file=sys.stderr)
    sys.stderr.flush()
    return left


def build_report(store, specs: dict[str, StudySpec], quick: bool, reference: list[dict[str, str]],
                 header: str = "", estimates: dict[str, str] | None = None) -> tuple[str, list]:
    """The markdown report and the findings' results, from the store alone."""
    studies = {name: StudyData.load(spec, store) for name, spec in specs.items()}
    results = evaluate_all(studies)
    durations = {}
    for name, data in studies.items():
        took = training_time(data)
        missing = any(data.records.get(c.run_id, {}).get("status") not in ("completed", "diverged")
                      for c in data.spec.runs)
        if missing and (estimates or {}).get(name):
            took = f"not run: {estimates[name]}" if took == "not run" else f"{took}; not run: {estimates[name]}"
        durations[name] = took
    from engine.study.plan import format_duration
    total = sum(training_seconds(d)[0] for d in studies.values())
    header += (" " if header else "") + (f"Training time on record for the runs in this report: "
                                         f"{format_duration(total)} of one training process (per study: last table).")
    return render(studies, reference, results, quick, header, durations), results


def reproduce(store, quick: bool = False, out: str | None = None, studies_dir: str | None = None,
              workers: int | None = None, device: str = "auto", show_progress: bool = True,
              train: bool = True, only: str | None = None) -> int:
    """Train the missing runs of the chosen studies (unless ``train`` is False), write the report and print it.
    Returns the exit code (0; 1 when some run failed; 130 after Ctrl-C)."""
    import time

    from engine.study.executor import format_result, run_study
    from engine.study.pool import TrainerPool
    from engine.study.schedule import default_workers
    from engine.train import resolve_device

    reference = reference_rows()
    specs = load_specs(Path(studies_dir) if studies_dir else None, quick=quick, reference=reference)
    selected = select_studies(specs, only)
    code = 0
    trained = 0
    started = time.perf_counter()
    estimates: dict[str, str] = {}
    if train:
        estimates = print_estimates(specs, selected, store, workers)
        dev = resolve_device(device)
        n = workers or default_workers()
        pool = TrainerPool(n) if dev.type == "cpu" and n > 1 else None  # one pool for all studies
        try:
            for spec in selected.values():
                result = run_study(spec, store, workers=n, device=device, show_progress=show_progress,
                                   pool=pool)
                print(format_result(result), file=sys.stderr)
                trained += len(result.outcomes)
                if result.interrupted:
                    return 130
                if not result.ok:
                    code = 1
        finally:
            if pool is not None:
                pool.close()
    elapsed = time.perf_counter() - started
    header = (f"Mode: {'quick' if quick else 'full'}. Machine: {machine()}. Store `{store.root}`. "
              f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}: "
              + (f"this invocation trained {trained} runs the store lacked "
                 f"({'studies ' + only if only else 'every study'}) in {elapsed / 60:.1f} min"
                 if train else "report only (nothing trained)")
              + ".")
    text, results = build_report(store, specs, quick, reference, header, estimates)
    path = Path(out) if out else default_report_path(store, quick)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)
    counts = verdict_counts(results)
    print(f"report written to {path} ({', '.join(f'{v} {k}' for k, v in counts.items())})", file=sys.stderr)
    return code
