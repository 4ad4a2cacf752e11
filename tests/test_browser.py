"""End to end in a real headless Chromium (Debian's `chromium`, driven by Playwright): the dashboard served by
`streamlit run` on a seeded store. Screenshots of every page go to test-artifacts/ for reviewers.

Needs /usr/bin/chromium (`make browser` installs it); there is no network, so Chromium runs with everything that
phones home switched off and a fresh profile.
"""
from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import duckdb
import pytest

from tests.browser_helpers import (APP_NAV, CHROMIUM, CHROMIUM_ARGS, RUN_TIMEOUT_MS, TRACKER_JS, charts_drawn,
                                   dialogs_seen, idle, navs_seen, next_frames, report_failure, reports_page,
                                   sidebar_nav, streamlit_server, wait_for_app_nav)

pytest_plugins = ["tests.dashboard_fixtures"]
pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

TIMEOUT_MS = RUN_TIMEOUT_MS


@pytest.fixture(scope="module")
def server(seeded_store, tmp_path_factory):
    """`streamlit run dashboard.py` on a free local port, pointed at the seeded store."""
    with streamlit_server(seeded_store.root, tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: run `make browser` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, accept_downloads=True,
            viewport={"width": 1500, "height": 1100})
        context.add_init_script(TRACKER_JS)
        yield context
        context.close()


@pytest.fixture()
def page(browser):
    pg = browser.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    yield pg
    pg.close()


def settle(pg) -> None:
    """Wait until the script runs the page asked for are over and its charts have drawn."""
    idle(pg)
    charts_drawn(pg)


def shot(pg, artifacts_dir: Path, name: str) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to the content first."""
    size = pg.viewport_size
    height = pg.evaluate("() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
                         " return m ? m.scrollHeight : document.body.scrollHeight; }")
    pg.set_viewport_size({"width": size["width"], "height": max(size["height"], min(int(height) + 40, 8000))})
    next_frames(pg)
    charts_drawn(pg)
    pg.screenshot(path=str(artifacts_dir / f"{name}.png"), full_page=True)
    pg.set_viewport_size(size)


def no_exception(pg) -> None:
    assert pg.locator('[data-testid="stException"]').count() == 0, pg.locator(
        '[data-testid="stException"]').first.inner_text()
    # The page ran under dashboard.py's router (st.navigation), even when it was this server's first visit and a
    # deep link: the menu is the app's, never the pages/ folder's file names.
    assert sidebar_nav(pg) == APP_NAV, sidebar_nav(pg)


# /launch too: every page calls ui.state.ensure_router() first, so a deep link is served by the router
FIRST_LOADS = ["/", "/curves", "/launch"]


@pytest.mark.parametrize("path", FIRST_LOADS)
def test_a_fresh_servers_first_load_shows_the_app_navigation(path, seeded_store, browser, tmp_path):
    """Issue 15: with a pages/ folder beside dashboard.py, a fresh server's first script run goes through Streamlit's
    pages/ fallback, whose menu lists the folder's files (dashboard, Launch at /Launch, curves, ...). From the first
    paint on, the browser must only ever show the app's navigation, and no 'Page not found'."""
    with streamlit_server(seeded_store.root, tmp_path / "server.log") as url:
        pg = browser.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        try:
            pg.goto(url + path)
            idle(pg)
            wait_for_app_nav(pg)
            app_nav = ", ".join(f"{title} /{p}" for title, p in APP_NAV)
            assert navs_seen(pg) == [app_nav], navs_seen(pg)
            assert dialogs_seen(pg) == []
            assert urlparse(pg.url).path == path
            no_exception(pg)
        except BaseException:
            report_failure(pg, f"first-load{path.replace('/', '-')}")
            raise
        finally:
            pg.close()


@reports_page
def test_overview(server, page, artifacts_dir, seeded_store):
    page.goto(server)
    page.get_by_text("Runs by status").wait_for()
    settle(page)
    no_exception(page)
    assert page.get_by_text("ablation").first.is_visible()
    shot(page, artifacts_dir, "1-overview")


