"""Curation in the store and the CLI: exclusion (with reasons, per run and per study) reaching every statistic,
tags and notes, deletion for real (refused while running, disk freed by compaction, the config trains again),
annotations surviving SIGKILL, the compaction pause gone from training, pruned jobs, a full disk and a read-only
store. Real Parquet, DuckDB and processes throughout."""
from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import analysis, queries  # noqa: E402
from engine.cli import main as cli_main  # noqa: E402
from engine.config import RunConfig  # noqa: E402
from engine.store import RunLockedError, RunStore, StoreError, StoreValidationError  # noqa: E402
from tests.waiting import wait_for  # noqa: E402

pytestmark = pytest.mark.timeout(120)

META = {"device": "cpu", "torch_version": "2.13.0", "hostname": "testhost", "pid": 4242}
ROOT = Path(__file__).resolve().parents[1]


def write_run(store: RunStore, cfg: RunConfig, final_acc: float, n_epochs: int = 3, study: str | None = "s1",
              checkpoint: bytes | None = None) -> str:
    w = store.open_run(cfg.run_id, cfg.to_dict(), dict(META, study=study) if study else META, heartbeat_s=0.2)
    for e in range(n_epochs):
        w.log_epoch(e, {"train_loss": 1.0 / (e + 1), "val_accuracy": final_acc if e == n_epochs - 1 else 0.1})
    w.finish("completed", {"n_params": 10}, checkpoint)
    return cfg.run_id


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs", durable=False, compact_threshold=None)


@pytest.fixture
def study(store):
    """Two activations x three seeds; relu's accuracies 0.8, 0.9, 0.4 (the last one a mistake)."""
    acc = {("relu", 0): 0.8, ("relu", 1): 0.9, ("relu", 2): 0.4, ("tanh", 0): 0.7, ("tanh", 1): 0.7,
           ("tanh", 2): 0.7}
    ids = {k: write_run(store, RunConfig(activation=k[0], seed=k[1]), v) for k, v in acc.items()}
    return ids


def cell(result, level: str):
    return next(c for c in result.cells if c.key["activation"] == level)


def test_exclusion_changes_n_and_mean_everywhere_and_comes_back_on_include(store, study):
    bad = study[("relu", 2)]
    before = analysis.analyze(store, "s1", "val_accuracy", ["activation"])
    assert cell(before, "relu").n == 3 and cell(before, "relu").mean == pytest.approx((0.8 + 0.9 + 0.4) / 3)

    store.annotate("exclude", [bad], reason="wrong data set")
    after = analysis.analyze(store, "s1", "val_accuracy", ["activation"])
    assert cell(after, "relu").n == 2 and cell(after, "relu").mean == pytest.approx(0.85)
    assert after.excluded_runs == {bad: "wrong data set"}
    assert after.to_dict()["excluded_runs"] == {bad: "wrong data set"}
    # the runs list keeps it, flagged with the reason; the query statistics leave it out
    runs = queries.list_runs(store).set_index("run_id")
    assert bool(runs.loc[bad, "excluded"]) and runs.loc[bad, "excluded_reason"] == "wrong data set"
    assert not runs.drop(bad)["excluded"].any()
    piv = queries.pivot(store, "val_accuracy", "activation", stat="final").set_index("activation")
    assert piv.loc["relu", "n"] == 2 and piv.loc["relu", "mean"] == pytest.approx(0.85)
    assert bad not in set(queries.final_and_best(store, "val_accuracy", "max")["run_id"])
    assert len(queries.final_and_best(store, "val_accuracy", "max", include_excluded=True)) == 6
    # counted on request
    assert cell(analysis.analyze(store, "s1", "val_accuracy", ["activation"], include_excluded=True), "relu").n == 3

    store.annotate("include", [bad])
    back = analysis.analyze(store, "s1", "val_accuracy", ["activation"])
    assert cell(back, "relu").n == 3 and back.excluded_runs == {}


