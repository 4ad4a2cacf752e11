"""The Launch page under Streamlit's AppTest: a form that offers only what applies and only valid choices, an invalid
config that cannot be launched, idempotent launches (double click, rerun, reload), the study builder's summary, the
queue cap's refusal, and cancel from the jobs panel.

The store's supervisor lock is held by the test itself, so the page believes a worker is alive and starts none:
jobs stay queued and nothing trains (tests/test_jobs.py and the browser test run real workers).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.config import RunConfig
from engine.jobs import JobQueue

REPO = Path(__file__).resolve().parent.parent
PAGE = str(REPO / "pages" / "launch.py")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def store_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    monkeypatch.setenv("ABLATION_LAB_STORE", str(root))
    monkeypatch.setenv("ABLATION_LAB_MAX_RUNNING", "1")
    fd = JobQueue(root).take_supervisor_lock()  # a "live supervisor" that never runs anything
    assert fd is not None
    yield root
    os.close(fd)


def open_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=90)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "info", "warning", "error", "success")
                     for e in at.get(kind))


def fields(at: AppTest, prefix: str) -> set[str]:
    """Config fields that have a widget under this key prefix (e.g. "run.points": the One run tab, task points)."""
    out = set()
    for kind in ("selectbox", "number_input", "text_input", "checkbox"):
        for w in at.get(kind):
            if w.key and w.key.startswith(prefix + "."):
                out.add(w.key[len(prefix) + 1:])
    return out


def test_form_offers_only_applicable_fields_and_valid_choices(store_root):
    at = open_page()
    assert at.selectbox(key="run.points.dataset").options == ["circles", "moons", "xor", "spirals"]
    assert at.selectbox(key="run.points.model").options == ["mlp"]  # cnn needs an image task
    assert "gaussian_nll" not in at.selectbox(key="run.points.loss").options
    shown = fields(at, "run.points")
    assert {"dataset", "n_samples", "noise", "class_balance", "hidden", "lr", "epochs", "seed"} <= shown
    assert not {"n_colors", "channels", "kernel_sizes", "momentum", "nesterov", "min_lr", "step_size"} & shown
    assert "seed" not in fields(at, "study.points")  # the study's seeds come from its seeds count

    at.selectbox(key="run.points.optimizer").select("sgd").run()
    assert {"momentum", "nesterov"} <= fields(at, "run.points")
    at.selectbox(key="run.task").select("colored_mnist").run()
    assert not at.exception
    assert at.selectbox(key="run.colored_mnist.model").options == ["mlp", "cnn"]
    shown = fields(at, "run.colored_mnist")
    assert "n_colors" in shown and not {"n_samples", "noise", "class_balance"} & shown
    assert at.selectbox(key="run.colored_mnist.loss").value == "cross_entropy"
    at.selectbox(key="run.colored_mnist.model").select("cnn").run()
    shown = fields(at, "run.colored_mnist")
    assert {"channels", "kernel_sizes", "pool"} <= shown and "hidden" not in shown


def at_field(at: AppTest) -> list[str]:
    """Errors drawn inside the form's columns: under a field, not only beside the button."""
    return [e.value for col in at.columns for e in col.error]


def test_invalid_value_cannot_be_launched_and_is_said_at_the_field_in_the_users_words(store_root):
    at = open_page()
    at.text_input(key="run.points.lr").input("-1").run()
    assert at_field(at) == ["Learning rate must be > 0 (you typed -1)"]
    assert "Learning rate must be > 0 (you typed -1)" in [e.value for e in at.error]  # beside the button too
    assert at.button(key="launch_run").disabled
    at.text_input(key="run.points.lr").input("0.01").run()
    at.text_input(key="run.points.hidden").input("10,x").run()
    assert at_field(at) == ["Hidden widths takes whole numbers separated by commas, e.g. 100,150 (empty for none); "
                            "you typed 10,x"]
    assert at.button(key="launch_run").disabled
    assert JobQueue(store_root).jobs() == []


@pytest.mark.parametrize("typed, message", [
    ("abc", "Epochs must be a number (you typed abc)"),
    ("2.5", "Epochs must be a whole number (you typed 2.5)"),   # never truncated to 2
    ("", "Epochs needs a value"),
    ("0", "Epochs must be >= 1 (you typed 0)"),
])
def test_a_number_field_keeps_what_was_typed_and_refuses_it_at_the_field(store_root, typed, message):
    at = open_page()
    at.text_input(key="run.points.epochs").input(typed).run()
    assert at.text_input(key="run.points.epochs").value == typed  # not reverted
    assert at_field(at) == [message]
    assert at.button(key="launch_run").disabled
    at.text_input(key="run.points.epochs").input("3").run()   # fixed: no message, launchable
    assert at_field(at) == [] and not at.button(key="launch_run").disabled


