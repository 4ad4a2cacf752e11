"""The names the store's read side had when it was one module, for writer.py and check.py until they import from
the modules it became: files.py (file checks, Problem, the memo cache), manifest.py (the compaction manifest and
the parts), livelog.py (a live attempt's files and its epoch-line format) and snapshot.py (the snapshot, attempts
of one run, the store's version). New code imports from those."""
from .files import DamagedFileError, FileCheck, Problem, ReaderCache, check_parquet, files_table, mark_damaged
from .livelog import read_live_attempt
from .manifest import Manifest, PartEntry, part_index, read_manifest
from .snapshot import Snapshot, existing_attempts, store_version, take_snapshot

__all__ = ["DamagedFileError", "FileCheck", "Problem", "ReaderCache", "check_parquet", "files_table",
           "mark_damaged", "read_live_attempt", "Manifest", "PartEntry", "part_index", "read_manifest", "Snapshot",
           "existing_attempts", "store_version", "take_snapshot"]
