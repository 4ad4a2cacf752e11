"""Issue 14 in a real headless Chromium: each first-minutes journey, arrive -> answer, on a store of two studies
(the newer one regression with a member that blew up to 1e30, a NaN, a cancelled and a timed-out run). Each test
asserts on what the page shows and saves a screenshot to test-artifacts/ (first-minutes-*.png)."""
from __future__ import annotations

import re

import pytest

from tests.browser_helpers import streamlit_server
from tests.dashboard_fixtures import NEW_STUDY, OLD_STUDY
from tests.test_browser import browser, no_exception, page, settle, shot  # noqa: F401  (fixtures)

pytest_plugins = ["tests.dashboard_fixtures"]
pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def server(studies_store, tmp_path_factory):
    with streamlit_server(studies_store.root, tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url


def arrive(pg, address: str, ready: str = "Filter runs") -> None:
    """Open a page the way a user does (an address), and wait until it has drawn."""
    pg.goto(address)
    pg.get_by_text(ready).first.wait_for()
    settle(pg)
    no_exception(pg)


def widget_text(pg, testid: str, label: str) -> str:
    """The text of the widget (label and current value) whose label is ``label``."""
    widget = pg.get_by_test_id(testid).filter(has=pg.get_by_text(label, exact=True)).first
    return " ".join([widget.inner_text()] + [i.input_value() for i in widget.locator("input").all()]
                    + [v.get_attribute("value") or "" for v in widget.locator("[value]").all()])


def metric_values(pg) -> dict[str, int]:
    out = {}
    for m in pg.get_by_test_id("stMetric").all():
        label = m.get_by_test_id("stMetricLabel").inner_text().strip()
        out[label] = int(m.get_by_test_id("stMetricValue").inner_text().replace(",", ""))
    return out


def test_overview_counts_add_up_and_a_study_is_one_click_away(server, page, artifacts_dir, studies_store):
    page.goto(server)
    page.get_by_text("Runs by status").wait_for()
    settle(page)
    no_exception(page)
    counts = metric_values(page)
    assert counts.pop("runs") == studies_store.n_runs
    assert len(counts) == 7 and sum(counts.values()) == studies_store.n_runs
    studies = page.get_by_test_id("stDataFrame").filter(has_text="best cell").first
    studies.wait_for()
    shot(page, artifacts_dir, "first-minutes-1-overview")
    # The studies table's Curves link of the older study (its value is asserted in test_first_minutes: the grid is
    # drawn on a canvas, so the link is followed here by its address) opens Curves on it.
    curves = page.context.new_page()
    curves.goto(f"{server}/curves?f.study={OLD_STUDY}")
    curves.get_by_text("Filter runs").wait_for()
    settle(curves)
    assert f"f.study={OLD_STUDY}" in curves.url
    assert "val_accuracy" in widget_text(curves, "stSelectbox", "Metric")
    curves.close()


def test_curves_arrive_on_the_newest_study_readable(server, page, artifacts_dir):
    arrive(page, f"{server}/curves")
    assert f"f.study={NEW_STUDY}" in page.url
    assert "val_mse" in widget_text(page, "stSelectbox", "Metric")
    assert "hidden" in widget_text(page, "stSelectbox", "Colour by")
    page.get_by_text(re.compile(r"1 point\(s\) far outside the other runs' range")).wait_for()
    shot(page, artifacts_dir, "first-minutes-2-curves")


def test_curves_of_accuracy_stay_in_percent(server, page, artifacts_dir):
    arrive(page, f"{server}/curves?f.study={OLD_STUDY}&facet=activation")
    assert "val_accuracy" in widget_text(page, "stSelectbox", "Metric")
    shot(page, artifacts_dir, "first-minutes-3-curves-facets")


def test_tables_arrive_on_the_newest_study(server, page, artifacts_dir):
    arrive(page, f"{server}/tables", "Heatmap")
    assert "val_mse" in widget_text(page, "stSelectbox", "Metric")
    assert "activation" in widget_text(page, "stSelectbox", "Rows")
    assert "hidden" in widget_text(page, "stSelectbox", "Columns")
    shot(page, artifacts_dir, "first-minutes-4-tables")


def test_runs_best_two_in_one_click(server, page, artifacts_dir, studies_store):
    arrive(page, f"{server}/runs", "Task view")
    # Arrival: the best and the worst run; the worst is the diverged one, which says where it blew up.
    page.get_by_text(re.compile(r"diverged at epoch 1, step 7")).first.wait_for()
    assert studies_store.diverged_id[:8] in widget_text(page, "stMultiSelect", "Runs (2 to 4)")
    page.get_by_role("button", name="Best two").click()
    page.wait_for_url(lambda u: u.count("runs=") == 2)
    settle(page)
    page.get_by_text("RMSE").first.wait_for()
    no_exception(page)
    assert page.url.count("runs=") == 2
    shot(page, artifacts_dir, "first-minutes-5-runs")


def test_unknown_url_values_are_named(server, page, artifacts_dir):
    arrive(page, f"{server}/curves?metric=nope&f.study=doesnotexist")
    notice = page.get_by_test_id("stAlert").filter(has_text="ignored").first
    notice.wait_for()
    assert "metric=nope" in notice.inner_text() and "f.study=doesnotexist" in notice.inner_text()
    assert f"the newest study, {NEW_STUDY}" in notice.inner_text()
    page.get_by_text(re.compile(r"^16 of 20 runs match$")).wait_for()
    shot(page, artifacts_dir, "first-minutes-6-url-notice")
