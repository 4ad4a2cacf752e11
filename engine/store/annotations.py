"""What people say about runs and studies: exclusion from analysis (with a reason), tags, notes, and deletion.

Every action is one small JSON record, written whole to ``annotations/<time_ns>-<pid>-<random>.json`` through a
dot-named temp file and ``os.replace`` (layout.atomic_write_json): a process killed while writing leaves the record
there or not, never half there. Records are never edited; the current state is the fold of all records in name
(= time) order, and readers memoise each record by its name (a record never changes once written).

Actions (``record["action"]``) over ``runs`` (run ids) and/or ``studies`` (names):

    exclude  reason      hide from analysis by default (a study: every run that belongs to it)
    include              undo exclude
    tag      tag         add a free tag;  untag  tag  removes it
    note     note        set the note ("" clears it)
    delete   attempts    {run_id: highest attempt deleted}: those attempts are gone for every reader at once; the
                         files go at the next compaction, and the run's exclusion, tags and note go with them

A deleted run trains again when asked: ``open_run`` numbers the new attempt above the deleted ones, so the
deletion never hides it.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import StoreValidationError
from .files import ReaderCache, listdir
from .layout import Layout, atomic_write_json, check_run_id

ACTIONS = ("exclude", "include", "tag", "untag", "note", "delete")
RECORD_RE = re.compile(r"^\d{20}-\d+-[0-9a-f]{6}\.json$")
TAG_RE = re.compile(r"^[^\s,][^,\n]{0,63}$")
MAX_REASON = 500
MAX_NOTE = 2000


@dataclass
class Notes:
    """One run's or one study's annotations."""

    excluded: str | None = None     # the reason, or None when not excluded
    tags: set[str] = field(default_factory=set)
    note: str | None = None

    @property
    def empty(self) -> bool:
        return self.excluded is None and not self.tags and not self.note


@dataclass(frozen=True)
class Annotations:
    """The folded state of every record: what the views join onto the runs."""

    runs: dict[str, Notes]
    studies: dict[str, Notes]
    deleted: dict[str, int]          # run_id -> highest attempt deleted
    key: tuple                       # the record names folded: a cache key for derived tables

    def deleted_attempt(self, run_id: str, attempt: int) -> bool:
        return attempt <= self.deleted.get(run_id, 0)


def check_text(value: str, what: str, limit: int, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value.strip() and not allow_empty) or len(value) > limit:
        raise StoreValidationError(f"{what} must be {'a' if allow_empty else 'a non-empty'} text of at most {limit} "
                                   f"characters, got {value!r}")
    return value.strip()


def check_tag(tag: str) -> str:
    if not isinstance(tag, str) or not TAG_RE.match(tag.strip()):
        raise StoreValidationError(f"tag {tag!r} is not allowed: 1-64 characters, no comma or line break, not "
                                   "starting with a space")
    return tag.strip()


def check_study_name(study: str) -> str:
    if not isinstance(study, str) or not study.strip() or len(study) > 200 or "\n" in study:
        raise StoreValidationError(f"study name must be a non-empty single-line string of at most 200 characters, "
                                   f"got {study!r}")
    return study


def write_record(layout: Layout, action: str, runs=(), studies=(), durable: bool = True, **fields) -> Path:
    """Validate and write one record atomically; returns its path."""
    if action not in ACTIONS:
        raise StoreValidationError(f"annotation action must be one of {', '.join(ACTIONS)}, got {action!r}")
    runs = [check_run_id(r) for r in runs]
    studies = [check_study_name(s) for s in studies]
    if not runs and not studies:
        raise StoreValidationError(f"{action}: name at least one run or study")
    if action == "exclude":
        fields["reason"] = check_text(fields.get("reason", ""), "the reason for excluding", MAX_REASON)
    elif action in ("tag", "untag"):
        fields["tag"] = check_tag(fields.get("tag", ""))
    elif action == "note":
        fields["note"] = check_text(fields.get("note", ""), "a note", MAX_NOTE, allow_empty=True)
    record = {"format": 1, "action": action, "runs": runs, "studies": studies, "at": time.time(),
              "pid": os.getpid(), **fields}
    path = layout.annotations / f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(3)}.json"
    atomic_write_json(path, record, durable)
    return path


def _read_record(cache: ReaderCache, path: str) -> dict | None:
    memo = cache.memo.setdefault("annotation_records", {})
    hit = memo.get(path)
    if hit is None:
        try:
            hit = json.loads(Path(path).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            hit = {}  # cannot happen for a record written by write_record; skip rather than fail every read
        memo[path] = hit
    return hit or None


def read_annotations(cache: ReaderCache, layout: Layout) -> Annotations:
    names = sorted(e.name for e in listdir(layout.annotations) if RECORD_RE.match(e.name))
    key = tuple(names)
    hit = cache.memo.get("annotations")
    if hit is not None and hit.key == key:
        return hit
    runs: dict[str, Notes] = {}
    studies: dict[str, Notes] = {}
    deleted: dict[str, int] = {}
    for name in names:
        rec = _read_record(cache, str(layout.annotations / name))
        if rec is None:
            continue
        action = rec.get("action")
        if action == "delete":
            for run_id, attempt in rec.get("attempts", {}).items():
                deleted[run_id] = max(deleted.get(run_id, 0), int(attempt))
                runs.pop(run_id, None)
            continue
        targets = [runs.setdefault(r, Notes()) for r in rec.get("runs", ())]
        targets += [studies.setdefault(s, Notes()) for s in rec.get("studies", ())]
        for t in targets:
            if action == "exclude":
                t.excluded = rec.get("reason") or "excluded"
            elif action == "include":
                t.excluded = None
            elif action == "tag":
                t.tags.add(rec["tag"])
            elif action == "untag":
                t.tags.discard(rec["tag"])
            elif action == "note":
                t.note = rec.get("note") or None
    out = Annotations({k: v for k, v in runs.items() if not v.empty},
                      {k: v for k, v in studies.items() if not v.empty}, deleted, key)
    cache.memo["annotations"] = out
    return out


def _table(key: str, notes: dict[str, Notes]):
    import pyarrow as pa
    items = sorted(notes.items())
    return pa.table({key: pa.array([k for k, _ in items], pa.string()),
                     "excluded_reason": pa.array([v.excluded for _, v in items], pa.string()),
                     "tags": pa.array([sorted(v.tags) for _, v in items], pa.list_(pa.string())),
                     "note": pa.array([v.note for _, v in items], pa.string())})


def runs_table(ann: Annotations):
    """(run_id, excluded_reason, tags, note) of annotated runs, for the views' join."""
    return _table("run_id", ann.runs)


def studies_table(ann: Annotations):
    """(study, excluded_reason, tags, note) of annotated studies."""
    return _table("study", ann.studies)