def test_excluding_a_study_excludes_its_runs_and_later_ones(store, study):
    store.annotate("exclude", studies=["s1"], reason="old idea")
    runs = queries.list_runs(store)
    assert runs["excluded"].all() and set(runs["excluded_reason"]) == {"study s1: old idea"}
    late = write_run(store, RunConfig(activation="relu", seed=9), 0.5)
    assert bool(queries.list_runs(store).set_index("run_id").loc[late, "excluded"])
    with pytest.raises(StoreValidationError, match="no such study"):
        store.annotate("exclude", studies=["nope"], reason="x")


def test_tags_and_notes_fold_in_order(store, study):
    a, b = study[("relu", 0)], study[("tanh", 0)]
    store.annotate("tag", [a, b], tag="baseline")
    store.annotate("tag", [a], tag="keep")
    store.annotate("untag", [b], tag="baseline")
    store.annotate("note", [a], note="the reference run")
    store.annotate("note", studies=["s1"], note="first try")
    store.annotate("tag", studies=["s1"], tag="paper")
    runs = queries.list_runs(store).set_index("run_id")
    assert list(runs.loc[a, "tags"]) == ["baseline", "keep"] and list(runs.loc[b, "tags"]) == []
    assert runs.loc[a, "note"] == "the reference run" and pd.isna(runs.loc[b, "note"])
    ann = store.annotations()
    assert ann.studies["s1"].note == "first try" and ann.studies["s1"].tags == {"paper"}
    assert queries.sql(store, "SELECT count(*) AS n FROM runs WHERE list_contains(tags, 'keep')")["n"][0] == 1
    with pytest.raises(StoreValidationError, match="no such run"):
        store.annotate("tag", ["0123456789abcdef"], tag="x")
    with pytest.raises(StoreValidationError, match="tag"):
        store.annotate("tag", [a], tag="a,b")


def test_delete_frees_the_files_and_the_config_trains_again(store, study):
    victim_cfg = RunConfig(activation="relu", seed=2)
    victim = study[("relu", 2)]
    store.compact()  # the victim now lives in a compacted part
    other = write_run(store, RunConfig(activation="relu", seed=7), 0.6, checkpoint=b"weights")
    store.annotate("tag", [victim], tag="gone soon")
    plan = store.plan_delete([victim, other])
    assert plan.n_runs == 2 and plan.bytes > len(b"weights") and "2 run(s)" in plan.describe()
    result = store.delete(plan)
    assert result.done
    # every file but the lock files (flock targets stay: removing one under a waiting writer would split the lock)
    files = [p.name for p in store.root.rglob("*") if p.is_file() and p.parent.name != "locks"]
    assert not [f for f in files if f.startswith((victim, other))], files
    parts = [p for p in (store.root / "parts").glob("*.parquet")]
    import pyarrow.parquet as pq
    held = {r for p in parts for r in pq.read_table(p, columns=["run_id"]).column(0).to_pylist()}
    assert victim not in held and len(held) == 5
    assert victim not in set(queries.list_runs(store)["run_id"])
    assert queries.curves(store, [victim]).empty
    assert store.cached(victim) is None and store.get(victim) is None
    assert store.check().ok, str(store.check())
    # asked again, the config trains (attempt numbered above the deleted one) and carries no old annotation
    write_run(store, victim_cfg, 0.55)
    rec = store.get(victim)
    assert rec.status == "completed" and rec.attempt == 2 and rec.final["val_accuracy"] == 0.55
    row = queries.list_runs(store).set_index("run_id").loc[victim]
    assert list(row["tags"]) == [] and not row["excluded"]
    store.compact(full=True)
    assert store.get(victim).attempt == 2 and store.check().ok


def test_deleting_a_running_run_is_refused(store, study):
    cfg = RunConfig(activation="tanh", seed=5)
    w = store.open_run(cfg.run_id, cfg.to_dict(), META, heartbeat_s=0.2)
    w.log_epoch(0, {"train_loss": 1.0})
    with pytest.raises(RunLockedError, match="running and cannot be deleted"):
        store.delete(store.plan_delete([cfg.run_id, study[("relu", 0)]]))
    assert store.annotations().deleted == {}  # nothing deleted, not even the other run
    w.finish("completed")
    assert cfg.run_id in set(queries.list_runs(store)["run_id"])


