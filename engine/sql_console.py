"""A read-only SQL console over the store's documented views: the dashboard's SQL page, without Streamlit.

It can read the store and nothing else. Three layers, each enough on its own for the common attacks:

1. **The statement** is parsed by DuckDB itself (``duckdb.extract_statements``): exactly one statement, of type
   SELECT (which includes WITH, FROM-first, VALUES, DESCRIBE, SHOW and SUMMARIZE). Its syntax tree
   (``json_serialize_sql``) is then walked: table functions outside a short allowlist (``range``, ``unnest``, ...)
   and table names that look like file paths or URLs are refused. Nothing runs before these checks pass.
2. **The database** is a private in-memory DuckDB whose only contents are the views, defined over the store's
   healthy Parquet files (and its live runs, registered as Arrow tables). Then it is locked down:
   ``enable_external_access=false`` with ``allowed_paths`` = exactly those files (no other file, no URL, no COPY/
   EXPORT/ATTACH target), extension auto-install/auto-load off, no temp directory (nothing spills to disk), a memory
   limit, one thread, and ``lock_configuration=true`` (no SET/RESET can undo any of it).
3. **The run** happens on its own cursor in a worker thread; after ``timeout_s`` the cursor is interrupted
   (``interrupt()``), so a runaway query stops while other users' queries go on. At most ``max_rows`` rows come
   back, read in batches (a billion-row result is never materialised), and at most ``max_concurrent`` queries run
   at once per process.

Every refusal raises :class:`SqlRefused`, a stopped query :class:`SqlStopped`, a query DuckDB rejects (a typo, an
unknown column) :class:`SqlError`; each message says what happened and what is allowed.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd

MAX_SQL_CHARS = 20_000
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_ROWS = 10_000
DEFAULT_MEMORY_LIMIT = "512MB"
DEFAULT_MAX_CONCURRENT = 4

# Table functions a read-only query over the views may call: they generate values, touch no file and no setting.
ALLOWED_TABLE_FUNCTIONS = frozenset({
    "range", "generate_series", "unnest", "json_each", "json_tree",
    "duckdb_columns", "duckdb_views", "duckdb_types", "duckdb_keywords", "duckdb_functions",
    "pragma_table_info", "pragma_show",
})
# Allowed in spirit, listed for the refusal message.
WHAT_IS_ALLOWED = ("one SELECT statement (WITH ... SELECT, FROM-first, VALUES, DESCRIBE, SHOW, SUMMARIZE) over the "
                   "views {views}; table functions: " + ", ".join(sorted(ALLOWED_TABLE_FUNCTIONS)))

_WHY_NOT = {
    "COPY": "COPY reads or writes files", "EXPORT": "EXPORT writes files", "COPY_DATABASE": "COPY DATABASE writes",
    "ATTACH": "ATTACH opens other databases or files", "DETACH": "DETACH changes the attached databases",
    "LOAD": "INSTALL/LOAD of extensions is disabled", "EXTENSION": "extension statements are disabled",
    "SET": "settings cannot be changed (SET/RESET)", "VARIABLE_SET": "variables cannot be set",
    "PRAGMA": "PRAGMA statements can change settings", "CALL": "CALL runs procedures that can change settings",
    "CREATE": "the console is read-only (CREATE)", "CREATE_FUNC": "the console is read-only (CREATE FUNCTION/MACRO)",
    "INSERT": "the console is read-only (INSERT)", "UPDATE": "the console is read-only (UPDATE)",
    "DELETE": "the console is read-only (DELETE)", "DROP": "the console is read-only (DROP)",
    "ALTER": "the console is read-only (ALTER)", "MERGE_INTO": "the console is read-only (MERGE)",
    "VACUUM": "VACUUM/CHECKPOINT changes the database", "TRANSACTION": "transactions are not needed to read",
    "PREPARE": "prepared statements are not supported", "EXECUTE": "prepared statements are not supported",
    "MULTI": "this statement expands into several (e.g. PIVOT): write it as GROUP BY or FILTER aggregates",
    "EXPLAIN": "EXPLAIN is not offered (EXPLAIN ANALYZE runs the query): time the query itself instead",
    "ANALYZE": "ANALYZE changes statistics", "LOGICAL_PLAN": "plans are not offered",
}


# Shown on the SQL page; tests/test_sql_console.py runs each one.
EXAMPLES = {
    "Best validation accuracy per activation": (
        "SELECT activation, count(*) AS runs, max(stats_val_accuracy.max) AS best\n"
        "FROM runs WHERE task = 'points'\nGROUP BY activation ORDER BY best DESC"),
    "Runs per status": "SELECT status, count(*) AS n FROM runs GROUP BY status ORDER BY n DESC",
    "Diverged runs and where": (
        "SELECT run_id, task, optimizer, lr, n_epochs, summary_json\nFROM runs WHERE status = 'diverged'"),
    "Last epochs of one run": "SELECT * FROM epochs ORDER BY run_id, epoch DESC LIMIT 20",
    "Columns of the runs view": "DESCRIBE runs",
}
STUDY_EXAMPLE = "Best runs of one study"


def study_example(study: str) -> str:
    """The example that picks one study's runs (the join on study_members), for a study of this store."""
    name = study.replace("'", "''")
    return ("SELECT r.run_id, r.status, r.activation, r.optimizer, r.lr, r.hidden,\n"
            "       r.final_val_loss, r.final_val_accuracy\n"
            "FROM runs r JOIN study_members m ON m.run_id = r.run_id\n"
            f"WHERE m.study = '{name}'\n"
            "ORDER BY r.final_val_accuracy DESC NULLS LAST, r.final_val_loss LIMIT 20")


