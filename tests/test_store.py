"""Run store, in one process: round trips, typed columns, statuses, attempts, damaged files, compaction, check,
export and the CLI handlers. Real Parquet and real DuckDB throughout."""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import queries  # noqa: E402
from engine.config import RunConfig  # noqa: E402
from engine.store import (QueryError, RunAlreadyFinishedError, RunCancelled, RunStore, StoreError,  # noqa: E402
                          StoreValidationError, default_store_root)
from engine.cli import main as cli_main  # noqa: E402

pytestmark = pytest.mark.timeout(60)

META = {"device": "cpu", "torch_version": "2.13.0", "hostname": "testhost", "pid": 4242}


def write_run(store: RunStore, cfg: RunConfig, n_epochs: int = 4, status: str = "completed", metrics=None,
              summary=None, study: str | None = None, checkpoint: bytes | None = None, heartbeat_s: float = 0.2):
    meta = dict(META, study=study) if study else META
    w = store.open_run(cfg.run_id, cfg.to_dict(), meta, heartbeat_s=heartbeat_s)
    for e in range(n_epochs):
        m = metrics(e) if metrics else {"train_loss": 1.0 / (e + 1), "val_accuracy": 0.5 + 0.1 * e}
        w.log_epoch(e, m)
    w.finish(status, summary, checkpoint)
    return cfg.run_id


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs", durable=False, compact_threshold=None)


# --- round trip and schema --------------------------------------------------------------------------------------

def test_round_trip_typed_config_columns(store):
    ids = {}
    for act in ("relu", "tanh"):
        for lr in (0.001, 0.05):
            cfg = RunConfig(activation=act, lr=lr, hidden=(100, 150))
            ids[(act, lr)] = write_run(store, cfg, summary={"test_accuracy": 0.8, "n_params": 1234})
    df = queries.sql(store, "SELECT run_id, activation, lr, hidden, n_hidden, width, batch_size, optimizer "
                            "FROM runs WHERE activation = 'relu' AND lr < 0.01")
    assert df.run_id.tolist() == [ids[("relu", 0.001)]]
    row = df.iloc[0]
    assert list(row.hidden) == [100, 150] and row.n_hidden == 2 and row.width == 150
    assert row.batch_size == 10 and row.optimizer == "adam"
    types = dict(queries.sql(store, "SELECT column_name, column_type FROM (DESCRIBE runs)").values)
    assert types["lr"] == "DOUBLE" and types["activation"] == "VARCHAR" and types["batch_size"] == "BIGINT"
    assert types["hidden"] == "INTEGER[]" and types["evaluate_test"] == "BOOLEAN"
    assert types["test_accuracy"] == "DOUBLE" and types["status"] == "VARCHAR"

    rec = store.cached(ids[("tanh", 0.05)])
    assert rec is not None and rec.status == "completed" and rec.n_epochs == 4 and rec.attempt == 1
    assert rec.config == RunConfig(activation="tanh", lr=0.05, hidden=(100, 150)).to_dict()
    assert rec.summary == {"test_accuracy": 0.8, "n_params": 1234}
    assert rec.final == {"train_loss": 0.25, "val_accuracy": pytest.approx(0.8)}
    assert rec.meta["hostname"] == "testhost"


def test_two_tasks_with_different_metrics_share_one_store(store):
    cls = write_run(store, RunConfig(task="points"), 3)
    reg = write_run(store, RunConfig(task="regression"), 2, metrics=lambda e: {"train_mse": 2.0 - e, "val_nll": 1.0})
    ep = queries.curves(store, [cls, reg])
    assert set(ep.columns) >= {"train_loss", "val_accuracy", "train_mse", "val_nll"}
    c = ep[ep.run_id == cls]
    r = ep[ep.run_id == reg]
    assert c.train_mse.isna().all() and c.val_nll.isna().all() and c.train_loss.notna().all()
    assert r.train_loss.isna().all() and r.train_mse.tolist() == [2.0, 1.0]
    runs = queries.list_runs(store).set_index("run_id")
    assert math.isnan(runs.at[cls, "final_train_mse"]) and runs.at[reg, "final_train_mse"] == 1.0
    assert runs.at[reg, "task"] == "regression" and runs.at[reg, "dataset"] == "diabetes"
    assert store.cached(reg).final == {"train_mse": 1.0, "val_nll": 1.0}


