"""Issue 14, AppTest layer: every page opens on the newest study with its headline metric and factors, on a store of
two studies with a diverged (1e30 before the blow-up), a NaN, a cancelled and a timed-out run; honest counts; URL
values that cannot be used are named; the defaults on an empty store."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.dashboard_fixtures import NEW_STUDY, OLD_STUDY
from tests.test_pages import charts, no_exception, open_app, texts

pytest_plugins = ["tests.dashboard_fixtures"]


@pytest.fixture()
def studies(studies_store, use_store):
    use_store(studies_store.root)
    return studies_store


def y_domain(spec: dict) -> list[float]:
    """The explicit y domain of the curves chart's line layer."""
    for layer in spec.get("layer", []):
        y = layer.get("encoding", {}).get("y", {})
        if "scale" in y and "domain" in y["scale"]:
            return y["scale"]["domain"]
    raise AssertionError(f"no y domain in {json.dumps(spec)[:400]}")


def test_curves_open_on_the_newest_study_its_metric_and_factors(studies):
    at = open_app("pages/curves.py")
    no_exception(at)
    assert at.multiselect(key="url_f.study").value == [NEW_STUDY]
    assert at.query_params["f.study"] in ([NEW_STUDY], NEW_STUDY)  # written: the link keeps showing this study
    assert at.selectbox(key="url_metric").value == "val_mse"  # the regression task's headline metric
    # hidden, n_hidden and width split these runs the same way: offered once. Fewest levels colour the lines.
    options = at.selectbox(key="url_color").options
    assert "hidden" in options and "n_hidden" not in options and "width" not in options
    assert at.selectbox(key="url_color").value == "hidden"
    assert at.selectbox(key="url_dash").value == "activation"
    (spec, data), = charts(at)
    lo, hi = y_domain(spec)
    finite = data.loc[(data["kind"] == "line"), "y"]
    # The diverged member's 1e30 never sets the axis; it is left out and counted, and the axis holds every mean drawn.
    assert hi < 10 and lo <= finite.min() and hi >= finite.max()
    assert "1 point(s) far outside the other runs' range" in texts(at)
    assert 1e30 not in set(data.loc[data["kind"] == "line", "y"])


def test_curves_of_a_fraction_stay_within_0_and_1(studies):
    at = open_app("pages/curves.py", {"f.study": OLD_STUDY})
    no_exception(at)
    assert at.selectbox(key="url_metric").value == "val_accuracy"
    assert at.selectbox(key="url_color").value == "activation"
    (spec, data), = charts(at)
    lo, hi = y_domain(spec)
    assert 0.0 <= lo < hi <= 1.0
    lines = data[data["kind"] == "line"]
    assert lines["lo"].min() >= 0.0 and lines["hi"].max() <= 1.0
    tips = {t.get("title") for layer in spec["layer"] for t in layer.get("encoding", {}).get("tooltip", [])
            if isinstance(t, dict)}
    assert {"val_accuracy (mean)", "± std", "n runs"} <= tips
    legend_layer = next(layer for layer in spec["layer"] if layer["mark"].get("type") == "line")
    assert legend_layer["encoding"]["color"]["legend"]["symbolOpacity"] == 1


def test_another_study_brings_its_own_defaults(studies):
    at = open_app("pages/curves.py")
    assert at.selectbox(key="url_metric").value == "val_mse"
    at.multiselect(key="url_f.study").set_value([OLD_STUDY]).run()
    no_exception(at)
    assert at.selectbox(key="url_metric").value == "val_accuracy"
    assert at.selectbox(key="url_color").value == "activation"


def test_tables_open_on_the_newest_study(studies):
    at = open_app("pages/tables.py")
    no_exception(at)
    assert at.selectbox(key="url_metric").value == "val_mse"
    assert at.radio(key="url_mode_val_mse").value == "min"
    assert at.selectbox(key="url_row").value == "activation"  # most levels down the page
    assert at.selectbox(key="url_col").value == "hidden"