class SqlRefused(Exception):
    """The statement was refused before it ran; the message says why and what is allowed."""


class SqlStopped(Exception):
    """The query ran too long or used too much memory and was stopped; the console keeps working."""


class SqlError(Exception):
    """DuckDB rejected the query (syntax, an unknown view or column, a type error)."""


@dataclass(frozen=True)
class ConsoleResult:
    frame: pd.DataFrame
    truncated: bool       # more rows than max_rows: only the first max_rows are in frame
    elapsed_s: float
    sql: str


# --- layer 1: the statement ---------------------------------------------------------------------------------------

_PARSER_LOCK = threading.Lock()
_PARSER: duckdb.DuckDBPyConnection | None = None


def _parser() -> duckdb.DuckDBPyConnection:
    """A bare, locked connection used only to turn SQL text into a syntax tree (json_serialize_sql)."""
    global _PARSER
    if _PARSER is None:
        con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                                 "autoload_known_extensions": False, "threads": 1,
                                                 "temp_directory": ""})
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        _PARSER = con
    return _PARSER


def _walk(node: Any, found: list[tuple[str, str]]) -> None:
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            fn = node.get("function") or {}
            found.append(("table_function", str(fn.get("function_name", ""))))
        elif kind == "BASE_TABLE":
            found.append(("table", str(node.get("table_name", ""))))
        for value in node.values():
            _walk(value, found)
    elif isinstance(node, list):
        for value in node:
            _walk(value, found)


def _looks_like_path(name: str) -> bool:
    return any(c in name for c in "/\\:~") or "." in name or name.startswith("$")