def test_study_number_fields_and_factor_values_are_refused_at_the_field(store_root):
    at = open_page()
    at.text_input(key="study.epochs").input("2.5").run()
    assert "Epochs must be a whole number (you typed 2.5)" in at_field(at)
    assert at.button(key="launch_study").disabled
    at.text_input(key="study.epochs").input("2").run()
    at.multiselect(key="study.factors").select("lr").run()
    at.text_input(key="study.f.lr.values").input("0.1, -1").run()
    # the engine's "study builder: [factors], factors.lr: cell {lr=-1} (seed 0) is not a valid config", said as
    # the form says it, under the factor
    assert at_field(at) == ["Learning rate must be > 0 (you typed -1)"]
    assert not any("study builder" in e.value or "cell {" in e.value for e in at.error)
    assert at.button(key="launch_study").disabled


def test_an_existing_study_name_is_warned_about(store_root):
    at = open_page()
    at.text_input(key="study.epochs").input("1").run()
    at.text_input(key="study.points.n_samples").input("60").run()
    name = at.text_input(key="study.name").value
    assert not [w for w in at.warning if "already in the store" in w.value]
    from engine.store import RunStore
    from engine.study.executor import run_study
    s, _ = _summary_of(at)
    run_study(s, RunStore(store_root), workers=1, device="cpu", show_progress=False)
    at.run()
    [warning] = [w.value for w in at.warning if "already in the store" in w.value]
    assert f"A study named {name} is already in the store (2 runs)" in warning and "reused" in warning
    assert re.search(r"0 to train, nothing to train", "\n".join(i.value for i in at.info)), texts(at)


def _summary_of(at: AppTest):
    """The spec the Study tab would launch (its current fields), expanded as the page expands it."""
    from engine.study.builder import expand, study_data
    from ui.study_builder import minimal_base
    base = {"task": "points", "epochs": int(at.text_input(key="study.epochs").value),
            "n_samples": int(at.text_input(key="study.points.n_samples").value)}
    return expand(study_data(at.text_input(key="study.name").value, minimal_base(base), {}, 2)), None


def test_estimate_says_what_it_was_measured_from(store_root):
    at = open_page()
    [run_info] = [i.value for i in at.info if i.value.startswith("Run id")]
    assert re.search(r"not in the store yet, about (under 1s|\d+s|[\d.]+ min) of training "
                     r"\(from a calibration run on this machine\)", run_info), run_info


def test_double_click_rerun_and_reload_show_one_job(store_root):
    at = open_page()
    at.text_input(key="run.points.epochs").input("3").run()
    assert not at.button(key="launch_run").disabled
    at.button(key="launch_run").click().run()
    jobs = JobQueue(store_root).jobs()
    assert len(jobs) == 1 and jobs[0].state == "queued" and jobs[0].kind == "run"
    job = jobs[0]
    assert RunConfig.from_dict(dict(job.configs[0])).epochs == 3
    assert f"Queued job {job.id}" in texts(at)
    at.button(key="launch_run").click().run()  # the second click of a double click, or a repeated rerun
    at.run()
    assert [j.id for j in JobQueue(store_root).jobs()] == [job.id]
    assert f"Already launched as job {job.id}" in texts(at)

    reloaded = open_page()  # a reload is a new session
    assert [j.id for j in JobQueue(store_root).jobs()] == [job.id]
    assert job.id in texts(reloaded)
    assert reloaded.button(key=f"cancel-{job.id}")


def test_study_builder_summary_and_launch(store_root):
    at = open_page()
    at.text_input(key="study.epochs").input("2").run()
    at.text_input(key="study.seeds").input("2").run()
    at.multiselect(key="study.factors").select("activation").run()
    at.multiselect(key="study.f.activation").select("tanh").run()
    assert not at.exception
    summary = [i.value for i in at.info if "cell" in i.value]
    assert summary and re.search(r"2 cells × 2 seeds = 4 runs, 0 cached, 4 to train, (about|time unknown)",
                                 summary[-1]), summary
    at.button(key="launch_study").click().run()
    [job] = JobQueue(store_root).jobs()
    assert job.kind == "study" and job.n_runs == 4 and job.study == at.text_input(key="study.name").value
    assert {RunConfig.from_dict(dict(c)).activation for c in job.configs} == {"relu", "tanh"}
    assert 'activation = ["relu", "tanh"]' in job.spec

    # A range factor: 3 learning rates in log scale; an invalid value is refused with the study's message.
    at.multiselect(key="study.factors").select("lr").run()
    at.radio(key="study.f.lr.how").set_value("log range").run()
    assert re.search(r"6 cells × 2 seeds = 12 runs", "\n".join(i.value for i in at.info))
    # Varying the optimizer from an sgd base: sgd's momentum does not leak into the adam cells.
    at.selectbox(key="study.points.optimizer").select("sgd").run()
    at.multiselect(key="study.factors").select("optimizer").run()
    at.multiselect(key="study.f.optimizer").select("adam").run()
    assert re.search(r"12 cells × 2 seeds = 24 runs", "\n".join(i.value for i in at.info)), texts(at)
    at.radio(key="study.f.lr.how").set_value("values").run()
    at.text_input(key="study.f.lr.values").input("0.1, -1").run()
    assert "Learning rate must be > 0 (you typed -1.0)" in texts(at) and at.button(key="launch_study").disabled


