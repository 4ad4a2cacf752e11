"""The compaction manifest (which part files are current, which small files they absorbed) and what each part
holds, read once per part: parts never change once written.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .files import ReaderCache
from .layout import Layout


@dataclass(frozen=True)
class PartEntry:
    runs: str
    epochs: str
    n_runs: int
    n_epochs: int


@dataclass(frozen=True)
class Manifest:
    seq: int = 0
    generation: int = 0
    parts: tuple[PartEntry, ...] = ()
    absorbed: frozenset[str] = frozenset()
    problem: str | None = None

    def to_json(self) -> dict:
        return {"format": 1, "seq": self.seq, "generation": self.generation,
                "parts": [p.__dict__ for p in self.parts], "absorbed": sorted(self.absorbed)}



def read_manifest(layout: Layout) -> Manifest:
    try:
        raw = layout.manifest.read_bytes()
    except FileNotFoundError:
        return Manifest()
    try:
        d = json.loads(raw)
        parts = tuple(PartEntry(p["runs"], p["epochs"], int(p["n_runs"]), int(p["n_epochs"])) for p in d["parts"])
        return Manifest(int(d["seq"]), int(d["generation"]), parts, frozenset(d.get("absorbed", ())))
    except (ValueError, KeyError, TypeError) as e:
        return Manifest(problem=f"compaction manifest cannot be read ({e}); compacted runs are hidden until it is "
                                "restored (check --repair rebuilds it from the part files)")


def part_index(cache: ReaderCache, path: Path) -> dict[tuple[str, int], str]:
    """(run_id, attempt) -> status of a compacted part; parts never change once written, so cache by path."""
    key = str(path)
    idx = cache.part_index.get(key)
    if idx is None:
        import pyarrow.parquet as pq
        t = pq.read_table(path, columns=["run_id", "attempt", "status"])
        idx = {(r, int(a)): s for r, a, s in zip(t.column("run_id").to_pylist(), t.column("attempt").to_pylist(),
                                                  t.column("status").to_pylist())}
        by_run: dict[str, dict[int, str]] = {}
        for (r, a), s in idx.items():
            by_run.setdefault(r, {})[a] = s
        cache.part_by_run[key] = by_run
        cache.part_index[key] = idx
    return idx


@dataclass(frozen=True)
class PartsInfo:
    """Which attempts a set of parts holds: for membership tests and for finding superseded attempts."""

    keys: frozenset
    newest: dict            # run_id -> highest attempt in the parts
    by_run: dict            # run_id -> [attempts]
    superseded: tuple       # (run_id, attempt) older than the run's newest attempt in the parts


def parts_info(cache: ReaderCache, run_parts: tuple[str, ...]) -> PartsInfo:
    key = ("parts", run_parts)
    hit = cache.memo.get(key)
    if hit is not None:
        return hit
    by_run: dict[str, list[int]] = {}
    for path in run_parts:
        for rid, att in part_index(cache, Path(path)):
            by_run.setdefault(rid, []).append(att)
    newest = {rid: max(atts) for rid, atts in by_run.items()}
    superseded = tuple((rid, a) for rid, atts in by_run.items() if len(atts) > 1 for a in atts if a < newest[rid])
    info = PartsInfo(frozenset((rid, a) for rid, atts in by_run.items() for a in atts), newest, by_run, superseded)
    for k in [k for k in cache.memo if k[0] == "parts"]:
        cache.memo.pop(k, None)
    cache.memo[key] = info
    return info


def part_attempts(cache: ReaderCache, path: Path, run_id: str) -> dict[int, str]:
    """attempt -> status of one run in a compacted part (an O(1) look-up after the first)."""
    part_index(cache, path)
    return cache.part_by_run[str(path)].get(run_id, {})