def test_runs_open_on_the_best_and_worst_of_the_newest_study(studies):
    at = open_app("pages/runs.py")
    no_exception(at)
    assert at.selectbox(key="url_metric").value == "val_mse"
    table = next(df.value for df in at.dataframe if "what happened" in df.value.columns)
    assert len(table) == len(studies.new_ids) + 4
    finite = table.dropna(subset=["val_mse"])
    finite = finite[finite["val_mse"] < 1e29]
    best = finite.sort_values("val_mse")["run_id"].iloc[0]
    # The table is sorted best first (lower MSE); the diverged run says where it blew up.
    assert table["run_id"].iloc[0] == best
    diverged = table.set_index("run_id").loc[studies.diverged_id, "what happened"]
    assert diverged.startswith("diverged at epoch 1, step 7")
    chosen = at.multiselect(key="url_runs").value
    assert chosen[0] == best and chosen[1] == studies.diverged_id  # best and worst (1e30 is the worst MSE)
    at.button(key="pick_Best two").click().run()
    no_exception(at)
    assert at.multiselect(key="url_runs").value == list(table["run_id"].iloc[:2])


def test_runs_same_defaults_from_the_sidebar_or_the_url(studies):
    by_url = open_app("pages/runs.py", {"f.study": OLD_STUDY})
    by_sidebar = open_app("pages/runs.py")
    by_sidebar.multiselect(key="url_f.study").set_value([OLD_STUDY]).run()
    no_exception(by_url)
    no_exception(by_sidebar)
    assert by_url.selectbox(key="url_metric").value == by_sidebar.selectbox(key="url_metric").value == "val_accuracy"
    assert len(by_url.multiselect(key="url_runs").value) == 2
    assert by_url.multiselect(key="url_runs").value == by_sidebar.multiselect(key="url_runs").value


def test_overview_counts_add_up_and_studies_lead_to_their_pages(studies):
    at = open_app()
    no_exception(at)
    metrics = {m.label: int(m.value.replace(",", "")) for m in at.metric}
    assert metrics["runs"] == studies.n_runs
    statuses = {k: v for k, v in metrics.items() if k != "runs"}
    assert {"completed", "diverged", "running", "failed", "cancelled", "timed out", "interrupted"} == set(statuses)
    assert sum(statuses.values()) == metrics["runs"]
    assert statuses["cancelled"] == 1 and statuses["timed out"] == 1 and statuses["diverged"] == 1
    table = next(df.value for df in at.dataframe if "best cell" in df.value.columns)
    assert list(table["study"]) == [NEW_STUDY, OLD_STUDY]  # newest first, all of them
    row = table.set_index("study").loc[OLD_STUDY]
    assert row["curves"] == f"curves?f.study={OLD_STUDY}" and row["report"] == f"report?f.study={OLD_STUDY}"
    assert row["best"].startswith("val_accuracy ") and row["best"].endswith("%")
    assert row["best cell"].startswith("activation=")
    recent = next(df.value for df in at.dataframe if "what happened" in df.value.columns)
    assert "diverged at epoch 1, step 7 (loss became non-finite)" in set(recent["what happened"])


def test_unknown_url_values_are_named(studies):
    at = open_app("pages/curves.py", {"metric": "nope", "f.study": "doesnotexist", "f.nosuchcolumn": "x"})
    no_exception(at)
    warning = "\n".join(w.value for w in at.warning)
    assert "metric=nope" in warning and "f.study=doesnotexist" in warning and "nosuchcolumn" in warning
    assert "ignored" in warning and f"the newest study, {NEW_STUDY}" in warning
    # Not widened to every run: the page shows what it shows on arrival.
    assert at.multiselect(key="url_f.study").value == [NEW_STUDY]
    assert at.selectbox(key="url_metric").value == "val_mse"


