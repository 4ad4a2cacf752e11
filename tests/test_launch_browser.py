"""The Launch page in a real browser (headless Chromium + Playwright) against a real Streamlit server and a real
worker: launch a small points study, watch its progress bar reach 100%, open its runs in Curves; launch a long run
and cancel it from the jobs panel, and see it cancelled.

The app is dashboard.py once it registers pages/5_Launch.py; until then a minimal router with the Launch, Curves and
Tables pages stands in for it.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from engine.jobs import JobQueue
from engine.jobs.worker import stop_supervisor

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]

FALLBACK_ROUTER = '''import streamlit as st
R = {pages!r}
def home():
    st.title("Ablation Lab")
st.navigation([st.Page(home, title="Overview", default=True),
               st.Page(R + "/5_Launch.py", title="Launch", url_path="launch"),
               st.Page(R + "/curves.py", title="Curves"), st.Page(R + "/tables.py", title="Tables")]).run()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app(tmp_path):
    """(base URL, store root) of a Streamlit server on a fresh store; server, worker and jobs are gone afterwards."""
    root = tmp_path / "store"
    root.mkdir()
    main = REPO / "dashboard.py"
    if "5_Launch.py" not in main.read_text():
        main = tmp_path / "router.py"
        main.write_text(FALLBACK_ROUTER.format(pages=str(REPO / "pages")))
    port = _free_port()
    env = {**os.environ, "ABLATION_LAB_STORE": str(root), "ABLATION_LAB_MAX_RUNNING": "2",
           "ABLATION_LAB_WORKER_IDLE_S": "20", "PYTHONPATH": str(REPO)}
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(main), "--server.headless", "true",
                               "--server.address", "127.0.0.1", "--server.port", str(port),
                               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if urllib.request.urlopen(base + "/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise AssertionError("the Streamlit server did not start: " + (tmp_path / "server.log").read_text())
        time.sleep(0.2)
    try:
        yield base, root
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        stop_supervisor(root)
        for job in JobQueue(root).jobs():
            if job.pid:
                try:
                    os.killpg(job.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def idle(page, timeout: float = 60_000) -> None:
    """Wait for the script run a widget change started to end."""
    page.wait_for_timeout(300)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout)


def set_number(page, key: str, value) -> None:
    box = page.locator(f".st-key-{key} input")
    box.fill(str(value))
    box.press("Enter")
    idle(page)


def pick(page, key: str, option: str) -> None:
    box = page.locator(f".st-key-{key} input")
    box.click()
    box.fill(option)
    box.press("Enter")
    box.press("Escape")
    idle(page)


def test_launch_watch_open_in_curves_and_cancel(app):
    from playwright.sync_api import expect, sync_playwright

    base, root = app
    queue = JobQueue(root)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(60_000)
            page.goto(base)
            page.get_by_role("link", name="Launch").click()
            page.get_by_role("button", name="Launch run").wait_for()
            idle(page)

            # --- a small points study: activation relu|tanh x 2 seeds, 3 epochs on 300 samples ------------------
            page.get_by_role("tab", name="Study").click()
            set_number(page, "study-epochs", 3)
            set_number(page, "study-seeds", 2)
            set_number(page, "study-points-n_samples", 300)
            set_number(page, "study-points-batch_size", 50)
            pick(page, "study-factors", "activation")
            pick(page, "study-f-activation", "tanh")
            expect(page.get_by_text(re.compile(r"2 cells × 2 seeds = 4 runs, 0 cached, 4 to train"))).to_be_visible()
            page.get_by_role("button", name="Launch study").dblclick()  # a double click launches once
            expect(page.get_by_text(re.compile(r"(Queued job|Already launched as job) [0-9a-f]{16}"))).to_be_visible()
            idle(page)
            [study_job] = queue.jobs()
            assert study_job.kind == "study" and study_job.n_runs == 4

            # --- a long run, launched while the study trains ------------------------------------------------------
            page.get_by_role("tab", name="One run").click()
            set_number(page, "run-points-epochs", 10000)
            set_number(page, "run-points-batch_size", 1)
            page.get_by_role("button", name="Launch run").click()
            expect(page.get_by_text(re.compile(r"Queued job [0-9a-f]{16}: points"))).to_be_visible()
            long_job = next(j for j in queue.jobs() if j.kind == "run")

            # --- the study's progress bar reaches 100% ------------------------------------------------------------
            card = page.locator(f".st-key-job-{study_job.id}")
            bar = card.get_by_role("progressbar")
            expect(bar).to_have_attribute("aria-valuenow", "100", timeout=120_000)
            expect(card.get_by_text("completed")).to_be_visible()
            assert queue.require(study_job.id).state == "completed"

            # --- cancel the long job from its card ---------------------------------------------------------------
            long_card = page.locator(f".st-key-job-{long_job.id}")
            expect(long_card.get_by_text("running")).to_be_visible(timeout=60_000)
            long_card.get_by_role("button", name="Cancel").click()
            expect(long_card.get_by_text("cancelled", exact=False).first).to_be_visible(timeout=60_000)
            assert queue.require(long_job.id).state == "cancelled"

            # --- the study's runs in Curves ----------------------------------------------------------------------
            card.get_by_role("link", name=re.compile("Open in Curves")).click()
            page.wait_for_url(re.compile(r"f\.study="))
            expect(page.get_by_text(re.compile(r"^4 of \d+ runs match"))).to_be_visible()
            expect(page.locator('[data-testid="stVegaLiteChart"]').first).to_be_visible()
        except BaseException:
            page.screenshot(path=str(root.parent / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