def test_nonfinite_values_are_null_with_markers(store):
    vals = [0.5, float("nan"), float("inf"), None, 0.25]
    rid = write_run(store, RunConfig(), 5, metrics=lambda e: {"val_loss": vals[e], "train_loss": 1.0},
                    status="diverged", summary={"diverged_epoch": 1, "test_loss": float("nan")})
    ep = queries.curves(store, [rid], ["val_loss"])
    assert ep.val_loss.isna().tolist() == [False, True, True, True, False]
    markers = queries.sql(store, "SELECT epoch, nonfinite FROM epochs ORDER BY epoch").nonfinite.tolist()
    assert [json.loads(m) if isinstance(m, str) else None for m in markers] == [
        None, {"val_loss": "nan"}, {"val_loss": "inf"}, {"val_loss": "none"}, None]
    fb = queries.final_and_best(store, "val_loss", "min").iloc[0]
    assert fb.best == 0.25 and fb.best_epoch == 4 and fb.final == 0.25 and fb.n_nonfinite == 3
    rec = store.cached(rid)
    assert rec.status == "diverged" and rec.summary["diverged_epoch"] == 1 and math.isnan(rec.summary["test_loss"])


def test_validation_at_the_door(store):
    cfg = RunConfig()
    w = store.open_run(cfg.run_id, cfg.to_dict(), META, heartbeat_s=0.2)
    with pytest.raises(StoreValidationError, match="reserved"):
        w.log_epoch(0, {"epoch": 1.0})
    with pytest.raises(StoreValidationError, match="not allowed"):
        w.log_epoch(0, {"Val-Loss": 1.0})
    with pytest.raises(StoreValidationError, match="not a number"):
        w.log_epoch(0, {"val_loss": "0.5"})
    with pytest.raises(StoreValidationError, match="not a number"):
        w.log_epoch(0, {"flag": True})
    w.log_epoch(0, {"val_loss": 1})
    with pytest.raises(StoreValidationError, match="after the last logged epoch"):
        w.log_epoch(0, {"val_loss": 1.0})
    with pytest.raises(StoreValidationError, match="finish status"):
        w.finish("interrupted")
    with pytest.raises(StoreValidationError, match="reserved"):
        w.finish("completed", summary={"lr": 0.1})
    w.finish("completed")
    with pytest.raises(StoreValidationError, match="run id"):
        store.open_run("../evil", {}, META)
    with pytest.raises(StoreValidationError, match="lr"):
        store.open_run("abc", {"lr": "fast"}, META)


# --- statuses and attempts ----------------------------------------------------------------------------------------

def test_terminal_status_is_never_overwritten(store):
    cfg = RunConfig(seed=1)
    w = store.open_run(cfg.run_id, cfg.to_dict(), META, heartbeat_s=0.2)
    w.log_epoch(0, {"loss": 1.0})
    w.finish("completed", checkpoint=b"weights")
    with pytest.raises(StoreError, match="never overwritten"):
        w.finish("failed", error="late")
    with pytest.raises(StoreError, match="already finished"):
        w.log_epoch(1, {"loss": 0.5})
    with pytest.raises(RunAlreadyFinishedError, match=cfg.run_id):
        store.open_run(cfg.run_id, cfg.to_dict(), META)
    store.compact()
    with pytest.raises(RunAlreadyFinishedError):  # still refused once the run lives in a compacted part
        store.open_run(cfg.run_id, cfg.to_dict(), META)
    store.check(repair=True)
    rec = store.get(cfg.run_id)
    assert rec.status == "completed" and rec.error is None and rec.n_epochs == 1
    assert store.load_checkpoint(cfg.run_id) == b"weights"

    div = RunConfig(seed=2)
    write_run(store, div, 2, status="diverged")
    with pytest.raises(RunAlreadyFinishedError, match="diverged"):
        store.open_run(div.run_id, div.to_dict(), META)


