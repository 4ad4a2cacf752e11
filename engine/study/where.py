"""A study file's text as errors see it: ``StudyError``, whose message names the file, the key and its line.

tomllib reports no positions, so ``Where`` finds a key's line by scanning the text.
"""
from __future__ import annotations

import re
from pathlib import Path


# The arrays of tables a study file has: their entries are told apart by position.
ARRAYS = ("grids", "cells", "answers", "findings")


class StudyError(ValueError):
    """A study file is wrong; the message names the file, the key (and line) or the cell, and the reason."""


class Where:
    """Builds error messages that name the file and the line of a key."""

    def __init__(self, path: Path, text: str):
        self.path, self.lines = path, text.splitlines()

    def line_of(self, table: str, key: str | None, occurrence: int = 0) -> int | None:
        """Best-effort line number of ``key`` in table ``table`` ("" = top level; "grids" with ``occurrence`` for
        the n-th [[grids]]; "grids.factors" for a sub-table). tomllib reports no positions, so scan the text."""
        parts = table.split(".") if table else []
        header = None  # current [table] path as a list
        count: dict[str, int] = {}
        key_re = re.compile(r"^\s*[\"']?" + re.escape(key) + r"[\"']?\s*=") if key else None
        for no, raw in enumerate(self.lines, 1):
            line = raw.split("#", 1)[0] if "\"" not in raw and "'" not in raw else raw
            m = re.match(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*$", line)
            if m:
                header = [p.strip().strip("\"'") for p in m.group(2).split(".")]
                if m.group(1) == "[[":
                    count[header[0]] = count.get(header[0], 0) + 1
                    if key is None and header == parts and count[header[0]] - 1 == occurrence:
                        return no
                elif key is None and header == parts:
                    return no
                continue
            if key_re is None:
                continue
            cur = header or []
            in_right_array = not cur or cur[0] not in ARRAYS or count.get(cur[0], 0) - 1 == occurrence
            if not in_right_array:
                continue
            if cur == parts and key_re.match(line):
                return no
            # sub-table written inline or dotted: `factors = { lr = ... }` / `factors.lr = ...` under its parent
            if parts and cur == parts[:-1]:
                if re.match(r"^\s*" + re.escape(parts[-1]) + r"\s*=\s*\{", line) and re.search(
                        r"[{,]\s*[\"']?" + re.escape(key) + r"[\"']?\s*=", line):
                    return no
                if re.match(r"^\s*" + re.escape(parts[-1]) + r"\." + re.escape(key) + r"\s*=", line):
                    return no
        return None

    def error(self, table: str, key: str | None, reason: str, occurrence: int = 0) -> StudyError:
        line = self.line_of(table, key, occurrence)
        name = ".".join(p for p in (table, key) if p) or "file"
        at = f", line {line}" if line else ""
        return StudyError(f"{self.path}: {name}{at}: {reason}")