def test_defaults_on_an_empty_frame_and_a_store_without_studies():
    from ui.defaults import defaults_for, factors_of, latest_study
    empty = pd.DataFrame(columns=["run_id", "studies", "started_at", "config_json", "activation"])
    assert latest_study(empty) is None
    d = defaults_for(empty, [])
    assert d.study is None and d.metric is None and d.factors == ()
    loose = pd.DataFrame({"run_id": ["a", "b"], "studies": [(), ()], "started_at": [1, 2],
                          "config_json": [None, None], "activation": ["relu", "tanh"], "seed": [0, 1]})
    assert latest_study(loose) is None and factors_of(loose) == ["activation"]
    # One value where it applies, n/a elsewhere: says which runs it applies to, is no factor.
    mixed = loose.assign(class_balance=[0.5, None])
    assert factors_of(mixed) == ["activation"]
    assert defaults_for(loose, ["val_loss", "val_accuracy"]).metric == "val_accuracy"


def test_fit_range_leaves_out_a_blow_up_and_clips_fractions():
    from ui.shape import fit_range
    lines = pd.DataFrame({"series": ["a"] * 3 + ["b"] * 3, "y": [0.5, 0.6, 0.7, 0.5, 0.55, 1e30],
                          "lo": [0.3, 0.5, 0.6, 0.5, 0.55, 1e30], "hi": [0.7, 0.9, 1.2, 0.5, 0.55, 1e30]})
    kept, _, domain, left_out = fit_range(lines, pd.DataFrame({"y": []}), {"b"}, fraction=True)
    assert left_out == 1 and len(kept) == 5
    assert domain[0] >= 0.0 and domain[1] == 1.0
    assert kept["hi"].max() == 1.0 and kept["lo"].min() == 0.3


def test_sql_examples_load_in_one_click_and_one_filters_by_study(studies):
    at = open_app("pages/sql.py")
    no_exception(at)
    at.button(key="example_0").click().run()  # the newest study's example comes first
    no_exception(at)
    query = at.text_area(key="url_q").value
    assert "JOIN study_members" in query and f"'{NEW_STUDY}'" in query
    result = at.dataframe[0].value
    assert set(result["run_id"]) <= set(studies.new_ids) | {studies.diverged_id, studies.nan_id,
                                                              studies.cancelled_id, studies.timed_out_id}
    assert len(result) == len(studies.new_ids) + 4  # every member of the study (LIMIT 20)
    # A bad query's error is replaced by the next answer.
    at.text_area(key="url_q").set_value("SELECT nope FROM runs").run()
    at.button(key="run_sql").click().run()
    assert at.error and "could not run" in at.error[0].value
    at.text_area(key="url_q").set_value("SELECT count(*) AS n FROM runs").run()
    at.button(key="run_sql").click().run()
    assert not at.error and int(at.dataframe[0].value["n"][0]) == studies.n_runs


def test_downloads_for_computing_carry_numbers_and_latex_names_its_package(tmp_path):
    import io

    import openpyxl

    from ui.downloads import numbers_bytes, table_bytes
    numbers = pd.DataFrame({"activation": ["relu", "tanh"], "mean": [0.98889, 0.9211], "std": [0.0102, 0.013],
                            "n": [3, 3]})
    table = pd.DataFrame({"value": ["98.89 ± 1.02 (3)", "92.11 ± 1.30 (3)"]}, index=pd.Index(["relu", "tanh"],
                                                                                          name="activation"))
    back = pd.read_csv(io.BytesIO(numbers_bytes(numbers, "CSV")))
    assert back.equals(numbers) and back["mean"].dtype == float
    assert pd.read_parquet(io.BytesIO(numbers_bytes(numbers, "Parquet"))).equals(numbers)
    (tmp_path / "t.xlsx").write_bytes(numbers_bytes(numbers, "Excel", table, notes=["n: runs in the mean"]))
    book = openpyxl.load_workbook(tmp_path / "t.xlsx")
    assert book.sheetnames == ["cells", "table", "notes"]
    assert [c.value for c in book["cells"][2]] == ["relu", 0.98889, 0.0102, 3]
    assert book["table"]["B2"].value == "98.89 ± 1.02 (3)"
    assert r"% needs \usepackage{booktabs}" in table_bytes(table, "LaTeX").decode()