def test_queue_cap_refusal_is_shown(store_root, monkeypatch):
    monkeypatch.setenv("ABLATION_LAB_MAX_QUEUED", "1")
    at = open_page()
    at.button(key="launch_run").click().run()
    at.text_input(key="run.points.seed").input("7").run()
    at.button(key="launch_run").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("queue is full" in e and "the cap is 1 queued jobs" in e for e in errors), errors
    assert len(JobQueue(store_root).jobs()) == 1


def test_cancel_button_cancels_a_queued_job(store_root):
    queue = JobQueue(store_root)
    job = queue.submit("run", [RunConfig(task="points", epochs=2)]).job
    at = open_page()
    at.button(key=f"cancel-{job.id}").click().run()
    assert queue.require(job.id).state == "cancelled"
    assert not at.exception
    assert at.button(key=f"requeue-{job.id}")  # a cancelled job can be queued again


def test_one_id_per_job_and_the_launch_message_goes_when_the_job_is_cancelled(store_root):
    at = open_page()
    [run_info] = [i.value for i in at.info if i.value.startswith("Run id")]
    at.button(key="launch_run").click().run()
    [job] = JobQueue(store_root).jobs()
    [queued] = [m.value for m in at.success if "Queued job" in m.value]
    assert queued.startswith(f"Queued job {job.id}: ") and "same id" in queued
    assert f"Run id `{job.run_ids[0]}`" in run_info                      # the run's id, labelled as such
    card = [m.value for m in at.markdown if f"job `{job.id}`" in m.value]
    assert len(card) == 1 and "**queued**" in card[0]                    # the card: the message's id, labelled
    at.button(key=f"cancel-{job.id}").click().run()
    assert JobQueue(store_root).require(job.id).state == "cancelled"
    assert not [m for m in at.success if "Queued job" in m.value]         # no stale "Queued" over a cancelled card
    assert any(f"job `{job.id}`" in m.value and "**cancelled**" in m.value for m in at.markdown)


def test_a_study_goes_to_the_configured_ray_cluster_under_the_same_queue_cap(store_root, monkeypatch):
    monkeypatch.setenv("ABLATION_LAB_RAY_ADDRESS", "127.0.0.2:6390")
    monkeypatch.setenv("ABLATION_LAB_MAX_QUEUED", "1")
    at = open_page()
    assert at.toggle(key="launch.on_ray").value is True                       # on when a cluster is configured
    assert at.text_input(key="launch.ray_address").value == "127.0.0.2:6390"
    at.text_input(key="study.epochs").input("2").run()
    at.button(key="launch_study").click().run()
    assert not at.exception, [e.value for e in at.exception]
    [job] = JobQueue(store_root).jobs()
    assert job.kind == "study" and job.ray_address == "127.0.0.2:6390" and job.n_runs == 2
    # the cluster job counts against the same queue cap as one on this machine
    at.text_input(key="study.epochs").input("3").run()
    at.button(key="launch_study").click().run()
    assert any("queue is full" in e.value for e in at.error), texts(at)
    # an address of the wrong shape is refused with what is expected, nothing queued
    monkeypatch.setenv("ABLATION_LAB_MAX_QUEUED", "5")
    at.text_input(key="launch.ray_address").input("no-port-here").run()
    at.button(key="launch_study").click().run()
    assert any("expected HOST:PORT" in e.value for e in at.error), texts(at)
    assert len(JobQueue(store_root).jobs()) == 1


def test_without_a_configured_cluster_jobs_train_on_this_machine(store_root, monkeypatch):
    monkeypatch.delenv("ABLATION_LAB_RAY_ADDRESS", raising=False)
    at = open_page()
    assert at.toggle(key="launch.on_ray").value is False
    at.button(key="launch_run").click().run()
    [job] = JobQueue(store_root).jobs()
    assert job.ray_address is None


def test_the_time_limit_refuses_what_is_not_a_duration(store_root):
    at = open_page()
    at.text_input(key="launch.timeout_min").input("abc").run()
    assert [e.value for e in at.columns[1].error] == ["Wall-clock limit per job (minutes) must be a number "
                                                      "(you typed abc)"]
    assert at.button(key="launch_run").disabled and at.button(key="launch_study").disabled
    at.text_input(key="launch.timeout_min").input("1.5").run()
    at.button(key="launch_run").click().run()
    [job] = JobQueue(store_root).jobs()
    assert job.timeout_s == 90.0
