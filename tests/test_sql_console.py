"""The SQL console reads the store's views and nothing else: hostile inputs are refused or stopped, and the console
keeps answering (normal queries right after a stopped one, and while another one runs away)."""
from __future__ import annotations

import threading

import duckdb
import pandas as pd
import pytest

from engine.errors import is_user_error
from engine.sql_console import (MAX_SQL_CHARS, SqlConsole, SqlError, SqlRefused, SqlStopped, check_statement,
                                locked_connection)

from tests.waiting import wait_for

pytest_plugins = ["tests.dashboard_fixtures"]

# Ten billion multiply-adds: minutes of CPU, little memory. Only the time limit stops it.
RUNAWAY = "SELECT sum(a.range * b.range) FROM range(100000) a, range(100000) b"


@pytest.fixture(scope="module")
def console(seeded_store):
    # 3 s: a runaway is stopped soon, while an ordinary query has a wide margin even on a loaded machine
    return SqlConsole.for_store(seeded_store.store(), timeout_s=3.0, max_rows=1000)


@pytest.fixture(scope="module")
def secret(tmp_path_factory, seeded_store):
    """Files next to the store that the console must never read."""
    d = tmp_path_factory.mktemp("secret")
    pd.DataFrame({"password": ["hunter2"]}).to_parquet(d / "secret.parquet")
    (d / "secret.csv").write_text("password\nhunter2\n")
    (seeded_store.root / "notes.csv").write_text("password\nhunter2\n")  # inside the store root, not a view
    return d


def hostile(store_root, secret_dir) -> list[tuple[str, str]]:
    """(name, SQL): each must be refused (SqlRefused/SqlError) or stopped (SqlStopped)."""
    sealed = f"{store_root}/sealed"
    return [
        ("read /etc/passwd", "SELECT * FROM read_csv('/etc/passwd')"),
        ("read_text", "SELECT * FROM read_text('/etc/passwd')"),
        ("read_blob", "SELECT * FROM read_blob('/etc/hostname')"),
        ("replacement scan of a path", "SELECT * FROM '/etc/passwd'"),
        ("parquet outside the store", f"SELECT * FROM read_parquet('{secret_dir}/secret.parquet')"),
        ("dot-dot out of the store", f"SELECT * FROM read_parquet('{sealed}/../../{secret_dir.name}/secret.parquet')"),
        ("dot-dot in a replacement scan", f"SELECT * FROM '{sealed}/../notes.csv'"),
        ("glob the disk", "SELECT * FROM glob('/**')"),
        ("environment", "SELECT * FROM read_json_auto('/proc/self/environ')"),
        ("query() smuggling", "SELECT * FROM query('SELECT * FROM read_csv(''/etc/passwd'')')"),
        ("COPY TO", "COPY (SELECT * FROM runs) TO '/tmp/ablation_leak.csv'"),
        ("COPY FROM", "COPY runs FROM '/etc/passwd'"),
        ("EXPORT DATABASE", "EXPORT DATABASE '/tmp/ablation_leak'"),
        ("ATTACH", "ATTACH '/tmp/ablation_leak.db' AS leak"),
        ("INSTALL", "INSTALL httpfs"),
        ("LOAD", "LOAD httpfs"),
        ("http read", "SELECT * FROM read_parquet('https://example.com/x.parquet')"),
        ("s3 read", "SELECT * FROM 's3://bucket/x.parquet'"),
        ("SET", "SET enable_external_access = true"),
        ("RESET", "RESET lock_configuration"),
        ("PRAGMA", "PRAGMA enable_profiling"),
        ("CALL", "CALL pragma_version()"),
        ("CREATE TABLE", "CREATE TABLE t AS SELECT 1"),
        ("CREATE MACRO", "CREATE MACRO leak() AS 1"),
        ("INSERT", "INSERT INTO runs VALUES (1)"),
        ("DELETE", "DELETE FROM runs"),
        ("DROP", "DROP VIEW runs"),
        ("UPDATE", "UPDATE runs SET status = 'x'"),
        ("two statements", "SELECT 1; DROP VIEW runs"),
        ("secret", "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')"),
        ("prepared", "PREPARE p AS SELECT 1"),
        ("parameters", "SELECT * FROM runs WHERE run_id = $1"),
        ("too long", "SELECT 1 " + "-" * (MAX_SQL_CHARS + 10)),
        ("empty", "   -- nothing\n"),
        ("cross join of billions of rows", "SELECT count(*) FROM range(1000000000) a, range(1000000000) b "
                                           "WHERE a.range <> b.range"),
        ("runaway arithmetic", RUNAWAY),
        ("recursive forever", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"),
        ("memory bomb", "SELECT string_agg(repeat('x', 100000), ',') FROM range(100000)"),
    ]


def test_at_least_twenty_hostile_inputs_are_refused_or_stopped(console, seeded_store, secret):
    cases = hostile(seeded_store.root, secret)
    assert len(cases) >= 20
    outcomes = {}
    for name, sql in cases:
        with pytest.raises((SqlRefused, SqlStopped, SqlError)) as e:
            console.run(sql)
        assert is_user_error(e.value), name
        assert str(e.value), name  # every refusal says why
        outcomes[name] = type(e.value).__name__
        assert "hunter2" not in str(e.value)
    # The runaway ones are stopped by the time limit or the memory limit, not refused up front.
    assert outcomes["cross join of billions of rows"] == "SqlStopped"
    assert outcomes["runaway arithmetic"] == "SqlStopped"
    assert outcomes["recursive forever"] == "SqlStopped"
    assert outcomes["memory bomb"] == "SqlStopped"
    # Nothing was written anywhere.
    import os
    assert not os.path.exists("/tmp/ablation_leak.csv") and not os.path.exists("/tmp/ablation_leak.db")


def test_refusals_say_what_is_allowed(console):
    with pytest.raises(SqlRefused, match="read-only") as e:
        console.run("DELETE FROM runs")
    with pytest.raises(SqlRefused, match="read_csv") as e:
        console.run("SELECT * FROM read_csv('/etc/passwd')")
    assert "runs" in str(e.value) and "epochs" in str(e.value)
    with pytest.raises(SqlError, match="DESCRIBE"):
        console.run("SELECT no_such_column FROM runs")


def test_normal_queries_see_the_store(console, seeded_store):
    n = console.run("SELECT count(*) AS n FROM runs").frame["n"].iloc[0]
    assert n == seeded_store.n_runs
    members = console.run("SELECT run_id FROM study_members WHERE study = 'ablation'").frame
    assert set(members["run_id"]) == set(seeded_store.study_ids)
    epochs = console.run(f"SELECT epoch, val_loss FROM epochs WHERE run_id = '{seeded_store.nan_id}' ORDER BY epoch")
    assert epochs.frame["val_loss"].isna().tolist() == [False, True, False]
    assert console.run("DESCRIBE runs").frame["column_name"].str.contains("final_val_loss").any()
    assert any("0badf11e" in p for p in console.problems)  # the damaged file is reported, not read


def test_row_cap_streams_without_materialising(console):
    # 10 billion rows: materialised, they would run into the time limit (SqlStopped) or out of memory
    res = console.run("SELECT * FROM range(100000) a, range(100000) b")
    assert res.truncated and len(res.frame) == 1000


def test_normal_query_right_after_a_stopped_runaway(console):
    with pytest.raises(SqlStopped, match="stopped after"):
        console.run(RUNAWAY)
    assert console.run("SELECT 42 AS x").frame["x"].iloc[0] == 42


def query_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "sql-console-query")


