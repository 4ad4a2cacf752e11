"""Curation end to end in a real headless Chromium: on the Runs page a user tags a run, excludes it with a reason
(the page then hides it and says so) and deletes another after the confirmation that names the count and the disk.
The store is checked afterwards: the tag and the exclusion are recorded, the deleted run is gone, check is clean."""
from __future__ import annotations

import os
import re
import shutil

import pytest

from tests.browser_helpers import (CHROMIUM, CHROMIUM_ARGS, RUN_TIMEOUT_MS, TRACKER_JS, idle, report_failure,
                                   streamlit_server)
from tests.dashboard_fixtures import STUDY, study_configs

pytest_plugins = ["tests.dashboard_fixtures"]
pytestmark = [pytest.mark.browser, pytest.mark.timeout(400)]


@pytest.fixture()
def store_root(tmp_path):
    from engine.store import RunStore
    from engine.train import run_configs
    root = tmp_path / "store"
    store = RunStore(root, durable=False, compact_threshold=None)
    configs = study_configs()
    run_configs(configs, store, device="cpu")
    store.add_to_study(STUDY, [c.run_id for c in configs])
    return root


def run_of(seed: int) -> str:
    return next(c.run_id for c in study_configs() if (c.activation, c.optimizer, c.seed) == ("relu", "adam", seed))


def type_into(page, key: str, text: str) -> None:
    box = page.locator(f".st-key-{key} input")
    box.fill(text)
    box.press("Enter")
    idle(page)


def click(page, key: str) -> None:
    page.locator(f".st-key-{key} button").first.click()
    idle(page)


def open_runs_page(page, url: str, seed: int) -> None:
    page.goto(f"{url}/runs?f.study={STUDY}&f.activation=relu&f.optimizer=adam&f.seed={seed}")
    page.get_by_text("Curate runs").first.wait_for()
    idle(page)
    page.get_by_text("every run matching the filters").click()
    idle(page)


def test_tag_exclude_and_delete_from_the_runs_page(store_root, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: run `make browser` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from engine import queries
    from engine.store import RunStore
    tagged, deleted = run_of(0), run_of(1)
    with streamlit_server(store_root, tmp_path / "server.log") as url, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       args=CHROMIUM_ARGS, headless=True,
                                                       viewport={"width": 1500, "height": 1100})
        context.add_init_script(TRACKER_JS)
        page = context.new_page()
        page.set_default_timeout(RUN_TIMEOUT_MS)
        try:
            open_runs_page(page, url, 0)
            type_into(page, "curation-runs-tag", "baseline")
            click(page, "curation-runs-addtag")
            page.get_by_text("Tagged 'baseline'.").wait_for()
            type_into(page, "curation-runs-reason", "wrong data set")
            click(page, "curation-runs-exclude")
            page.get_by_text("Excluded from analysis: wrong data set.").wait_for()
            page.get_by_text("1 run(s) excluded from analysis are hidden").wait_for()

            open_runs_page(page, url, 1)
            click(page, "curation-delete-runs-ask")
            page.get_by_text(re.compile(r"Delete 1 run\(s\), about [\d.]+ \w+ on disk for good")).wait_for()
            click(page, "curation-delete-runs-confirm")
            page.get_by_text("Deleted 1 run(s)").first.wait_for()
            assert page.locator('[data-testid="stException"]').count() == 0
        except BaseException:
            report_failure(page, "curation")
            raise
        finally:
            context.close()
    store = RunStore(store_root)
    runs = queries.list_runs(store).set_index("run_id")
    assert list(runs.loc[tagged, "tags"]) == ["baseline"] and runs.loc[tagged, "excluded_reason"] == "wrong data set"
    assert deleted not in runs.index and len(runs) == 11
    assert store.check().ok
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
