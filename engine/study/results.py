"""A study's runs as the store has them: one record per run, a run's value of the study's metric, and the table of
cells (mean and spread over seeds, best first) that `study plan`, `study run` and the report print."""
from __future__ import annotations

import json
import math
from typing import Any

from engine.study.spec import StudySpec


def read_runs(store, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """run_id -> {status, error, summary, meta, final: {metric: value}, n_epochs} for the runs the store has."""
    from engine import queries
    if not run_ids:
        return {}
    df = queries.runs_by_id(store, list(run_ids))
    out = {}
    finals = [c for c in df.columns if c.startswith("final_")]
    for row in df.to_dict("records"):
        final = {}
        for c in finals:
            v = row[c]
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                final[c[len("final_"):]] = float(v)
        summary = json.loads(row.get("summary_json") or "{}")
        out[row["run_id"]] = {"status": row["status"], "error": row.get("error"), "summary": summary,
                              "meta": json.loads(row.get("meta_json") or "{}"), "final": final,
                              "n_epochs": int(row["n_epochs"]), "excluded": bool(row.get("excluded") or False)}
    return out


def metric_value(record: dict[str, Any], metric: str) -> float | None:
    """A run's value of a metric: the last logged epoch's (val_*, train_*), or its summary (test_*)."""
    if metric in record["final"]:
        return record["final"][metric]
    v = record["summary"].get(metric)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def cell_table(spec: StudySpec, records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per cell (over its seeds): runs, done, statuses, mean/std of the metric; best cell first."""
    cells: dict[str, dict[str, Any]] = {}
    for cell in spec.runs:
        row = cells.setdefault(cell.label, {"label": cell.label, "runs": 0, "done": 0, "values": [],
                                            "statuses": {}})
        row["runs"] += 1
        rec = records.get(cell.run_id)
        status = rec["status"] if rec else "missing"
        row["statuses"][status] = row["statuses"].get(status, 0) + 1
        if rec and status in ("completed", "diverged"):
            row["done"] += 1
            if status == "completed":
                v = metric_value(rec, spec.metric)
                if v is not None:
                    row["values"].append(v)
    table = []
    for row in cells.values():
        vals = row.pop("values")
        n = len(vals)
        mean = sum(vals) / n if n else None
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0 if n else None
        table.append({**row, "n": n, "mean": mean, "std": std})
    sign = -1 if spec.goal == "max" else 1
    table.sort(key=lambda r: (r["mean"] is None, sign * (r["mean"] or 0.0)))
    return table