def test_query_during_compaction_sees_every_run_exactly_once(store, study):
    """A reader thread queries while runs are sealed, compacted, merged and a deletion rewrites a part: every
    answer holds each run once, every run committed before the reader started, and nothing else."""
    import threading
    for s in range(10, 30):
        write_run(store, RunConfig(seed=s), 0.5)
    base = set(queries.list_runs(store)["run_id"])
    later = [RunConfig(seed=s) for s in range(30, 36)]
    allowed = base | {c.run_id for c in later}
    bad: list = []
    seen = [0]
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            ids = list(queries.list_runs(store, columns=["run_id"])["run_id"])
            seen[0] += 1
            if len(ids) != len(set(ids)) or not base <= set(ids) <= allowed:
                bad.append(sorted(ids))
    t = threading.Thread(target=reader)
    t.start()
    try:
        for cfg in later:
            store.compact()
            write_run(store, cfg, 0.5)
        store.compact(full=True)
        wait_for(lambda: seen[0] >= 10, timeout=30, what="the reader's queries")
    finally:
        stop.set()
        t.join()
    assert bad == []
    ids = list(queries.list_runs(store)["run_id"])
    assert len(ids) == len(set(ids)) and set(ids) == allowed


def test_compaction_runs_once_at_a_time(store, study):
    from engine.store.layout import try_lock
    lock = try_lock(store.layout.compaction_lock, "test", retries=0)
    try:
        assert store.compact().skipped == "another compaction is running"
    finally:
        lock.release()
    assert store.compact().done


def test_an_annotation_killed_while_being_written_is_there_or_not_never_half_there(store, study):
    """20 times: a child tags a run in a loop (one atomic record per tag) and is SIGKILLed right after a random
    acknowledged write, i.e. inside the next one. Every acknowledged tag is there, at most one more, every record
    on disk parses whole, and check is clean once the killed writes' temp files are cleared."""
    from tests.test_store_chaos import Child
    rid = study[("relu", 0)]
    rng = random.Random(11)
    acked: set[str] = set()
    for round_ in range(20):
        child = Child("annotate", str(store.root), rid)
        child.wait_for("READY")
        k = rng.randrange(0, 15)
        child.wait_for(f"A {k}")
        lines = child.kill()
        acked |= {f"t{line.split()[1]}" for line in lines if line.startswith("A ")}
        records = list((store.root / "annotations").glob("*.json"))
        for f in records:
            rec = json.loads(f.read_text())  # never half a record
            assert rec["action"] == "tag" and rec["runs"] == [rid]
        tags = set(queries.list_runs(store).set_index("run_id").loc[rid, "tags"])
        assert acked <= tags and len(tags - acked) <= 1, (round_, sorted(tags - acked))
        acked = tags  # a write that landed before the kill counts from now on
    from engine.store.check import check
    check(store, repair=True, tmp_age_s=0)  # the killed writes' temp files: never visible, now removed
    assert check(store, tmp_age_s=0).ok
    assert len(list((store.root / "annotations").glob("*.json"))) >= 20


GAP_STUDY = '''
name = "gap"
metric = "val_mse"
goal = "min"
seeds = [0]
[base]
task = "regression"
hidden = []
optimizer = "sgd"
epochs = 8
batch_size = 1
[factors]
lr = [0.01, 0.02, 0.2]   # 0.2 diverges in its first epochs: its finish comes while the others train on
'''