def check_statement(sql: str, views: Iterable[str] = ("runs", "epochs")) -> str:
    """Return the single statement's text if it may run; raise SqlRefused saying why not."""
    views = sorted(views)
    allowed = WHAT_IS_ALLOWED.format(views=", ".join(views))
    if not isinstance(sql, str) or not sql.strip():
        raise SqlRefused(f"the query is empty; write {allowed}")
    if len(sql) > MAX_SQL_CHARS:
        raise SqlRefused(f"the query is {len(sql):,} characters long; at most {MAX_SQL_CHARS:,} are accepted")
    if "\x00" in sql:
        raise SqlRefused("the query contains a NUL character")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise SqlError(f"not valid SQL: {_clean(exc)}") from None
    if not statements:
        raise SqlRefused(f"the query holds no statement (only comments?); write {allowed}")
    if len(statements) > 1:
        raise SqlRefused(f"one statement at a time: found {len(statements)} (separated by ';'); run them one by one")
    st = statements[0]
    kind = st.type.name
    if kind != "SELECT":
        why = _WHY_NOT.get(kind, f"{kind} statements are not allowed")
        raise SqlRefused(f"refused: {why}. Allowed: {allowed}")
    if st.named_parameters:
        raise SqlRefused("refused: the query has parameters ($name or ?); write the values into the query")
    with _PARSER_LOCK:
        try:
            tree = json.loads(_parser().execute("SELECT json_serialize_sql(?)", [st.query]).fetchone()[0])
        except duckdb.Error as exc:
            raise SqlRefused(f"refused: the query cannot be checked ({_clean(exc)})") from None
    if tree.get("error"):
        raise SqlRefused(f"refused: the query cannot be checked ({tree.get('error_message', 'unknown')}). "
                         f"Allowed: {allowed}")
    found: list[tuple[str, str]] = []
    _walk(tree.get("statements", []), found)
    for what, name in found:
        if what == "table_function" and name.lower() not in ALLOWED_TABLE_FUNCTIONS:
            raise SqlRefused(f"refused: the table function {name}() is not allowed; the console reads only the "
                             f"views {', '.join(views)} (no files, no URLs). Allowed: {allowed}")
        if what == "table" and _looks_like_path(name):
            raise SqlRefused(f"refused: {name!r} looks like a file path or URL; the console reads only the views "
                             f"{', '.join(views)}, never files")
    return st.query


def _clean(exc: BaseException) -> str:
    text = str(exc).strip()
    # DuckDB appends a caret diagram to some errors; the first lines carry the message.
    return "\n".join(text.splitlines()[:3])


# --- layer 2: the locked database ----------------------------------------------------------------------------------

def _sql_list(items: Iterable[str]) -> str:
    return "[" + ", ".join("'" + str(i).replace("'", "''") + "'" for i in items) + "]"


# A source says, for one query, which files the views read and how to define them on a fresh connection.
ViewSource = Callable[[], tuple[list[str], Callable[[duckdb.DuckDBPyConnection], None], list[str]]]


