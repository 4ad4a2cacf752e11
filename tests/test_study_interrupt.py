"""Ctrl-C stops a study cleanly: SIGINT to `python -m engine study run` mid-study keeps the finished runs, marks the
running ones cancelled, exits 130; running the same command again trains only the rest."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.store import RunStore
from engine.study.spec import load_study
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]

# Short runs (1 epoch each, one stack per activation) and one long run; with 2 training processes the long one starts
# first (longest first) and the short ones finish on the other process while it runs. In the first invocation the
# long run is held before its first epoch (a pause point), so that on a slow or loaded machine it cannot finish
# before the interrupt; the second invocation trains it to the end.
STUDY = """\
name = "interrupt"
seeds = [0]
[base]
task = "points"
n_samples = 200
hidden = [16]
batch_size = 10
epochs = 1
[factors]
activation = ["tanh", "relu", "sigmoid", "gelu", "silu"]
[[cells]]
label = "long"
n_samples = 3000
hidden = [64, 64]
activation = "elu"
epochs = 60
"""


def run_cli(path: Path, store: Path, **env_vars: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), **env_vars}
    # Ctrl-C as a terminal delivers it: a suite started in the background (`make test &`, nohup) passes SIGINT down
    # ignored, and Python then keeps ignoring it, so the study would never see the interrupt.
    return subprocess.Popen([sys.executable, "-m", "engine", "study", "run", str(path), "--store", str(store),
                             "--workers", "2", "--quiet"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.timeout(240)
def test_sigint_keeps_finished_runs_cancels_running_ones_and_restart_completes(tmp_path):
    path = tmp_path / "interrupt.toml"
    path.write_text(STUDY)
    spec = load_study(path)
    store_root = tmp_path / "store"
    store = RunStore(store_root)
    short = [c.run_id for c in spec.runs if c.grid == "main"]
    long = [c.run_id for c in spec.runs if c.grid == "long"]
    assert len(short) == 5 and len(long) == 1

    proc = run_cli(path, store_root, ABLATION_LAB_PAUSE_AT=",".join(f"before-first-epoch@{r}" for r in long),
                   ABLATION_LAB_PAUSE_DIR=str(tmp_path))

    def ready_to_interrupt() -> bool:
        assert proc.poll() is None, proc.communicate()
        done = sum(1 for r in short if store.attempts(r).get(1) == "completed")
        held = any(tmp_path.glob("paused-before-first-epoch-*"))
        return done == len(short) and held and all(store.attempts(r).get(1) == "running" for r in long)
    try:
        wait_for(ready_to_interrupt, 150, every=0.1, what="five runs completed and the long one running",
                 show=lambda: {r: store.attempts(r) for r in short + long})
    except AssertionError:
        proc.kill()
        raise
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in out and "status: cancelled 1, completed 5" in out

    finished = {r: store.get(r) for r in short}
    assert all(rec.status == "completed" and rec.attempt == 1 for rec in finished.values())
    for r in long:
        rec = store.get(r)
        assert rec.status == "cancelled" and rec.n_epochs == 0, (rec.status, rec.n_epochs)

    # Restart: only the cancelled runs train again (a new attempt); the finished ones are untouched.
    before = {r: (rec.attempt, rec.ended_at) for r, rec in finished.items()}
    proc = run_cli(path, store_root)
    out, err = proc.communicate(timeout=200)
    assert proc.returncode == 0, (out, err)
    assert "5 were cached, 1 ran now" in out
    for r in short:
        rec = store.get(r)
        assert (rec.attempt, rec.ended_at) == before[r]
    for r in long:
        assert store.attempts(r) == {1: "cancelled", 2: "completed"}
        assert store.get(r).n_epochs == 60