@pytest.mark.timeout(300)
def test_a_study_past_the_compaction_threshold_trains_without_a_compaction_pause(tmp_path, monkeypatch):
    """150 sealed runs are waiting; the study's first finish (its diverging run, mid-stack) crosses the threshold.
    Compaction used to run inside that finish, pausing the stack's other runs for as long as merging 150 files
    takes (measured: an epoch gap 12x the median). Now no training process compacts: every compaction runs in the
    study's driver, and starts after the last run of the study ended. The test records each compaction's process
    and start time (the wrapper is inherited by forked training processes, so a compaction there would be seen)
    and asserts on that order rather than on epoch gaps in seconds, which a busy machine stretches at random."""
    import engine.store.compaction as compaction
    from engine.study.executor import run_study
    from engine.study.spec import load_study_text
    calls = tmp_path / "compactions.jsonl"
    real_compact = compaction.compact

    def recorded_compact(store, full=False):
        with open(calls, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "start": time.time()}) + "\n")
        return real_compact(store, full)

    monkeypatch.setattr(compaction, "compact", recorded_compact)
    root = tmp_path / "runs"
    waiting = RunStore(root, durable=False, compact_threshold=None)
    for i in range(150):
        w = waiting.open_run(f"old{i:04d}", {"task": "points", "seed": i}, {"device": "cpu"})
        for e in range(5):
            w.log_epoch(e, {"train_loss": 1.0})
        w.finish("completed")
    store = RunStore(root, compact_threshold=151)
    result = run_study(load_study_text(GAP_STUDY, tmp_path / "gap.toml"), store, workers=1, show_progress=False)
    statuses = {o.status for o in result.outcomes.values()}
    assert statuses == {"completed", "diverged"}, statuses
    runs = queries.sql(store, "SELECT run_id, status, ended_at FROM runs WHERE study = 'gap'")
    assert len(runs) == 3 and runs["ended_at"].notna().all()
    compactions = [json.loads(line) for line in calls.read_text().splitlines()]
    assert compactions, "the study crossed the threshold: it must have compacted once it was done"
    assert {c["pid"] for c in compactions} == {os.getpid()}, compactions  # never inside a training process
    last_end = runs["ended_at"].max().timestamp()
    assert min(c["start"] for c in compactions) >= last_end, (compactions, last_end)
    # and the compaction took every run into a part, committed after the last finish
    manifest = json.loads(store.layout.manifest.read_text())
    assert sum(p["n_runs"] for p in manifest["parts"]) == 153


def test_a_full_disk_fails_that_run_with_the_reason_and_keeps_its_epochs(store, monkeypatch):
    """ENOSPC on the 4th epoch append of one run of a stack: that run ends failed naming the full disk, its three
    epochs kept; its stack mate completes; check is clean."""
    from engine.faults import DISK_FULL_ENV
    from engine.train import run_configs
    a, b = RunConfig(task="points", hidden=(8,), epochs=6, seed=0), RunConfig(task="points", hidden=(8,), epochs=6,
                                                                                seed=1)
    monkeypatch.setenv(DISK_FULL_ENV, f"log-epoch@{a.run_id}:4")
    outcomes = {o.run_id: o for o in run_configs([a, b], store, device="cpu")}
    assert outcomes[a.run_id].status == "failed" and "No space left on device" in outcomes[a.run_id].error
    assert outcomes[b.run_id].status == "completed"
    rec = store.get(a.run_id)
    assert rec.status == "failed" and "No space left on device" in rec.error and "3 epochs" in rec.error
    assert rec.n_epochs == 3 and list(queries.curves(store, [a.run_id])["epoch"]) == [0, 1, 2]
    assert store.get(b.run_id).n_epochs == 6
    report = store.check()
    assert report.ok, str(report)
    assert cli_main(["check", "--store", str(store.root)]) == 0


# --- command line -----------------------------------------------------------------------------------------------

def cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_exclude_shows_in_analyze_and_ls_and_include_undoes_it(store, study, capsys):
    bad, root = study[("relu", 2)], str(store.root)
    code, out, _ = cli(capsys, "runs", "exclude", bad, "--reason", "wrong data set", "--store", root)
    assert code == 0 and "1 run(s): excluded from analysis (wrong data set)" in out
    code, out, _ = cli(capsys, "analyze", "--study", "s1", "--metric", "val_accuracy", "--by", "activation",
                       "--format", "json", "--store", root)
    result = json.loads(out)
    relu = next(c for c in result["cells"] if c["key"]["activation"] == "relu")
    assert relu["n"] == 2 and relu["mean"] == pytest.approx(0.85)
    assert result["excluded_runs"] == {bad: "wrong data set"}
    code, out, _ = cli(capsys, "analyze", "--study", "s1", "--metric", "val_accuracy", "--by", "activation",
                       "--store", root)
    assert f"excluded: 1 runs left out of every number by a person" in out and f"{bad} (wrong data set)" in out
    code, out, _ = cli(capsys, "runs", "tag", bad, study[("tanh", 0)], "suspect", "--store", root)
    assert code == 0 and "tagged 'suspect'" in out
    code, out, _ = cli(capsys, "ls", "--store", root)
    line = next(ln for ln in out.splitlines() if ln.startswith(bad))
    assert "yes" in line.split() and "suspect" in line.split()
    assert "excluded" in out.splitlines()[0] and "tags" in out.splitlines()[0]
    code, out, _ = cli(capsys, "runs", "include", bad, "--store", root)
    assert code == 0
    result = json.loads(cli(capsys, "analyze", "--study", "s1", "--metric", "val_accuracy", "--by", "activation",
                            "--format", "json", "--store", root)[1])
    assert next(c for c in result["cells"] if c["key"]["activation"] == "relu")["n"] == 3
    assert result["excluded_runs"] == {}
    code, out, _ = cli(capsys, "runs", "note", bad, "looked at it", "--store", root)
    assert code == 0 and store.annotations().runs[bad].note == "looked at it"
    code, out, _ = cli(capsys, "runs", "note", "--study", "s1", "the first study", "--store", root)
    assert code == 0 and store.annotations().studies["s1"].note == "the first study"
    code, out, _ = cli(capsys, "runs", "exclude", "--study", "s1", "--reason", "old idea", "--store", root)
    assert code == 0 and queries.list_runs(store)["excluded"].all()
    code, _, err = cli(capsys, "runs", "exclude", "0123456789abcdef", "--reason", "x", "--store", root)
    assert code == 2 and err.count("\n") == 1 and "no such run" in err


def test_cli_delete_confirms_refuses_running_runs_and_frees_the_disk(store, study, capsys, monkeypatch):
    root = str(store.root)
    victim = study[("tanh", 1)]
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    code, _, err = cli(capsys, "runs", "delete", victim, "--store", root)
    assert code == 2 and "needs --yes" in err and "1 run(s), about" in err
    assert store.get(victim) is not None
    cfg = RunConfig(activation="tanh", seed=8)
    w = store.open_run(cfg.run_id, cfg.to_dict(), META, heartbeat_s=0.2)
    code, _, err = cli(capsys, "runs", "delete", cfg.run_id, "--yes", "--store", root)
    assert code == 2 and "running and cannot be deleted" in err and err.count("\n") == 1
    w.finish("completed")
    code, out, _ = cli(capsys, "runs", "delete", victim, "--yes", "--store", root)
    assert code == 0 and "deleted 1 run(s)" in out and "files are removed" in out
    assert store.get(victim) is None and not list((store.root / "sealed").glob(f"{victim}*"))
    assert cli(capsys, "check", "--store", root)[0] == 0
    code, out, _ = cli(capsys, "runs", "delete", "--study", "s1", "--yes", "--store", root)
    assert code == 0 and "deleted 5 run(s)" in out
    assert set(queries.list_runs(store)["run_id"]) == {cfg.run_id}