def test_other_users_keep_working_during_a_runaway(console):
    errors = []
    before = query_threads()
    runaway = threading.Thread(target=lambda: errors.append(pytest.raises(SqlStopped, console.run, RUNAWAY)))
    runaway.start()
    wait_for(lambda: query_threads() > before, 30, every=0.005, what="the runaway's query to be under way")
    assert runaway.is_alive(), "the runaway query ended before it could be watched"
    res = console.run("SELECT count(*) AS n FROM runs")
    # answered while the runaway still ran: the second user did not wait for it to be stopped
    assert runaway.is_alive() and res.frame["n"].iloc[0] > 0
    runaway.join(30)
    assert not runaway.is_alive() and errors


def test_database_layer_blocks_files_even_without_the_statement_check(seeded_store, secret):
    """Defence in depth: the locked connection itself refuses files, settings and extensions."""
    store = seeded_store.store()
    snap = store.snapshot()
    from engine.store import define_views
    files = [*snap.run_files, *snap.epoch_files, *snap.study_files]
    con = locked_connection(lambda c: define_views(store, c, snap, {"runs"}), files)
    try:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] > 0
        for sql in ["SELECT * FROM read_csv('/etc/passwd')", f"SELECT * FROM '{secret}/secret.csv'",
                    f"SELECT * FROM read_parquet('{seeded_store.root}/sealed/../../{secret.name}/secret.parquet')",
                    "COPY (SELECT 1) TO '/tmp/ablation_leak2.csv'", "INSTALL httpfs", "LOAD httpfs",
                    "ATTACH '/tmp/ablation_leak2.db'"]:
            with pytest.raises(duckdb.Error):
                con.sql(sql).fetchall()
        for sql in ["SET enable_external_access = true", "RESET lock_configuration", "SET threads = 8"]:
            with pytest.raises(duckdb.Error, match="locked"):
                con.execute(sql)
    finally:
        con.close()


def test_check_statement_accepts_read_only_forms():
    for sql in ["SELECT 1", "FROM runs", "WITH x AS (SELECT 1) SELECT * FROM x", "VALUES (1)", "DESCRIBE runs",
                "SHOW TABLES", "SUMMARIZE runs", "SELECT * FROM range(3)", "SELECT 1 UNION SELECT 2",
                "SELECT 1;"]:
        assert check_statement(sql)


def test_over_tables_console():
    con = SqlConsole.over_tables({"t": pd.DataFrame({"a": [1, 2, 3]})}, timeout_s=1)
    assert con.run("SELECT sum(a) AS s FROM t").frame["s"].iloc[0] == 6
    assert list(con.describe()["t"]["column_name"]) == ["a"]


def test_the_sql_page_examples_run(console):
    from engine.sql_console import EXAMPLES
    for title, sql in EXAMPLES.items():
        assert len(console.run(sql).frame) > 0, title
