"""Curation from the dashboard under Streamlit's AppTest: excluding a run on the Runs page changes a Tables cell's n
and mean and undoing it brings them back; tags become a sidebar filter; deleting asks with the count and the disk
and then removes the run; a study is tagged, noted and excluded from the Overview; a read-only store disables
launching with the reason. Each test works on its own copy of a small trained store."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard_fixtures import STUDY, study_configs

pytest_plugins = ["tests.dashboard_fixtures"]
pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parent.parent
TABLE_URL = {"f.study": STUDY, "metric": "val_accuracy", "row": "activation", "col": "optimizer", "spread": "sem",
             "pct": "0", "dec": "5"}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    from engine.store import RunStore
    from engine.train import run_configs
    root = tmp_path_factory.mktemp("curation-template")
    store = RunStore(root, durable=False, compact_threshold=None)
    configs = study_configs()
    run_configs(configs, store, device="cpu")
    store.add_to_study(STUDY, [c.run_id for c in configs])
    return root


@pytest.fixture()
def root(template, tmp_path, use_store) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(template, copy)
    use_store(copy)
    return copy


def open_app(page: str | None = None, params: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "dashboard.py"), default_timeout=120)
    for k, v in (params or {}).items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def relu_adam(at: AppTest) -> tuple[float, int]:
    table = next(df.value for df in at.dataframe if getattr(df.value, "index", None) is not None
                 and df.value.index.name == "activation")
    m = re.match(r"([\d.]+) ± [\d.]+ s\.e\. \(n=(\d+)\)", table.loc["relu", "adam"])
    assert m, table.loc["relu", "adam"]
    return float(m.group(1)), int(m.group(2))


def final_accuracy(root: Path, run_ids) -> list[float]:
    from engine import queries
    from engine.store import RunStore
    df = queries.runs_by_id(RunStore(root), list(run_ids)).set_index("run_id")
    return [float(df.loc[r, "final_val_accuracy"]) for r in run_ids]


def cell_ids(activation="relu", optimizer="adam") -> list[str]:
    return [c.run_id for c in study_configs() if c.activation == activation and c.optimizer == optimizer]


def runs_page_for(run_id: str, extra: dict | None = None) -> AppTest:
    """The Runs page filtered down to one run of the relu/adam cell (act on every run matching the filters)."""
    seed = next(c.seed for c in study_configs() if c.run_id == run_id)
    at = open_app("pages/runs.py", {"f.study": STUDY, "f.activation": "relu", "f.optimizer": "adam",
                                    "f.seed": str(seed), **(extra or {})})
    at.radio(key="curation-scope").set_value("every run matching the filters").run()
    assert not at.exception
    return at


def test_excluding_a_run_changes_the_tables_cell_and_undo_brings_it_back(root):
    ids = cell_ids()
    victim, kept = ids[2], ids[:2]
    mean, n = relu_adam(open_app("pages/tables.py", TABLE_URL))
    assert n == 3 and mean == pytest.approx(sum(final_accuracy(root, ids)) / 3, abs=5e-6)

    at = runs_page_for(victim)
    at.text_input(key="curation-runs-reason").set_value("wrong data set").run()
    at.button(key="curation-runs-exclude").click().run()
    assert not at.exception and any("Excluded from analysis: wrong data set" in s.value for s in at.success)

    tables = open_app("pages/tables.py", TABLE_URL)
    mean, n = relu_adam(tables)
    assert n == 2 and mean == pytest.approx(sum(final_accuracy(root, kept)) / 2, abs=5e-6)
    assert any("1 run(s) excluded from analysis are hidden" in c.value for c in tables.sidebar.caption)

    # shown with the toggle, the reason is on the Runs page; one click includes it again
    at = runs_page_for(victim, {"excl": "1"})
    targets = next(df.value for df in at.dataframe if "excluded_reason" in getattr(df.value, "columns", []))
    assert list(targets["excluded_reason"]) == ["wrong data set"]
    at.button(key="curation-runs-include").click().run()
    assert not at.exception
    mean, n = relu_adam(open_app("pages/tables.py", TABLE_URL))
    assert n == 3 and mean == pytest.approx(sum(final_accuracy(root, ids)) / 3, abs=5e-6)


def test_a_tag_set_on_the_runs_page_is_a_sidebar_filter(root):
    victim = cell_ids()[0]
    at = runs_page_for(victim)
    at.text_input(key="curation-runs-tag").set_value("baseline").run()
    at.button(key="curation-runs-addtag").click().run()
    assert not at.exception
    tables = open_app("pages/tables.py", {"f.tags": "baseline", "metric": "val_accuracy", "row": "activation",
                                          "col": "(none)"})
    assert tables.multiselect(key="url_f.tags").value == ["baseline"]
    assert any("1 of 12 runs match" in c.value for c in tables.sidebar.caption)


def test_deleting_asks_with_the_count_and_disk_then_removes_the_run(root):
    from engine.store import RunStore
    victim = cell_ids()[1]
    at = runs_page_for(victim)
    at.button(key="curation-delete-runs-ask").click().run()
    warning = next(w.value for w in at.warning if "for good" in w.value)
    assert re.search(r"Delete 1 run\(s\), about [\d.]+ (KB|MB|B) on disk for good", warning), warning
    assert RunStore(root).get(victim) is not None        # asking deletes nothing
    at.button(key="curation-delete-runs-confirm").click().run()
    assert not at.exception and any("Deleted 1 run(s)" in s.value for s in at.success)
    assert RunStore(root).get(victim) is None
    assert not [p for p in root.rglob(f"{victim}*") if p.parent.name != "locks"]
    assert RunStore(root).check().ok
    _, n = relu_adam(open_app("pages/tables.py", TABLE_URL))
    assert n == 2


def test_a_study_is_tagged_noted_and_excluded_from_the_overview(root):
    at = open_app()
    at.text_input(key=f"curation-study-{STUDY}-tag").set_value("paper").run()
    at.button(key=f"curation-study-{STUDY}-addtag").click().run()
    at.text_input(key=f"curation-study-{STUDY}-note").set_value("first try").run()
    at.button(key=f"curation-study-{STUDY}-savenote").click().run()
    at.text_input(key=f"curation-study-{STUDY}-reason").set_value("old idea").run()
    at.button(key=f"curation-study-{STUDY}-exclude").click().run()
    assert not at.exception
    studies = next(df.value for df in at.dataframe if "study" in getattr(df.value, "columns", []))
    row = studies.set_index("study").loc[STUDY]
    assert row["tags"] == "paper" and row["note"] == "first try" and row["excluded"] == "old idea"
    tables = open_app("pages/tables.py", TABLE_URL)
    assert any("12 run(s) excluded from analysis are hidden" in c.value for c in tables.sidebar.caption)
    assert any("No runs match" in w.value for w in tables.warning)


def test_a_read_only_store_reads_but_disables_launching_with_the_reason(root, tmp_path, use_store):
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "--bind", str(root), str(ro)], capture_output=True).returncode != 0:
        pytest.skip("bind mounts are not permitted here (needs root and mount rights)")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True).returncode != 0:
            pytest.skip("read-only remounts are not permitted here")
        use_store(ro)
        mean, n = relu_adam(open_app("pages/tables.py", TABLE_URL))
        assert n == 3
        launch = open_app("pages/launch.py")
        assert any("Launching is disabled" in w.value and "read-only file system" in w.value
                   for w in launch.warning)
        assert launch.button(key="launch_run").disabled
        at = open_app("pages/runs.py", {"f.study": STUDY})
        assert any("Read-only" in i.value for i in at.info)
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)
