"""Studies on a real Ray cluster started the Ray way (`ray start --head`, `ray start --address`), driven through
`python -m engine study run --executor ray --address ...` (docs/cluster.md).

The cluster lives on loopback only. Ray 2.60 rewrites 127.0.0.1 (and localhost) given to `ray start
--node-ip-address` into the machine's outward address, so the nodes are given 127.0.0.2, another loopback address
that Ray takes as it is; every connection of every process here is then checked to be on loopback. Each node gets
one CPU, so a study's first two stacks train one on each node. The processes are told apart by the cluster's own
temp folder (in their command lines, or their parent's), and killed by pid at the end: `ray stop` would stop every
Ray on the machine, including a test's in-process Ray running beside this one.
"""
from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Iterator

import pytest

from engine.store import RunStore
from engine.study.spec import load_study
from tests.waiting import wait_for

psutil = pytest.importorskip("psutil")
pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
HOST = "127.0.0.2"
PAUSE = "ray-epoch-sent"

pytestmark = pytest.mark.timeout(900)


def study_text(name: str, widths: list[int]) -> str:
    """A study of len(widths) stacks (one per hidden width) of two seeds each."""
    return f"""\
name = "{name}"
metric = "val_loss"
seeds = [0, 1]
[base]
task = "regression"
dataset = "diabetes"
activation = "tanh"
optimizer = "adam"
lr = 0.01
batch_size = 32
epochs = 3
[factors]
hidden = {[[w] for w in widths]}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A head and named worker nodes, each with its own temp folder under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        token = root / "token"
        token.write_text(secrets.token_hex(32))
        # Ray's token auth on every node, as `ray start --head` turns on by itself where a token exists.
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                    "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def _start(self, name: str, *args: str) -> None:
        folder = self.root / name
        folder.mkdir()
        subprocess.run([str(RAY), "start", "--node-ip-address", HOST, "--num-cpus", "1",
                        "--object-store-memory", str(100 * 1024 ** 2), "--temp-dir", str(folder),
                        "--disable-usage-stats", *args], env=self.env, check=True, capture_output=True, timeout=180)

    def start_head(self) -> None:
        self._start("head", "--head", "--port", str(self.port), "--include-dashboard", "false")

    def add_node(self, name: str) -> None:
        self._start(name, "--address", self.address)

    def processes(self, name: str | None = None) -> list:
        """Live processes of one node (or of the whole cluster): those naming its folder, and their children."""
        mark = str(self.root / name) if name else str(self.root)
        found = {}
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(mark in part for part in p.info["cmdline"] or ()):
                    found[p.pid] = p
                    found.update((c.pid, c) for c in p.children(recursive=True))
            except psutil.Error:
                continue
        return [p for p in found.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    def kill(self, name: str | None = None) -> None:
        """SIGKILL a node (the way a machine dies) or, without a name, the whole cluster; wait until all are gone."""
        procs = self.processes(name)
        for p in procs:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=30)
        wait_for(lambda: not self.processes(name), timeout=30, what=f"the processes of {name or 'the cluster'} to end",
                 show=lambda: [p.pid for p in self.processes(name)])


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # short: Ray's socket paths live under it
    c = Cluster(root)
    try:
        c.start_head()
        yield c
    finally:
        c.kill()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def node(cluster, request):
    """One extra node for this test, killed at its end (it may have been killed already)."""
    name = request.node.name[:20].replace("[", "_").replace("]", "_")
    cluster.add_node(name)
    yield name
    cluster.kill(name)


def driver(cluster: Cluster, study: Path, store: Path, *extra: str, pause_dir: Path | None = None,
           address: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_MODE"}  # the driver finds the token by itself
    env.pop("ABLATION_LAB_PAUSE_AT", None)
    if pause_dir is not None:
        env.update(ABLATION_LAB_PAUSE_AT=PAUSE, ABLATION_LAB_PAUSE_DIR=str(pause_dir))
    return subprocess.Popen([sys.executable, "-m", "engine", "study", "run", str(study), "--executor", "ray",
                             "--address", address or cluster.address, "--store", str(store), "--quiet", *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextmanager
def driving(*args, **kwargs) -> Iterator[subprocess.Popen]:
    """``driver``, killed on the way out if it still runs (a failed assertion mid-study)."""
    proc = driver(*args, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=400)
    return proc.returncode, out, err


def paused(folder: Path) -> list[int]:
    return [int(p.read_text()) for p in folder.glob(f"paused-{PAUSE}-*") if p.read_text()]


def wait_for_paused_tasks(proc: subprocess.Popen, folder: Path, n: int = 2) -> list[int]:
    """The pids of ``n`` tasks paused after sending their first epoch; fails at once if the driver has ended."""
    def check():
        if proc.poll() is not None:
            raise AssertionError(f"the study ended with {proc.returncode} before {n} tasks paused: "
                                 f"{proc.communicate()}")
        pids = paused(folder)
        return pids if len(pids) == n else None
    return wait_for(check, timeout=300, what=f"{n} tasks to pause after their first epoch",
                    show=lambda: sorted(p.name for p in folder.iterdir()))


def assert_loopback_only(procs) -> int:
    """Every address every process uses is a loopback one; sockets that listen on all interfaces are Ray's own
    gRPC servers (Ray 2.60 binds them so, whatever the node address). Returns how many connections were seen."""
    seen = 0
    for p in procs:
        try:
            conns = p.net_connections("inet")
        except psutil.Error:
            continue
        for c in conns:
            for addr in (c.laddr, c.raddr):
                if not addr:
                    continue
                ip = ipaddress.ip_address(addr.ip.split("%")[0])
                ip = getattr(ip, "ipv4_mapped", None) or ip
                listening_everywhere = c.status == psutil.CONN_LISTEN and ip.is_unspecified
                assert ip.is_loopback or listening_everywhere, (p.pid, p.name(), c)
            seen += c.status == psutil.CONN_ESTABLISHED
    return seen


def write_study(tmp_path: Path, name: str, widths: list[int]) -> tuple[Path, list[str]]:
    path = tmp_path / f"{name}.toml"
    path.write_text(study_text(name, widths))
    return path, [c.run_id for c in load_study(path).runs]


def test_two_node_study_streams_epochs_and_records_the_nodes(cluster, node, tmp_path):
    study, ids = write_study(tmp_path, "two-nodes", [4, 8, 16])
    store_dir, pause_dir = tmp_path / "store", tmp_path / "pause"
    pause_dir.mkdir()
    with driving(cluster, study, store_dir, pause_dir=pause_dir) as proc:
        # Each node's task has sent its first epoch and waits: the stacks have not finished.
        pids = wait_for_paused_tasks(proc, pause_dir)
        store = RunStore(store_dir)

        def streamed():  # 2 stacks x 2 seeds, still open (their tasks wait), each with its first epoch stored
            live = [r for r in (store.get(rid) for rid in ids) if r is not None]
            return live if len(live) == 4 and all(r.status == "running" and r.n_epochs == 1 for r in live) else None
        live = wait_for(streamed, timeout=60, what="the paused stacks' first epochs in the store",
                        show=lambda: [(r.status, r.n_epochs) for r in (store.get(rid) for rid in ids) if r])
        assert len({r.meta["ray_node_id"] for r in live}) == 2                # one stack on each node
        assert {r.meta["ray_node_ip"] for r in live} == {HOST}
        assert set(pids) <= {p.pid for p in cluster.processes()}              # the tasks run in the cluster
        assert assert_loopback_only(cluster.processes() + [psutil.Process(proc.pid)]) > 0
        (pause_dir / f"resume-{PAUSE}").write_text("")
        code, out, err = finish(proc)
    assert code == 0, (out, err)
    assert "6 ran now (ray, 2 processes)" in out
    records = {rid: store.get(rid) for rid in ids}
    assert {r.status for r in records.values()} == {"completed"}
    assert all(r.n_epochs == 3 and r.meta["executor"] == "ray" and r.meta["ray_attempt"] == 1 and r.meta["hostname"]
               for r in records.values())
    assert len({r.meta["ray_node_id"] for r in records.values()}) == 2      # both nodes trained runs


def test_a_lost_node_is_retried_or_failed_and_a_rerun_completes(cluster, node, tmp_path):
    def kill_the_node_of_a_paused_task(name: str, proc: subprocess.Popen, pause_dir: Path) -> None:
        wait_for_paused_tasks(proc, pause_dir)
        on_node = {p.pid for p in cluster.processes(name)}
        assert len(set(paused(pause_dir)) & on_node) == 1  # one of the two paused stacks trains on the extra node
        cluster.kill(name)
        (pause_dir / f"resume-{PAUSE}").write_text("")

    # 1. With retries, the lost stack trains again on the head: every run completes; the lost attempt failed.
    study, ids = write_study(tmp_path, "lost-retried", [5, 9, 17])
    store_dir, pause_dir = tmp_path / "store", tmp_path / "pause1"
    pause_dir.mkdir()
    with driving(cluster, study, store_dir, "--retries", "1", pause_dir=pause_dir) as proc:
        kill_the_node_of_a_paused_task(node, proc, pause_dir)
        code, out, err = finish(proc)
    assert code == 0, (out, err)
    store = RunStore(store_dir)
    records = {rid: store.get(rid) for rid in ids}
    assert {r.status for r in records.values()} == {"completed"} and all(r.n_epochs == 3 for r in records.values())
    retried = [r for r in records.values() if r.meta["ray_attempt"] == 2]
    assert len(retried) == 2                                                  # the lost stack's two runs
    assert len({r.meta["ray_node_id"] for r in records.values()}) == 1     # all on the head, the node that remained
    for r in retried:
        assert list(store.attempts(r.run_id).values()) == ["failed", "completed"]

    # 2. Without retries, the lost stack's runs end failed with the reason; a rerun trains just those.
    cluster.add_node("second")
    try:
        study, ids = write_study(tmp_path, "lost-failed", [6, 10, 18])
        pause_dir = tmp_path / "pause2"
        pause_dir.mkdir()
        with driving(cluster, study, store_dir, "--retries", "0", pause_dir=pause_dir) as proc:
            kill_the_node_of_a_paused_task("second", proc, pause_dir)
            code, out, err = finish(proc)
    finally:
        cluster.kill("second")
    assert code == 1, (out, err)
    records = {rid: store.get(rid) for rid in ids}
    failed = sorted(rid for rid, r in records.items() if r.status == "failed")
    assert len(failed) == 2 and {records[r].status for r in ids if r not in failed} == {"completed"}
    for rid in failed:
        assert records[rid].error.startswith("ray node lost on node 127.0.0.2 (attempt 1): ")
        assert rid in out and "ray node lost" in out                          # the report says which and why
    with driving(cluster, study, store_dir) as proc:
        code, out, err = finish(proc)
    assert code == 0, (out, err)
    assert "4 were cached, 2 ran now" in out
    assert {store.get(rid).status for rid in ids} == {"completed"}


def test_an_address_where_nothing_listens_is_one_line_and_exit_2(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    study, _ = write_study(tmp_path, "nowhere", [4])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "ABLATION_LAB_PAUSE"))}
    done = subprocess.run([sys.executable, "-m", "engine", "study", "run", str(study), "--executor", "ray",
                           "--address", address, "--store", str(tmp_path / "store")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: cannot reach a Ray cluster at {address} (")
    assert f"ray start --head --port {address.rsplit(':', 1)[1]}" in lines[0]
    assert done.stdout == ""
    assert not any((tmp_path / "store").rglob("*.parquet"))  # nothing recorded


def test_a_launched_job_trains_on_the_cluster_and_reports_progress_live(cluster, tmp_path, monkeypatch):
    """The Launch page's path: a study job with a Ray address, run by the store's supervisor like any job."""
    from engine.jobs import JobQueue
    from engine.jobs.service import ensure_supervisor, stop_supervisor

    study, ids = write_study(tmp_path, "launched", [7])
    spec = load_study(study)
    store_dir, pause_dir = tmp_path / "store", tmp_path / "pause"
    store_dir.mkdir()
    pause_dir.mkdir()
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", cluster.env["RAY_AUTH_TOKEN_PATH"])  # the supervisor inherits these
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("ABLATION_LAB_PAUSE_AT", PAUSE)
    monkeypatch.setenv("ABLATION_LAB_PAUSE_DIR", str(pause_dir))
    queue = JobQueue(store_dir)
    job = queue.submit("study", spec.configs(), study="launched", ray_address=cluster.address).job
    try:
        assert ensure_supervisor(store_dir, idle_exit_s=None, wait_s=30) is not None
        wait_for(lambda: paused(pause_dir), timeout=300, what="the job's task to pause after its first epoch",
                 show=lambda: queue.require(job.id))
        # while the stack waits on the node: the job's progress and the store both show its first epoch
        running = wait_for(lambda: (j := queue.require(job.id)).progress_done == 2 and j, timeout=60,
                           what="the job's progress to count the streamed epoch", show=lambda: queue.require(job.id))
        assert running.state == "running" and running.progress_total == 6
        assert running.device_used == f"ray {cluster.address} (auto)"
        assert {RunStore(store_dir).get(r).n_epochs for r in ids} == {1}
        (pause_dir / f"resume-{PAUSE}").write_text("")
        done = wait_for(lambda: (j := queue.require(job.id)).state not in ("queued", "running") and j, timeout=300,
                        what="the job to end")
    finally:
        assert stop_supervisor(store_dir)
    assert done.state == "completed", done.error
    assert done.outcomes == {r: "completed" for r in ids} and done.progress_done == 6
    records = [RunStore(store_dir).get(r) for r in ids]
    assert all(r.meta["job_id"] == job.id and r.meta["ray_node_ip"] == HOST and r.n_epochs == 3 for r in records)


def test_the_runs_page_says_where_each_run_trained(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from engine.config import RunConfig
    store = RunStore(tmp_path / "store")
    where = {"ray_node_id": "4f1c2a9be07d" + "0" * 44, "ray_node_ip": HOST, "hostname": "node-b", "ray_attempt": 2}
    metas = [{"device": "cpu", "hostname": "laptop"}, {"device": "cpu", **where, "executor": "ray"}]
    ids = []
    for seed, meta in enumerate(metas):
        config = RunConfig(task="points", epochs=1, seed=seed)
        writer = store.open_run(config.run_id, config.to_dict(), meta)
        writer.log_epoch(0, {"val_loss": 0.5})
        writer.finish("completed")
        ids.append(config.run_id)
    monkeypatch.setenv("ABLATION_LAB_STORE", str(store.root))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=90)
    at.query_params["runs"] = ids
    at.run()
    at.switch_page("pages/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    captions = "\n".join(c.value for c in at.caption)
    assert f"{ids[0][:8]} trained on laptop (cpu)" in captions
    assert f"{ids[1][:8]} trained on Ray node 4f1c2a9be07d at {HOST} (host node-b, attempt 2)" in captions


def test_an_address_that_accepts_but_never_answers_gets_one_error_line_and_exit_2(tmp_path):
    """The connection wait is bounded: a port that takes connections and says nothing (not a Ray head)."""
    study, _ = write_study(tmp_path, "silent", [4])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "ABLATION_LAB_PAUSE"))}
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        done = subprocess.run([sys.executable, "-m", "engine", "study", "run", str(study), "--executor", "ray",
                               "--address", address, "--store", str(tmp_path / "store")],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: the Ray cluster at {address} did not answer within 20 s: check that "
                      f"`ray start --head --port {address.rsplit(':', 1)[1]}` runs there and that this machine "
                      f"reaches it; every node must run Ray {version('ray')} and Python {sys.version.split()[0]} as "
                      f"this one does, and share its auth token (RAY_AUTH_TOKEN or ~/.ray/auth_token) when the "
                      f"cluster uses one"], done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_ctrl_c_cancels_the_running_stack_and_a_rerun_trains_what_is_missing(cluster, tmp_path):
    study, ids = write_study(tmp_path, "interrupted", [3, 11])
    store_dir, pause_dir = tmp_path / "store", tmp_path / "pause"
    pause_dir.mkdir()
    with driving(cluster, study, store_dir, pause_dir=pause_dir) as proc:
        wait_for_paused_tasks(proc, pause_dir, n=1)  # the head's one CPU: one stack in flight, one waiting
        store = RunStore(store_dir)
        wait_for(lambda: sum(1 for r in ids if (rec := store.get(r)) and rec.n_epochs == 1) == 2, timeout=60,
                 what="the running stack's first epochs in the store")
        proc.send_signal(signal.SIGINT)
        code, out, err = finish(proc)
    (pause_dir / f"resume-{PAUSE}").write_text("")  # the cancelled task, if it still waits, goes and stops
    assert code == 130, (out, err)
    statuses = {r: (rec.status if (rec := store.get(r)) else "not started") for r in ids}
    assert sorted(statuses.values()) == ["cancelled", "cancelled", "not started", "not started"], statuses
    assert "interrupted: finished runs are kept in the store" in out
    with driving(cluster, study, store_dir) as proc:
        code, out, err = finish(proc)
    assert code == 0, (out, err)
    assert "0 were cached, 4 ran now" in out and {store.get(r).status for r in ids} == {"completed"}