def test_failed_and_cancelled_attempts_are_kept_and_retried(store):
    cfg = RunConfig(seed=3)
    with pytest.raises(ValueError):
        with store.open_run(cfg.run_id, cfg.to_dict(), META, heartbeat_s=0.2) as w:
            w.log_epoch(0, {"loss": 3.0})
            w.log_epoch(1, {"loss": 2.0})
            raise ValueError("boom at epoch 2")
    assert store.get(cfg.run_id).status == "failed"
    assert store.get(cfg.run_id).error == "ValueError: boom at epoch 2"
    assert store.cached(cfg.run_id) is None
    with pytest.raises(KeyboardInterrupt):
        with store.open_run(cfg.run_id, cfg.to_dict(), META, heartbeat_s=0.2) as w:
            w.log_epoch(0, {"loss": 3.0})
            raise KeyboardInterrupt
    with pytest.raises(RunCancelled):
        with store.open_run(cfg.run_id, cfg.to_dict(), META, heartbeat_s=0.2) as w:
            raise RunCancelled("SIGTERM")
    assert store.attempts(cfg.run_id) == {1: "failed", 2: "cancelled", 3: "cancelled"}
    w = store.open_run(cfg.run_id, cfg.to_dict(), META, heartbeat_s=0.2)
    assert w.attempt == 4
    w.log_epoch(0, {"loss": 1.0})
    w.finish("completed")
    rec = store.get(cfg.run_id)
    assert (rec.status, rec.attempt, rec.n_epochs) == ("completed", 4, 1)
    att = queries.sql(store, "SELECT attempt, status, n_epochs FROM attempts ORDER BY attempt")
    assert att.values.tolist() == [[1, "failed", 2], [2, "cancelled", 1], [3, "cancelled", 0], [4, "completed", 1]]
    # the runs view and the epochs view show only the newest attempt
    assert len(queries.list_runs(store)) == 1
    assert queries.curves(store, [cfg.run_id]).loss.tolist() == [1.0]
    assert len(queries.sql(store, "SELECT * FROM all_epochs")) == 4
    store.compact()
    assert queries.curves(store, [cfg.run_id]).loss.tolist() == [1.0]
    assert queries.status_counts(store).set_index("status").n.to_dict()["completed"] == 1


def backdate(store: RunStore, run_id: str, attempt: int = 1, seconds: float = 60.0) -> None:
    """Make a live attempt's last sign of life ``seconds`` old, instead of sleeping through heartbeat intervals."""
    d = store.layout.live_dir(run_id, attempt)
    old = time.time() - seconds
    for name in ("heartbeat", "epochs.jsonl"):
        os.utime(d / name, (old, old))


def test_running_then_interrupted_when_heartbeat_stops(store):
    cfg = RunConfig(seed=4)
    w = store.open_run(cfg.run_id, cfg.to_dict(), META, heartbeat_s=0.05)
    w.log_epoch(0, {"loss": 1.0})
    backdate(store, cfg.run_id)
    assert store.get(cfg.run_id).status == "running"  # heartbeat thread alive and lock held
    # Simulate a dead writer: stop its heartbeat and drop its lock without finishing.
    w._stop.set()
    w._beat.join()
    w._close()
    backdate(store, cfg.run_id)
    rec = store.get(cfg.run_id)
    assert rec.status == "interrupted" and "no heartbeat" in rec.error and rec.n_epochs == 1