@reports_page
def test_curves_filter_to_a_study_and_group_over_seeds(server, page, artifacts_dir):
    page.goto(f"{server}/curves?group=0&color=activation&dash=optimizer")
    page.get_by_text("Filter runs").wait_for()
    settle(page)
    # A link naming no filter opens on the newest study (the store's only one), written into the URL.
    page.get_by_text("12 of").wait_for()
    settle(page)
    # Group over seeds.
    page.get_by_text("Group over seeds").click()
    page.get_by_text(re.compile(r"4 groups over 12 runs")).wait_for()
    settle(page)
    no_exception(page)
    chart = page.locator('[data-testid="stVegaLiteChart"]').first
    chart.wait_for()
    assert chart.locator("canvas, svg").count() > 0
    assert "f.study=ablation" in page.url and "group" not in page.url.split("?")[1].replace("group=0", "")
    shot(page, artifacts_dir, "2-curves")


@reports_page
def test_tables_csv_download_matches_the_store(server, page, artifacts_dir, seeded_store, tmp_path):
    page.goto(f"{server}/tables?f.study=ablation&metric=val_accuracy&row=activation&col=optimizer&pct=0&dec=5"
              "&spread=std")
    page.get_by_text("Heatmap").wait_for()
    settle(page)
    no_exception(page)
    with page.expect_download() as info:
        page.get_by_role("button", name="CSV", exact=True).first.click()
    path = tmp_path / "table.csv"
    info.value.save_as(path)
    # The CSV carries numbers: one row per cell, the factor levels and mean, std, n as columns.
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert len(rows) == 4 and {"activation", "optimizer", "mean", "std", "n", "interval_low"} <= set(rows[0])
    table = {(r["activation"], r["optimizer"]): r for r in rows}
    con = duckdb.connect()
    for act, opt in [("relu", "adam"), ("tanh", "sgd")]:
        direct = con.execute(  # each run's final (last epoch's) value, averaged over the cell's runs
            f"SELECT avg(v), count(*), stddev_samp(v) FROM (SELECT run_id, arg_max(val_accuracy, epoch) AS v FROM "
            f"read_parquet('{seeded_store.root}/sealed/*.epochs.parquet', union_by_name = true) "
            f"WHERE run_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY run_id)",
            [seeded_store.by_cell[(act, opt)]]).fetchone()
        cell = table[(act, opt)]
        # Full precision (CSV writes the float's repr): equal up to the summation order's rounding.
        assert float(cell["mean"]) == pytest.approx(direct[0], rel=1e-12) and int(cell["n"]) == direct[1]
        assert float(cell["std"]) == pytest.approx(direct[2], rel=1e-9)
    shot(page, artifacts_dir, "3-tables")
    page.get_by_role("tab", name="Heatmap").click()
    settle(page)
    shot(page, artifacts_dir, "3-tables-heatmap")


@reports_page
def test_sql_refuses_a_forbidden_query(server, page, artifacts_dir):
    page.goto(f"{server}/sql")
    page.get_by_text("Examples").wait_for()
    settle(page)
    box = page.locator("textarea").first
    box.fill("SELECT * FROM read_csv('/etc/passwd')")
    box.press("Control+Enter")
    page.get_by_role("button", name="Run").click()
    page.get_by_text("Refused.", exact=True).wait_for()  # the refusal, not the help text that mentions it
    settle(page)
    no_exception(page)
    assert "root:x:0:0" not in page.content()
    shot(page, artifacts_dir, "5-sql-refused")
    # The console still answers a normal query.
    box.fill("SELECT status, count(*) AS n FROM runs GROUP BY status ORDER BY status")
    box.press("Control+Enter")
    page.get_by_role("button", name="Run").click()
    page.get_by_text(re.compile(r"\d+ rows in \d+ ms")).wait_for()
    settle(page)
    no_exception(page)
    shot(page, artifacts_dir, "6-sql-result")


@reports_page
def test_runs_side_by_side(server, page, artifacts_dir, seeded_store):
    ids = [seeded_store.by_cell[("relu", "adam")][0], seeded_store.mnist_id, seeded_store.colored_id,
           seeded_store.regression_id]
    page.goto(f"{server}/runs?" + "&".join(f"runs={r}" for r in ids))
    page.get_by_text("Task view").wait_for()
    page.get_by_text("RMSE").wait_for()
    settle(page)
    no_exception(page)
    assert page.locator('[data-testid="stVegaLiteChart"]').count() >= 6
    # Two task views to a row: the first two runs side by side, the next two below them (not four narrow columns).
    heads = [page.locator("strong", has_text=re.compile(rf"^{r[:8]}$")).first.bounding_box() for r in ids]
    assert heads[0]["y"] == heads[1]["y"] < heads[2]["y"] == heads[3]["y"], heads
    assert heads[1]["x"] - heads[0]["x"] > 400, heads
    shot(page, artifacts_dir, "4-runs")
