"""The Launch page in a real browser (headless Chromium + Playwright) against a real Streamlit server and a real
worker: launch a small points study, watch its progress bar reach 100% and its card say completed, open its runs in
Curves; launch a long run and cancel it from the jobs panel, and see it cancelled.

The server is fresh: this is its first session, the case where Streamlit's pages/ fallback ran the first script run
(issue 15). Every step waits for what the user would see, with a generous bound; on failure the test prints what the
page held (sidebar, cards, dialogs), the job queue's records and the worker's log, and saves a screenshot under
test-artifacts/.
"""
from __future__ import annotations

import json
import os
import re
import signal
from contextlib import contextmanager

import pytest

from engine.jobs import JobQueue
from engine.jobs.service import stop_supervisor
from tests.browser_helpers import (APP_NAV, CHROMIUM, CHROMIUM_ARGS, RUN_TIMEOUT_MS, TRACKER_JS, idle,
                                   report_failure, screenshot, sidebar_nav, streamlit_server, tail,
                                   wait_for_app_nav)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

JOB_TIMEOUT_MS = 240_000  # a 4-run, 3-epoch points study trains in seconds; this bounds a loaded machine


@pytest.fixture
def app(tmp_path):
    """(base URL, store root) of a fresh Streamlit server on a fresh store; server, worker and jobs are gone
    afterwards."""
    root = tmp_path / "store"
    root.mkdir()
    env = {"ABLATION_LAB_MAX_RUNNING": "2", "ABLATION_LAB_WORKER_IDLE_S": "20"}
    try:
        with streamlit_server(root, tmp_path / "server.log", env=env) as base:
            yield base, root
    finally:
        stop_supervisor(root)
        for job in JobQueue(root).jobs():
            if job.pid:
                try:
                    os.killpg(job.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def queue_state(queue: JobQueue) -> str:
    """The job queue's records (without the configs) and the worker log's tail, for a failure's output."""
    lines = ["===== job queue ====="]
    try:
        for job in queue.jobs():
            d = {k: v for k, v in job.to_dict().items() if k not in ("configs", "spec")}
            lines.append(json.dumps(d, default=str))
        lines.extend(f"problem: {p}" for p in queue.problems())
    except Exception as e:
        lines.append(f"(could not read the queue: {type(e).__name__}: {e})")
    lines.append(f"===== supervisor log ({queue.supervisor_log}) =====\n{tail(queue.supervisor_log)}")
    return "\n".join(lines)


def set_number(page, key: str, value) -> None:
    box = page.locator(f".st-key-{key} input")
    box.fill(str(value))
    box.press("Enter")
    idle(page)


def pick(page, key: str, option: str) -> None:
    """Add an option to a multiselect, and wait until it shows as picked."""
    box = page.locator(f".st-key-{key} input")
    box.click()
    box.fill(option)
    box.press("Enter")
    box.press("Escape")
    idle(page)
    page.locator(f".st-key-{key}").get_by_text(option, exact=True).wait_for()


def launched_job(page, queue: JobQueue, pattern: str):
    """The job the launch message under a Launch button names (the message the user reads), from the queue."""
    message = page.get_by_text(re.compile(pattern)).first
    message.wait_for(timeout=RUN_TIMEOUT_MS)
    job_id = re.search(r"[0-9a-f]{16}", message.inner_text()).group(0)
    return queue.require(job_id)


def wait_for_card_state(page, job_id: str, state: str, timeout: float = JOB_TIMEOUT_MS) -> None:
    """Wait until the job's card in the jobs panel (refreshed every 1.5 s) says ``state``: its bold state label."""
    card = page.locator(f".st-key-job-{job_id}")
    card.locator("strong", has_text=re.compile(rf"^{state}$")).first.wait_for(timeout=timeout)


@contextmanager
def launch_browser(app, name: str):
    """A Chromium page for the app; on failure, what the page held, the queue's records and the logs."""
    from playwright.sync_api import sync_playwright

    root = app[1]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.add_init_script(TRACKER_JS)
        page.set_default_timeout(RUN_TIMEOUT_MS)
        try:
            yield page
        except BaseException:
            report_failure(page, name, queue_state(JobQueue(root)) + "\n===== server log =====\n"
                           + tail(root.parent / "server.log"))
            raise
        finally:
            browser.close()


def test_launch_watch_open_in_curves_and_cancel(app):
    from playwright.sync_api import expect

    base, root = app
    queue = JobQueue(root)
    with launch_browser(app, "launch") as page:
        # --- the first session of a fresh server: the app's own navigation, then its Launch page ---------------
        page.goto(base)
        idle(page)
        wait_for_app_nav(page)
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Launch").click()
        page.get_by_role("button", name="Launch run").wait_for()
        idle(page)
        assert page.url == f"{base}/launch" and sidebar_nav(page) == APP_NAV, (page.url, sidebar_nav(page))

        # --- a small points study: activation relu|tanh x 2 seeds, 3 epochs on 300 samples ------------------
        page.get_by_role("tab", name="Study").click()
        set_number(page, "study-epochs", 3)
        set_number(page, "study-seeds", 2)
        set_number(page, "study-points-n_samples", 300)
        set_number(page, "study-points-batch_size", 50)
        pick(page, "study-factors", "Activation")
        pick(page, "study-f-activation", "tanh")
        expect(page.get_by_text(re.compile(r"2 cells × 2 seeds = 4 runs, 0 cached, 4 to train"))).to_be_visible()
        page.get_by_role("button", name="Launch study").dblclick()  # a double click launches once
        idle(page)
        study_job = launched_job(page, queue, r"(Queued job|Already launched as job) [0-9a-f]{16}")
        assert study_job.kind == "study" and study_job.n_runs == 4, study_job
        assert {(c["epochs"], c["n_samples"], c["batch_size"]) for c in study_job.configs} == {(3, 300, 50)}, \
            study_job.configs
        assert {c["activation"] for c in study_job.configs} == {"relu", "tanh"}, study_job.configs

        # --- a long run, launched while the study trains ------------------------------------------------------
        page.get_by_role("tab", name="One run").click()
        set_number(page, "run-points-epochs", 10000)
        set_number(page, "run-points-batch_size", 1)
        page.get_by_role("button", name="Launch run").click()
        idle(page)
        long_job = launched_job(page, queue, r"Queued job [0-9a-f]{16}: points")
        assert long_job.kind == "run" and long_job.configs[0]["epochs"] == 10000, long_job.configs

        # --- the study's progress bar reaches 100%, and its card says completed --------------------------------
        card = page.locator(f".st-key-job-{study_job.id}")
        expect(card.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100", timeout=JOB_TIMEOUT_MS)
        wait_for_card_state(page, study_job.id, "completed")
        assert queue.require(study_job.id).state == "completed"

        # --- cancel the long job from its card ---------------------------------------------------------------
        long_card = page.locator(f".st-key-job-{long_job.id}")
        wait_for_card_state(page, long_job.id, "running")
        long_card.get_by_role("button", name="Cancel").click()
        wait_for_card_state(page, long_job.id, "cancelled")
        assert queue.require(long_job.id).state == "cancelled"
        assert [j.id for j in queue.jobs() if j.kind == "study"] == [study_job.id]  # the double click: one job
        card.scroll_into_view_if_needed()
        screenshot(page, "7-launch-jobs")  # for reviewers: the cards, their state icons (Material, no emoji font)

        # --- the study's runs in Curves ----------------------------------------------------------------------
        card.get_by_role("link", name=re.compile("Open in Curves")).click()
        page.wait_for_url(re.compile(r"/curves\?.*f\.study="))
        idle(page)
        expect(page.get_by_text(re.compile(r"^4 of \d+ runs match"))).to_be_visible()
        expect(page.locator('[data-testid="stVegaLiteChart"]').first).to_be_visible()
        assert sidebar_nav(page) == APP_NAV, sidebar_nav(page)


def test_a_bad_number_is_refused_at_its_field_then_fixed_launched_and_cancelled_under_one_id(app):
    """Issue 14's Launch journey: arrive, type 2.5 epochs, read why at the field, fix it, launch, find the job's
    card by the id the confirmation named, cancel it, and see the confirmation go."""
    from playwright.sync_api import expect

    base, root = app
    queue = JobQueue(root)
    with launch_browser(app, "launch-journey") as page:
        page.goto(f"{base}/launch")
        page.get_by_role("button", name="Launch run").wait_for()
        idle(page)
        launch = page.get_by_role("button", name="Launch run")
        epochs_column = page.get_by_test_id("stColumn").filter(has=page.locator(".st-key-run-points-epochs"))

        set_number(page, "run-points-epochs", "2.5")
        expect(epochs_column.get_by_text("Epochs must be a whole number (you typed 2.5)")).to_be_visible()
        expect(page.locator(".st-key-run-points-epochs input")).to_have_value("2.5")  # kept, not truncated
        expect(launch).to_be_disabled()
        screenshot(page, "first-minutes-launch-1-bad-value")

        set_number(page, "run-points-epochs", "10000")   # long enough to be cancelled while it runs
        set_number(page, "run-points-batch_size", "1")
        expect(epochs_column.get_by_text(re.compile("Epochs must"))).to_have_count(0)
        expect(page.get_by_text(re.compile(r"^Run id `?[0-9a-f]+`?: not in the store yet, about .* "
                                           r"\(from a calibration run on this machine\)"))).to_be_visible()
        expect(launch).to_be_enabled()
        launch.click()
        idle(page)
        job = launched_job(page, queue, r"Queued job [0-9a-f]{16}: points")
        card = page.locator(f".st-key-job-{job.id}")
        expect(card.get_by_text(re.compile(rf"job {job.id}"))).to_be_visible()  # the message's id, on its card
        screenshot(page, "first-minutes-launch-2-queued")

        wait_for_card_state(page, job.id, "running")
        card.get_by_role("button", name="Cancel").click()
        wait_for_card_state(page, job.id, "cancelled")
        expect(page.get_by_text(re.compile(rf"Queued job {job.id}"))).to_have_count(0)  # not left stale
        assert queue.require(job.id).state == "cancelled"
        screenshot(page, "first-minutes-launch-3-cancelled")