def test_heartbeat_stale_but_lock_held_reads_running(store):
    cfg = RunConfig(seed=5)
    w = store.open_run(cfg.run_id, cfg.to_dict(), META, heartbeat_s=0.05)
    w._stop.set()  # heartbeat stops, but the process (lock) is alive: e.g. a long epoch or a paused process
    w._beat.join()
    backdate(store, cfg.run_id)
    assert store.get(cfg.run_id).status == "running"
    w.finish("completed")
    assert store.get(cfg.run_id).status == "completed"


def test_torn_last_record_is_ignored(store):
    cfg = RunConfig(seed=6)
    w = store.open_run(cfg.run_id, cfg.to_dict(), META, heartbeat_s=0.05)
    for e in range(3):
        w.log_epoch(e, {"loss": float(e)})
    log = store.layout.live_dir(cfg.run_id, 1) / "epochs.jsonl"
    with open(log, "ab") as f:
        f.write(b'{"e":3,"t":0.1,"m":{"lo')  # what a SIGKILL in the middle of write() can leave
    assert queries.curves(store, [cfg.run_id]).epoch.tolist() == [0, 1, 2]
    assert store.get(cfg.run_id).n_epochs == 3
    w._stop.set()
    w._close()


def test_the_live_log_format_is_the_one_livelog_defines(store):
    """What the writer appends is what engine/store/livelog.py encodes and decodes, byte for byte."""
    from engine.store.livelog import EPOCHS, decode_epoch_line, encode_epoch_line
    cfg = RunConfig(seed=7)
    w = store.open_run(cfg.run_id, cfg.to_dict(), META, heartbeat_s=0.05)
    w.log_epoch(0, {"loss": 0.5, "acc": 1})
    w.log_epoch(1, {"loss": float("nan"), "acc": float("-inf")})
    lines = (store.layout.live_dir(cfg.run_id, 1) / EPOCHS).read_bytes().splitlines(keepends=True)
    decoded = [decode_epoch_line(line) for line in lines]
    assert [(e, m, x) for e, _, m, x in decoded] == [(0, {"loss": 0.5, "acc": 1.0}, {}),
                                                     (1, {"loss": None, "acc": None}, {"loss": "nan", "acc": "-inf"})]
    assert [encode_epoch_line(*d) for d in decoded] == lines
    with pytest.raises(ValueError):
        decode_epoch_line(b'{"t": 0.1}')
    w.finish("completed")


# --- studies, checkpoints, version --------------------------------------------------------------------------------

def test_studies_checkpoint_and_version(store):
    v0 = store.version()
    a = write_run(store, RunConfig(seed=10), study="lr_sweep", checkpoint=b"\x00ckpt")
    v1 = store.version()
    assert v1 != v0
    b = write_run(store, RunConfig(seed=11))
    store.add_to_study("activations", [a, b])
    store.add_to_study("activations", [a])  # idempotent
    assert store.version() != v1
    assert store.get(a).studies == ("activations", "lr_sweep")
    assert store.get(b).studies == ("activations",)
    prog = queries.study_progress(store).set_index("study")
    assert prog.at["activations", "n_runs"] == 2 and prog.at["activations", "completed"] == 2
    assert prog.at["lr_sweep", "n_runs"] == 1
    store.add_to_study("activations", ["feedfeedfeedfeed"])
    assert queries.study_progress(store).set_index("study").at["activations", "not_started"] == 1
    assert store.load_checkpoint(a) == b"\x00ckpt" and store.load_checkpoint(b) is None
    cfg = RunConfig(seed=12)
    w = store.open_run(cfg.run_id, cfg.to_dict(), META, heartbeat_s=0.2)
    v2 = store.version()
    w.log_epoch(0, {"loss": 1.0})
    assert store.version() != v2  # an appended epoch changes the version
    w.finish("completed")


def test_default_store_root(monkeypatch, tmp_path):
    monkeypatch.setenv("ABLATION_LAB_STORE", str(tmp_path / "elsewhere"))
    assert default_store_root() == tmp_path / "elsewhere"
    monkeypatch.delenv("ABLATION_LAB_STORE")
    monkeypatch.chdir(tmp_path)
    assert default_store_root() == tmp_path / "runs"