def test_a_link_to_one_run_is_one_short_filter(studies):
    from types import SimpleNamespace

    from ui.jobs_panel import _link_params
    params = _link_params(SimpleNamespace(study=None, run_ids=(studies.nan_id,)))
    assert params == {"f.run_id": studies.nan_id}
    at = open_app("pages/curves.py", params)
    no_exception(at)
    assert f"1 of {studies.n_runs} runs match" in texts(at)
    (spec, data), = charts(at)
    assert set(data.loc[data["kind"] == "line", "n"]) == {1}


def test_task_views_keep_their_shape_equal_axes_and_square_matrices():
    from ui import charts as ui_charts
    # The grid's cells span x1 in [-2, 4] and x2 in [-1, 1]: three times as wide as tall, drawn so.
    grid = pd.DataFrame([(x1, x2, 0.5) for x1 in (-2.0, 0.0, 2.0) for x2 in (-1.0, 0.0)], columns=["x1", "x2", "p1"])
    points = pd.DataFrame({"x1": [0.0], "x2": [0.0], "label": [1], "predicted": [1], "correct": [True]})
    spec = ui_charts.boundary(grid, points, step_x1=2.0, step_x2=1.0).to_dict()
    assert (spec["width"], spec["height"]) == (ui_charts.TASK_VIEW_SIZE, round(ui_charts.TASK_VIEW_SIZE / 3))
    assert spec["layer"][0]["encoding"]["x"]["scale"]["domain"] == [-2.0, 4.0]
    assert spec["layer"][0]["encoding"]["y"]["scale"]["domain"] == [-1.0, 1.0]
    assert ui_charts.equal_axes((0, 3), (0, 1), longest=300) == (300, 100)
    # Ten classes: a square with every one of them on both axes.
    labels = [str(i) for i in range(10)]
    frame = pd.DataFrame([(t, p, int(t == p) * 9, float(t == p)) for t in labels for p in labels],
                         columns=["true", "predicted", "count", "share"])
    cm = ui_charts.confusion(frame, "digit").to_dict()
    assert cm["width"] == cm["height"] == 300
    for axis in ("x", "y"):
        enc = cm["layer"][0]["encoding"][axis] if "encoding" in cm["layer"][0] else cm["encoding"][axis]
        assert enc["sort"] == labels and enc["axis"]["labelOverlap"] is False


@pytest.mark.parametrize("n_panels, columns", [(2, 2), (3, 3), (4, 2), (7, 3)])
def test_facets_wrap_and_keep_a_solid_legend(n_panels, columns):
    from ui import charts as ui_charts
    names = [f"a{i}" for i in range(n_panels)]
    lines = pd.DataFrame([dict(x=e, y=0.9, series=a, config=f"activation={a}", epoch=e, n=3, lo=0.88, hi=0.92,
                               spread=0.02, _activation=a) for a in names for e in range(3)])
    spec = ui_charts.curves(lines, lines.iloc[:0], metric="val_accuracy", x_title="epoch", color="activation",
                            dash=None, facet="activation", band="std", log_y=False, percent=True).to_dict()
    assert spec["columns"] == columns and spec["spec"]["width"] == ui_charts.FACET_WIDTH[columns]
    colours = [layer["encoding"]["color"] for layer in spec["spec"]["layer"] if "color" in layer["encoding"]]
    # Every layer that colours states the same, solid legend: none says legend=None, which would drop it when
    # faceted (Vega-Lite merges the layers' legends).
    assert len(colours) == 2 and all(c["legend"]["symbolOpacity"] == 1 for c in colours)
    tips = {t["title"]: t.get("format") for t in spec["spec"]["layer"][1]["encoding"]["tooltip"] if "title" in t}
    assert tips["val_accuracy (mean)"] == tips["± std"] == ".1%" and "n runs" in tips