def locked_connection(define_views: Callable[[duckdb.DuckDBPyConnection], None], allowed_files: Iterable[str],
                      memory_limit: str = DEFAULT_MEMORY_LIMIT) -> duckdb.DuckDBPyConnection:
    """A private in-memory database holding only the views ``define_views`` creates, then locked down.

    ``allowed_files`` must list every file the views read (and nothing else): after the lockdown these are the only
    files the database can open.
    """
    con = duckdb.connect(":memory:", config={
        "autoinstall_known_extensions": False, "autoload_known_extensions": False,
        "allow_community_extensions": False, "allow_unsigned_extensions": False,
        "threads": 1, "memory_limit": memory_limit, "temp_directory": "",
    })
    try:
        files = sorted(set(map(str, allowed_files)))
        if files:
            con.execute(f"SET allowed_paths = {_sql_list(files)}")
        define_views(con)
        con.execute("SET enable_external_access = false")
        con.execute("SET allow_persistent_secrets = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def store_source(store) -> ViewSource:
    """The store's views (runs, attempts, epochs, all_epochs, study_members) over a fresh snapshot of the store's
    healthy files, taken at each query so that new runs show up and damaged files stay out."""
    from engine.store import define_views

    def define(con, snap) -> None:
        define_views(store, con, snap, set(STORE_VIEWS))

    def source():
        snap = store.snapshot()
        files = [*snap.run_files, *snap.epoch_files, *snap.study_files]
        return files, (lambda con: define(con, snap)), [str(p) for p in snap.problems]

    return source


STORE_VIEWS = ("runs", "epochs", "attempts", "all_epochs", "study_members")


def tables_source(tables: dict[str, Any]) -> ViewSource:
    """Views over in-memory tables (pandas or Arrow): tests and small tools."""
    def define(con: duckdb.DuckDBPyConnection) -> None:
        for name, table in tables.items():
            con.register(f"_src_{name}", table)
            con.execute(f'CREATE TEMP VIEW "{name}" AS SELECT * FROM "_src_{name}"')

    return lambda: ([], define, [])


# --- layer 3: the run --------------------------------------------------------------------------------------------

class SqlConsole:
    """Runs checked statements, each on a fresh locked database; safe to share between threads and sessions."""

    def __init__(self, source: ViewSource, views: Iterable[str], *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_rows: int = DEFAULT_MAX_ROWS, memory_limit: str = DEFAULT_MEMORY_LIMIT,
                 max_concurrent: int = DEFAULT_MAX_CONCURRENT):
        self.source = source
        self.views = tuple(views)
        self.timeout_s = float(timeout_s)
        self.max_rows = int(max_rows)
        self.memory_limit = memory_limit
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self.problems: list[str] = []

    @classmethod
    def for_store(cls, store, **kwargs: Any) -> "SqlConsole":
        return cls(store_source(store), STORE_VIEWS, **kwargs)

    @classmethod
    def over_tables(cls, tables: dict[str, Any], **kwargs: Any) -> "SqlConsole":
        return cls(tables_source(tables), sorted(tables), **kwargs)

    def _connect(self) -> duckdb.DuckDBPyConnection:
        files, define, problems = self.source()
        self.problems = problems
        return locked_connection(define, files, self.memory_limit)

    def describe(self) -> dict[str, pd.DataFrame]:
        """Each view's columns and types (the page's reference panel)."""
        con = self._connect()
        try:
            return {v: con.execute(f'DESCRIBE "{v}"').df()[["column_name", "column_type"]] for v in self.views}
        finally:
            con.close()

    def run(self, sql: str) -> ConsoleResult:
        statement = check_statement(sql, self.views)
        if not self._slots.acquire(timeout=self.timeout_s):
            raise SqlStopped("the console is busy with other queries right now; try again in a few seconds")
        try:
            return self._run(statement)
        finally:
            self._slots.release()

    def _run(self, statement: str) -> ConsoleResult:
        started = time.perf_counter()
        con = self._connect()
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                relation = con.sql(statement)  # lazy: the reader streams, a huge result is never materialised
                reader = relation.to_arrow_reader(min(self.max_rows + 1, 10_000))
                batches, n = [], 0
                for batch in reader:
                    batches.append(batch)
                    n += batch.num_rows
                    if n > self.max_rows:
                        break
                import pyarrow as pa
                table = pa.Table.from_batches(batches, schema=reader.schema)
                box["truncated"] = table.num_rows > self.max_rows
                box["frame"] = table.slice(0, self.max_rows).to_pandas()
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc

        worker = threading.Thread(target=work, name="sql-console-query", daemon=True)
        worker.start()
        worker.join(max(0.0, self.timeout_s - (time.perf_counter() - started)))
        timed_out = worker.is_alive()
        if timed_out:
            con.interrupt()
            worker.join(5.0)
        elapsed = time.perf_counter() - started
        if not worker.is_alive():
            con.close()
        if timed_out:
            raise SqlStopped(f"the query was stopped after {self.timeout_s:g} s (the time limit): add a WHERE "
                             "clause or a LIMIT, or aggregate before joining")
        exc = box.get("error")
        if exc is not None:
            raise _translate(exc, self.views) from None
        return ConsoleResult(box["frame"], box["truncated"], elapsed, statement)


def _translate(exc: BaseException, views: tuple[str, ...]) -> Exception:
    text = _clean(exc)
    if isinstance(exc, duckdb.InterruptException):
        return SqlStopped("the query was interrupted (time limit): add a WHERE clause or a LIMIT")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return SqlStopped(f"the query needed more memory than the console allows and was stopped ({text.splitlines()[0]})"
                          ": aggregate, filter or LIMIT before sorting or joining large results")
    if isinstance(exc, duckdb.PermissionException) or "configuration has been locked" in text:
        return SqlRefused(f"refused: {text}. The console reads only the views {', '.join(views)}; files, URLs, "
                          "extensions and settings are off limits")
    if isinstance(exc, duckdb.Error):
        return SqlError(f"{text}\n(views: {', '.join(views)}; `DESCRIBE runs` lists a view's columns)")
    return exc


__all__ = ["EXAMPLES", "STUDY_EXAMPLE", "study_example", "SqlConsole", "ConsoleResult", "SqlRefused", "SqlStopped", "SqlError", "check_statement",
           "locked_connection", "store_source", "tables_source", "STORE_VIEWS", "ALLOWED_TABLE_FUNCTIONS",
           "MAX_SQL_CHARS"]