def test_empty_store_reads(tmp_path):
    store = RunStore(tmp_path / "nothing_here")
    assert queries.list_runs(store).empty
    assert queries.status_counts(store).n.sum() == 0
    assert queries.curves(store, []).empty
    assert store.get("abc") is None and store.cached("abc") is None and store.problems() == []


# --- damaged files ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "zero_bytes", "random_bytes"])
def test_damaged_small_file_is_reported_and_skipped(store, damage):
    ids = [write_run(store, RunConfig(seed=s), 3) for s in range(4)]
    victim = store.layout.sealed_run(ids[1], 1)
    victim_ep = store.layout.sealed_epochs(ids[2], 1)
    for path in (victim, victim_ep):
        data = path.read_bytes()
        if damage == "truncated":
            path.write_bytes(data[: len(data) // 2])
        elif damage == "zero_bytes":
            path.write_bytes(b"")
        else:
            path.write_bytes(os.urandom(len(data)))
    runs = queries.list_runs(store)
    assert sorted(runs.run_id) == sorted([ids[0], ids[2], ids[3]])
    problems = runs.attrs["problems"]
    assert any(str(victim) in p for p in problems) and any(str(victim_ep) in p for p in problems)
    ep = queries.curves(store, ids)
    assert sorted(set(ep.run_id)) == sorted([ids[0], ids[3]]) and len(ep) == 6
    assert {p.path for p in store.problems()} >= {str(victim), str(victim_ep)}
    assert queries.pivot(store, "val_accuracy", "seed").n.sum() == 3
    store.compact()  # compaction skips the damaged files instead of failing
    assert sorted(queries.list_runs(store).run_id) == sorted([ids[0], ids[2], ids[3]])
    report = store.check(repair=True)
    moved = [f for f in report.findings if f.fixed and "quarantine" in f.action]
    assert {f.path for f in moved} >= {str(victim), str(victim_ep)}
    assert not victim.exists() and len(list(store.layout.quarantine.iterdir())) >= 2  # moved, not deleted


@pytest.mark.parametrize("damage", ["truncated", "zero_bytes", "random_bytes"])
def test_damaged_compacted_part_is_reported_and_skipped(store, damage):
    old = [write_run(store, RunConfig(seed=s), 3) for s in range(3)]
    store.compact()
    new = [write_run(store, RunConfig(seed=s), 3) for s in range(10, 12)]
    part = next(store.layout.parts.glob("*-epochs.parquet"))
    data = part.read_bytes()
    part.write_bytes({"truncated": data[:-40], "zero_bytes": b"", "random_bytes": os.urandom(len(data))}[damage])
    runs = queries.list_runs(store)
    assert sorted(runs.run_id) == sorted(old + new)  # run rows are in the healthy runs part
    ep = queries.curves(store, old + new)
    assert sorted(set(ep.run_id)) == sorted(new)
    assert any(str(part) in p for p in ep.attrs["problems"])


# --- compaction -----------------------------------------------------------------------------------------------

def test_compaction_merges_and_never_double_counts(store):
    for s in range(6):
        write_run(store, RunConfig(seed=s), 5)
    before = queries.sql(store, "SELECT run_id, epoch, train_loss FROM epochs ORDER BY ALL")
    r = store.compact()
    assert r.done and r.merged_attempts == 6
    assert list(store.layout.sealed.iterdir()) == []
    after = queries.sql(store, "SELECT run_id, epoch, train_loss FROM epochs ORDER BY ALL")
    pd.testing.assert_frame_equal(before, after)
    # many small compactions, then the part count stays bounded
    for k in range(12):
        write_run(store, RunConfig(seed=100 + k), 2)
        store.compact()
    m = json.loads(store.layout.manifest.read_text())
    assert len(m["parts"]) <= 8
    assert len(queries.list_runs(store)) == 18
    store.compact(full=True)
    m = json.loads(store.layout.manifest.read_text())
    assert len(m["parts"]) == 1 and m["parts"][0]["n_runs"] == 18 and m["parts"][0]["n_epochs"] == 6 * 5 + 12 * 2
    assert queries.sql(store, "SELECT count(*) AS n FROM epochs").n[0] == 54
    assert store.check().ok


def test_compaction_killed_after_commit_is_not_double_counted(store):
    for s in range(4):
        write_run(store, RunConfig(seed=s), 3)
    saved = {p.name: p.read_bytes() for p in store.layout.sealed.iterdir()}
    store.compact()
    # Put the small files back and mark them absorbed: the state after a kill between commit and delete.
    for name, data in saved.items():
        (store.layout.sealed / name).write_bytes(data)
    m = json.loads(store.layout.manifest.read_text())
    m["absorbed"] = sorted(saved)
    store.layout.manifest.write_text(json.dumps(m))
    assert len(queries.list_runs(store)) == 4
    assert queries.sql(store, "SELECT count(*) AS n FROM epochs").n[0] == 12
    # a part written but never committed (kill before the manifest) is invisible too
    shutil.copy(next(store.layout.parts.glob("*-runs.parquet")), store.layout.parts / "g000099-runs.parquet")
    assert len(queries.list_runs(store)) == 4
    report = store.check()
    assert not report.ok and {f.kind for f in report.findings} >= {"leftover"}
    report = store.check(repair=True)
    assert report.ok, str(report)
    assert sorted(p.name for p in store.layout.parts.iterdir()) == [
        "MANIFEST.json", "g000001-epochs.parquet", "g000001-runs.parquet"]
    assert list(store.layout.sealed.iterdir()) == [] and len(queries.list_runs(store)) == 4


def test_finish_never_compacts_and_maybe_compact_does_at_the_threshold(tmp_path):
    store = RunStore(tmp_path / "runs", durable=False, compact_threshold=5)
    for s in range(4):
        write_run(store, RunConfig(seed=s), 2)
    store.maybe_compact()
    assert not store.layout.manifest.exists()          # 4 sealed attempts: below the threshold
    for s in range(4, 12):
        write_run(store, RunConfig(seed=s), 2)
    assert not store.layout.manifest.exists()          # finish() left compaction to the background
    store.maybe_compact()
    m = json.loads(store.layout.manifest.read_text())
    assert sum(p["n_runs"] for p in m["parts"]) == 12
    assert len(queries.list_runs(store)) == 12


# --- check and repair ---------------------------------------------------------------------------------------------

def test_check_and_repair(store):
    done = write_run(store, RunConfig(seed=20), 2)
    # an attempt whose writer died: stop it without finishing
    cfg = RunConfig(seed=21)
    w = store.open_run(cfg.run_id, cfg.to_dict(), META, heartbeat_s=0.05)
    for e in range(3):
        w.log_epoch(e, {"loss": 1.0 - e / 10})
    w._stop.set()
    w._beat.join()
    w._close()
    # an old temp file from a killed write
    tmp = store.layout.sealed / ".x.run.parquet.123.abcd.tmp"
    tmp.write_bytes(b"partial")
    old = time.time() - 3600
    os.utime(tmp, (old, old))
    backdate(store, cfg.run_id)
    report = store.check()
    kinds = {f.kind for f in report.findings}
    assert not report.ok and {"unfinished", "temp"} <= kinds
    assert any(cfg.run_id in f.message and "3 epochs" in f.message for f in report.findings)
    assert tmp.exists()  # check alone changes nothing

    report = store.check(repair=True)
    assert report.ok, str(report)
    assert any("sealed as interrupted with all 3 epochs" in f.action for f in report.findings)
    assert any("removed" in f.action and f.path == str(tmp) for f in report.findings)
    rec = store.get(cfg.run_id)
    assert rec.status == "interrupted" and rec.n_epochs == 3
    assert queries.curves(store, [cfg.run_id]).loss.tolist() == [1.0, 0.9, 0.8]
    assert store.get(done).status == "completed"
    assert store.check().ok and store.check().findings == ()
    w2 = store.open_run(cfg.run_id, cfg.to_dict(), META, heartbeat_s=0.2)  # the interrupted run may be retried
    assert w2.attempt == 2
    w2.finish("completed")


def test_repair_rebuilds_a_damaged_manifest_and_quarantines_a_damaged_part(store):
    first = [write_run(store, RunConfig(seed=s), 2) for s in range(3)]
    store.compact()
    second = [write_run(store, RunConfig(seed=s), 2) for s in range(10, 12)]
    store.compact()
    store.layout.manifest.write_text("{garbage")
    runs = queries.list_runs(store)
    assert runs.empty and any("MANIFEST.json" in p for p in runs.attrs["problems"])
    report = store.check(repair=True)
    assert any("rebuilt from 2 part(s) holding 5 attempts" in f.action for f in report.findings), str(report)
    assert sorted(queries.list_runs(store).run_id) == sorted(first + second)

    part = store.layout.parts / json.loads(store.layout.manifest.read_text())["parts"][0]["runs"]
    part.write_bytes(b"PAR1" + os.urandom(200) + b"PAR1")
    assert sorted(queries.list_runs(store).run_id) == sorted(second)
    report = store.check(repair=True)
    assert any("NO LONGER IN THE STORE" in f.action for f in report.findings), str(report)
    assert store.check().ok
    assert sorted(queries.list_runs(store).run_id) == sorted(second)
    assert len(list(store.layout.quarantine.iterdir())) == 2  # the damaged part and its companion, kept


def test_repair_finishes_a_seal_that_was_stopped(store):
    cfg = RunConfig(seed=22)
    w = store.open_run(cfg.run_id, cfg.to_dict(), META, heartbeat_s=0.05)
    w.log_epoch(0, {"loss": 0.5})
    live = store.layout.live_dir(cfg.run_id, 1)
    keep = live.parent / ".saved"
    w.finish("completed", {"test_accuracy": 0.75})
    # state of a finish() killed right after writing its result record: final.json in the live folder, no Parquet
    store.layout.sealed_run(cfg.run_id, 1).unlink()
    store.layout.sealed_epochs(cfg.run_id, 1).unlink()
    live.mkdir(parents=True)
    (live / "start.json").write_text(json.dumps({"format": 1, "run_id": cfg.run_id, "attempt": 1,
                                                 "config": cfg.to_dict(), "meta": META, "started_at": time.time(),
                                                 "heartbeat_s": 0.05}))
    (live / "epochs.jsonl").write_text('{"e":0,"t":0.1,"m":{"loss":0.5}}\n')
    (live / "final.json").write_text(json.dumps({"status": "completed", "error": None,
                                                 "summary": {"test_accuracy": 0.75}, "summary_nonfinite": {},
                                                 "summary_columns": {"test_accuracy": 0.75},
                                                 "ended_at": time.time(), "has_checkpoint": False}))
    assert not keep.exists()
    assert store.get(cfg.run_id).status == "completed"  # the recorded result already counts
    with pytest.raises(RunAlreadyFinishedError):
        store.open_run(cfg.run_id, cfg.to_dict(), META)
    report = store.check(repair=True)
    assert any("sealed as completed" in f.action for f in report.findings), str(report)
    rec = store.get(cfg.run_id)
    assert rec.status == "completed" and rec.summary == {"test_accuracy": 0.75} and not live.exists()


# --- export and CLI ---------------------------------------------------------------------------------------------

@pytest.fixture
def filled(store):
    for act in ("relu", "tanh"):
        for seed in range(2):
            write_run(store, RunConfig(activation=act, seed=seed), 3,
                      metrics=lambda e, s=seed: {"val_loss": 1.0 - 0.1 * e - 0.01 * s, "val_accuracy": 0.6})
    return store


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_export_formats(filled, tmp_path, fmt):
    out = queries.export(filled, "final_and_best", fmt, tmp_path / f"fb.{fmt}", metric="val_loss", mode="min")
    df = {"csv": pd.read_csv, "parquet": pd.read_parquet, "json": pd.read_json}[fmt](out)
    assert len(df) == 4 and set(df.activation) == {"relu", "tanh"}
    assert sorted(df.best.round(6)) == [0.79, 0.79, 0.8, 0.8] and set(df.best_epoch) == {2}
    out = queries.export(filled, "SELECT activation, count(*) AS n FROM epochs JOIN runs USING (run_id) "
                                 "GROUP BY activation ORDER BY activation", fmt, tmp_path / f"q.{fmt}")
    df = {"csv": pd.read_csv, "parquet": pd.read_parquet, "json": pd.read_json}[fmt](out)
    assert df.values.tolist() == [["relu", 6], ["tanh", 6]]
    out = queries.export(filled, "epochs", fmt, tmp_path / f"e.{fmt}")
    assert len({"csv": pd.read_csv, "parquet": pd.read_parquet, "json": pd.read_json}[fmt](out)) == 12


def test_export_refuses_writes_and_unknown_names(filled, tmp_path):
    with pytest.raises(QueryError, match="read-only SELECT"):
        queries.export(filled, "SELECT 1; DROP TABLE x", "csv", tmp_path / "x.csv")
    with pytest.raises(QueryError, match="nothing to export"):
        queries.export(filled, "everything", "csv", tmp_path / "x.csv")
    with pytest.raises(QueryError, match="format"):
        queries.export(filled, "runs", "xlsx", tmp_path / "x.xlsx")
    with pytest.raises(QueryError, match="read-only"):
        queries.sql(filled, "COPY (SELECT 1) TO 'x.csv'")
    assert not (tmp_path / "x.csv").exists()


def _cli(argv):
    return cli_main(argv)


def test_cli_handlers(filled, tmp_path, capsys):
    root = str(filled.root)
    assert _cli(["ls", "--store", root]) == 0
    out = capsys.readouterr().out
    assert "relu" in out and "tanh" in out and "val_loss" in out and out.count("completed") == 4
    assert _cli(["ls", "--store", root, "--filter", "activation=tanh", "--filter", "seed=0..0"]) == 0
    assert capsys.readouterr().out.count("completed") == 1
    assert _cli(["export", "runs", "--store", root, "--format", "parquet", "--out", str(tmp_path / "r.parquet"),
                 "--filter", "activation=relu,tanh"]) == 0
    assert len(pd.read_parquet(tmp_path / "r.parquet")) == 4
    assert _cli(["export", "final_and_best", "--store", root, "--out", str(tmp_path / "x.csv")]) == 2
    assert "--metric" in capsys.readouterr().err
    assert _cli(["ls", "--store", root, "--filter", "colour=red"]) == 2
    assert "unknown filter column 'colour'" in capsys.readouterr().err
    assert _cli(["check", "--store", root]) == 0
    assert "clean" in capsys.readouterr().out
    assert _cli(["compact", "--store", root]) == 0
    assert "compacted 4 attempts" in capsys.readouterr().out
    (filled.layout.sealed / "deadbeefdeadbeef.0001.run.parquet").write_bytes(b"garbage")
    assert _cli(["check", "--store", root]) == 1
    assert "deadbeefdeadbeef.0001.run.parquet" in capsys.readouterr().out
    assert _cli(["check", "--store", root, "--repair"]) == 0
    assert "quarantine" in capsys.readouterr().out


def test_store_does_not_import_torch_or_streamlit():
    import subprocess
    code = ("import sys; import engine.store, engine.queries, engine.cli.store, engine.store.check, "
            "engine.store.compaction; bad = [m for m in ('torch', 'streamlit') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
