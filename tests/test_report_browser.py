"""The Report page in a real headless Chromium on the insight store (tests/insight_fixtures.py): the page shows the
study's report, and its downloads hold the study's name and the winner's numbers as engine.analysis computes them."""
from __future__ import annotations

import io
import zipfile

import pytest

from engine import analysis
from engine.report.build import fmt
from tests.browser_helpers import charts_drawn, idle, reports_page, streamlit_server
from tests.test_browser import browser, no_exception, page  # noqa: F401,F811 - the shared Chromium fixtures

pytest_plugins = ["tests.insight_fixtures", "tests.dashboard_fixtures"]
pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def server(insight_store, tmp_path_factory):
    with streamlit_server(insight_store.root, tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url


@reports_page
def test_report_page_downloads_hold_the_study_and_its_numbers(server, page, insight_store, tmp_path):
    best_key = {"activation": "relu", "lr": 0.01}
    cells = analysis.analyze(insight_store.store(), "lrgrid", "val_accuracy", ["activation", "lr"]).cells
    best = next(c for c in cells if c.key == best_key)
    assert best.mark == "best"

    page.goto(f"{server}/report?study=lrgrid")
    page.get_by_text("Question:").first.wait_for()
    idle(page)
    charts_drawn(page)
    no_exception(page)
    main = page.locator('[data-testid="stMain"]').inner_text()
    assert f"mean final val_accuracy {fmt(best.mean)}" in main

    with page.expect_download() as info:
        page.get_by_role("button", name="HTML", exact=True).click()
    html_path = tmp_path / info.value.suggested_filename
    info.value.save_as(html_path)
    assert html_path.name == "report-lrgrid.html"
    html = html_path.read_text()
    assert "<h2>lrgrid</h2>" in html and "<svg" in html
    assert f"mean final val_accuracy {fmt(best.mean)} (95% CI {fmt(best.ci_low)} to {fmt(best.ci_high)}" in html

    with page.expect_download() as info:
        page.get_by_role("button", name="Markdown (zip)", exact=True).click()
    zip_path = tmp_path / info.value.suggested_filename
    info.value.save_as(zip_path)
    with zipfile.ZipFile(io.BytesIO(zip_path.read_bytes())) as z:
        names = z.namelist()
        text = z.read("report-lrgrid.md").decode()
        assert "report-lrgrid_figures/lrgrid-effect.svg" in names
        assert z.read("report-lrgrid_figures/lrgrid-effect.svg").startswith(b"<svg")
    assert "## lrgrid" in text and f"mean final val_accuracy {fmt(best.mean)}" in text