def test_jobs_are_pruned_by_age_and_count(tmp_path, capsys):
    from engine.jobs.limits import Retention
    from engine.jobs.queue import JobQueue
    queue = JobQueue(tmp_path / "runs", durable=False)
    now = time.time()
    ids = []
    for i in range(5):
        job = queue.submit("run", [RunConfig(seed=i)], client_token=f"t{i}").job
        state = "queued" if i == 4 else "completed"
        queue.update(job.id, state=state, finished_at=None if state == "queued" else now - 86400 * (5 - i))
        queue.log_path(job.id).write_text("log")
        ids.append(job.id)
    # 2 days: jobs 0..2 (5, 4, 3 days old) go; the queued one stays whatever its age
    removed = queue.prune(Retention(max_age_days=2.5, keep=100), now=now)
    assert sorted(removed) == sorted(ids[:3])
    assert {j.id for j in queue.jobs()} == {ids[3], ids[4]}
    assert not queue.log_path(ids[0]).exists() and queue.log_path(ids[3]).exists()
    code, out, _ = cli(capsys, "jobs", "prune", "--keep", "0", "--store", str(tmp_path / "runs"))
    assert code == 0 and "pruned 1 finished job(s)" in out and ids[3] in out
    assert {j.id for j in queue.jobs()} == {ids[4]}


def test_cli_on_a_read_only_store_reads_and_refuses_writes_in_one_line(store, study, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "--bind", str(store.root), str(ro)], capture_output=True).returncode != 0:
        pytest.skip("bind mounts are not permitted here (needs root and mount rights)")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True).returncode != 0:
            pytest.skip("read-only remounts are not permitted here")
        code, out, _ = cli(capsys, "ls", "--store", str(ro))
        assert code == 0 and study[("relu", 0)] in out
        assert cli(capsys, "check", "--store", str(ro))[0] == 0
        for argv in (["runs", "exclude", study[("relu", 0)], "--reason", "x"], ["runs", "delete", "--yes",
                                                                                study[("relu", 0)]],
                     ["compact"], ["check", "--repair"], ["train", "--task", "points", "--epochs", "1"]):
            code, _, err = cli(capsys, *argv, "--store", str(ro))
            assert code == 2 and err.count("\n") == 1 and "read-only file system" in err, (argv, err)
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


def test_the_supervisor_compacts_and_prunes_between_jobs(store, study, capsys):
    """Supervisor.maintain (what it runs each time a job ends): compaction once the threshold is reached, then the
    finished jobs past their retention go."""
    from engine.jobs.limits import Limits, Retention
    from engine.jobs.queue import JobQueue
    from engine.jobs.supervisor import Supervisor
    queue = JobQueue(store.root, durable=False)
    for i in range(3):
        job = queue.submit("run", [RunConfig(seed=40 + i)], client_token=f"p{i}").job
        queue.update(job.id, state="failed", finished_at=time.time() - 100 + i)
    logs: list[str] = []
    sup = Supervisor(queue, Limits(max_running=1), retention=Retention(max_age_days=30, keep=1),
                     store=RunStore(store.root, durable=False, compact_threshold=6), log=logs.append)
    sup.maintain()
    manifest = json.loads(store.layout.manifest.read_text())
    assert sum(p["n_runs"] for p in manifest["parts"]) == 6 and not list(store.layout.sealed.glob("*.parquet"))
    assert len(queue.jobs()) == 1 and any("pruned 2 finished job(s)" in line for line in logs)
    assert len(queries.list_runs(store)) == 6


def test_exports_list_excluded_runs_with_their_reasons(store, study, tmp_path):
    bad = study[("relu", 2)]
    store.annotate("exclude", [bad], reason="wrong data set")
    out = queries.export(store, "runs", "csv", tmp_path / "runs.csv")
    rows = {r["run_id"]: r for r in pd.read_csv(out).to_dict("records")}
    assert rows[bad]["excluded_reason"] == "wrong data set" and bool(rows[bad]["excluded"])
    out = queries.export(store, "final_and_best", "json", tmp_path / "fb.json", metric="val_accuracy", mode="max")
    fb = {r["run_id"]: r for r in json.loads(out.read_text())}
    assert len(fb) == 6 and fb[bad]["excluded"] is True and fb[bad]["excluded_reason"] == "wrong data set"
