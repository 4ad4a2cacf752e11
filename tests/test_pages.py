"""Every dashboard page under Streamlit's AppTest, on a seeded store (12-run study, one run of each other task, a
diverged run, a NaN run, a running run, a damaged file), a one-run store and an empty store: no exception, the
expected elements, and numbers equal to what the store holds."""
from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

pytest_plugins = ["tests.dashboard_fixtures"]

REPO = Path(__file__).resolve().parent.parent
PAGES = ["pages/curves.py", "pages/tables.py", "pages/factors.py", "pages/report.py", "pages/runs.py",
         "pages/sql.py"]


def open_app(page: str | None = None, params: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "dashboard.py"), default_timeout=90)
    for k, v in (params or {}).items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(page).run()
    return at


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def charts(at: AppTest) -> list[tuple[dict, pd.DataFrame]]:
    """(spec, data) of every Altair chart on the page."""
    out = []
    for el in at.get("vega_lite_chart"):
        spec = json.loads(el.proto.spec)
        frames = [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in el.proto.datasets]
        out.append((spec, frames[0] if frames else pd.DataFrame()))
    return out


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "text") for e in at.get(kind)]
    for exp in at.expander:
        parts.append(exp.label)
    return "\n".join(str(p) for p in parts)


@pytest.fixture(scope="session")
def one_run_store(tmp_path_factory):
    from engine.config import RunConfig
    from engine.store import RunStore
    from engine.train import run_configs
    root = tmp_path_factory.mktemp("one-run-store")
    run_configs([RunConfig(task="points", epochs=2)], RunStore(root, durable=False), device="cpu")
    return root


@pytest.fixture()
def seeded(seeded_store, use_store):
    use_store(seeded_store.root)
    return seeded_store


# --- every page, every kind of store ----------------------------------------------------------------------------------

@pytest.mark.parametrize("page", [None] + PAGES)
def test_every_page_on_an_empty_store(page, empty_store, use_store):
    use_store(empty_store)
    at = open_app(page)
    no_exception(at)
    assert "no runs yet" in texts(at)


def test_every_page_on_a_missing_store(tmp_path, use_store):
    use_store(tmp_path / "does-not-exist")
    for page in [None] + PAGES:
        no_exception(open_app(page))


@pytest.mark.parametrize("page", [None] + PAGES)
def test_every_page_with_one_run(page, one_run_store, use_store):
    use_store(one_run_store)
    at = open_app(page)
    no_exception(at)
    if page == "pages/runs.py":
        assert "Pick at least two runs" in texts(at)


@pytest.mark.parametrize("page", [None] + PAGES)
def test_every_page_on_the_seeded_store_reports_the_damaged_file(page, seeded):
    at = open_app(page, {"run": "1"} if page == "pages/sql.py" else None)
    no_exception(at)
    assert "damaged" in texts(at) or page == "pages/sql.py" and "0badf11e" in "".join(
        e.value for e in at.get("text"))


# --- Overview ------------------------------------------------------------------------------------------------------------

def test_overview_shows_what_is_in_the_store(seeded):
    at = open_app()
    no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["runs"] == str(seeded.n_runs)
    assert metrics["diverged"] == "2" and metrics["running"] == "1"
    studies = next(df.value for df in at.dataframe if "study" in df.value.columns)
    row = studies.set_index("study").loc["ablation"]
    assert row["n_runs"] == 12 and row["completed"] == 12 and row["done_fraction"] == 1.0
    recent = next(df.value for df in at.dataframe if "run_id" in df.value.columns)
    assert len(recent) == 15 and {"running", "diverged", "completed"} <= set(recent["status"])


def test_overview_offers_the_demo_on_an_empty_store(empty_store, use_store, monkeypatch):
    from ui import demo
    use_store(empty_store)
    # The shipped demo file with fewer epochs, so the test stays fast; the button runs its [quick] version.
    tiny = empty_store.parent / "demo.toml"
    tiny.write_text(demo.DEMO_FILE.read_text().replace("base = { epochs = 5 }", "base = { epochs = 1 }")
                    .replace('optimizer = ["adam", "sgd"]', 'optimizer = ["adam"]')
                    .replace('activation = ["relu", "tanh", "sigmoid"]', 'activation = ["relu"]'))
    monkeypatch.setattr(demo, "DEMO_FILE", tiny)
    at = open_app()
    no_exception(at)
    assert at.button(key="run_demo").label == "Run the quick demo study"
    at.button(key="run_demo").click().run()
    no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["runs"] == "2" and metrics["completed"] == "2"


# --- Curves ----------------------------------------------------------------------------------------------------------

def test_curves_grouped_over_seeds(seeded):
    at = open_app("pages/curves.py", {"f.study": "ablation", "metric": "val_loss", "color": "activation",
                                      "dash": "optimizer"})
    no_exception(at)
    (spec, data), = charts(at)
    lines = data[data["kind"] == "line"]
    assert lines["series"].nunique() == 4 and (lines["n"] == 3).all()
    assert set(lines["_activation"]) == {"relu", "tanh"} and set(lines["_optimizer"]) == {"adam", "sgd"}
    # The mean line is the mean over the three seeds, computed here from the store.
    ids = seeded.by_cell[("relu", "adam")]
    con = duckdb.connect()
    direct = con.execute(f"SELECT epoch, avg(val_loss) FROM read_parquet('{seeded.root}/sealed/*.epochs.parquet', union_by_name = true) "
                         f"WHERE run_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY epoch ORDER BY epoch",
                         [ids]).fetchall()
    relu_adam = lines[(lines["_activation"] == "relu") & (lines["_optimizer"] == "adam")].sort_values("epoch")
    assert relu_adam["y"].tolist() == pytest.approx([v for _, v in direct])
    assert (relu_adam["hi"] >= relu_adam["y"]).all() and (relu_adam["lo"] <= relu_adam["y"]).all()
    layers = json.dumps(spec)
    assert "strokeDash" in layers and "mark" in layers and "config" in layers  # dash encoding and config tooltip
    group_table = next(df.value for df in at.dataframe)
    assert group_table["n"].tolist() == [3, 3, 3, 3]


def test_curves_mark_diverged_runs_and_survive_nan(seeded):
    at = open_app("pages/curves.py", {"f.task": ["regression", "points"], "group": "0", "metric": "val_loss",
                                      "ema": "0.5", "logy": "1"})
    no_exception(at)
    (spec, data), = charts(at)
    ends = data[data["kind"] == "end"]
    assert list(ends["run_id"]) == [seeded.diverged_id]
    assert "cross" in json.dumps(spec)
    nan_line = data[(data["kind"] == "line") & (data["series"].str.startswith(seeded.nan_id[:8]))]
    assert len(nan_line) == 2  # epoch 1 is NaN: left out, the line goes on
    assert "2 diverged" in texts(at) and "1 diverged before logging an epoch" in texts(at)


def test_curves_wall_time_facets_and_min_max_band(seeded):
    at = open_app("pages/curves.py", {"f.study": "ablation", "x": "wall time", "facet": "optimizer",
                                      "band": "min-max", "metric": "val_accuracy"})
    no_exception(at)
    (spec, data), = charts(at)
    assert "facet" in spec
    lines = data[data["kind"] == "line"]
    assert (lines["x"] > 0).all()  # seconds since the run started, not epochs


def test_curves_url_state_round_trip(seeded):
    at = open_app("pages/curves.py", {"f.study": "ablation", "metric": "train_loss"})
    no_exception(at)
    assert at.selectbox(key="url_metric").value == "train_loss"
    assert at.multiselect(key="url_f.study").value == ["ablation"]
    # val_accuracy is the study's default metric (kept out of the URL): pick another one.
    at.selectbox(key="url_metric").set_value("val_loss").run()
    assert at.query_params["metric"] == ["val_loss"] or at.query_params["metric"] == "val_loss"


# --- Tables ----------------------------------------------------------------------------------------------------------

def direct_final_mean(root: Path, run_ids: list[str], metric: str = "val_accuracy") -> float:
    """The mean over runs of each run's last epoch's value, straight from the store's epoch files."""
    con = duckdb.connect()
    return con.execute(f"SELECT avg(v) FROM (SELECT run_id, arg_max({metric}, epoch) AS v FROM "
                       f"read_parquet('{root}/sealed/*.epochs.parquet', union_by_name = true) WHERE run_id IN "
                       f"(SELECT unnest(?::VARCHAR[])) GROUP BY run_id)", [run_ids]).fetchone()[0]


def pivot_table(at: AppTest, row: str) -> pd.DataFrame:
    return next(df.value for df in at.dataframe if getattr(df.value, "index", None) is not None
                and df.value.index.name == row)


def test_tables_cell_equals_engine_analysis(seeded):
    at = open_app("pages/tables.py", {"f.study": "ablation", "metric": "val_accuracy", "row": "activation",
                                      "col": "optimizer", "spread": "sem", "pct": "0", "dec": "5"})
    no_exception(at)
    table = pivot_table(at, "activation")
    assert list(table.index) == ["relu", "tanh"] and list(table.columns) == ["adam", "sgd"]
    cell = table.loc["relu", "adam"]
    m = re.match(r"([\d.]+) ± ([\d.]+) s\.e\. \(n=(\d+)\)", cell)
    assert m, cell
    from engine.analysis import analyze
    res = analyze(seeded.store(), "ablation", "val_accuracy", ["activation", "optimizer"], interval="sem")
    want = next(c for c in res.cells if c.key == {"activation": "relu", "optimizer": "adam"})
    assert float(m.group(1)) == pytest.approx(want.mean, abs=5e-6) and int(m.group(3)) == want.n == 3
    assert float(m.group(2)) == pytest.approx(want.sem, abs=5e-6)
    assert float(m.group(1)) == pytest.approx(direct_final_mean(seeded.root, seeded.by_cell[("relu", "adam")]),
                                              abs=5e-6)
    assert sum(("best" in v) for v in table.to_numpy().ravel()) == 1
    assert not at.warning                                   # lr follows the optimizer: nothing pooled
    heat = charts(at)
    assert heat and heat[0][1]["best"].sum() == 1
    long = next(df.value for df in at.dataframe if "interval" in getattr(df.value, "columns", []))
    assert set(long["interval"]) == {"sem"} and set(long["mark"]) <= {"best", "tie", "worse", "too few seeds"}


def test_tables_pooled_configs_are_named_and_can_be_held(seeded):
    at = open_app("pages/tables.py", {"f.study": "ablation", "row": "activation", "col": "(none)"})
    no_exception(at)
    assert at.warning and "Cells pool different configs" in at.warning[0].value
    assert "optimizer" in at.warning[0].value and "lr" in at.warning[0].value
    assert pivot_table(at, "activation").loc["relu", "value"].count("n=6")
    at.selectbox(key="url_h.optimizer").set_value("adam").run()
    at.selectbox(key="url_h.lr").set_value("average over it").run()
    no_exception(at)
    assert not at.warning, at.warning[0].value
    assert "optimizer** held at adam" in at.info[0].value
    assert "(n=3)" in pivot_table(at, "activation").loc["relu", "value"]


def test_tables_baseline_shows_differences(seeded):
    at = open_app("pages/tables.py", {"f.study": "ablation", "row": "activation", "col": "optimizer",
                                      "base": "activation=relu, optimizer=sgd"})
    no_exception(at)
    table = pivot_table(at, "activation")
    assert table.loc["relu", "sgd"].endswith("| baseline")
    assert re.search(r"\| Δ [+-][\d.]+ \[[+-][\d.]+, [+-][\d.]+\] (better|worse|n\.s\.)$", table.loc["relu", "adam"])
    assert "Holm" in texts(at)


def test_tables_loss_is_lower_is_better_and_running_runs_are_left_out(seeded):
    at = open_app("pages/tables.py", {"f.task": "points", "metric": "val_loss", "row": "activation",
                                      "col": "(none)"})
    no_exception(at)
    assert at.radio(key="url_mode_val_loss").value == "min"
    at.selectbox(key="url_metric").set_value("val_accuracy").run()
    assert at.radio(key="url_mode_val_accuracy").value == "max"
    assert "Left out, not finished: 1 running" in texts(at)


def test_tables_count_diverged_runs_beside_the_mean(seeded):
    at = open_app("pages/tables.py", {"f.task": "regression", "metric": "val_mse", "row": "dataset", "col": "(none)",
                                      "spread": "std"})
    no_exception(at)
    table = pivot_table(at, "dataset")
    # hetero1d: the gaussian run in the mean, the sgd run that blew up counted; diabetes: only a run that diverged
    # before logging anything.
    assert re.fullmatch(r"[\d.]+ ± – std \(n=1, 1 diverged\)", table.loc["hetero1d", "value"])
    assert table.loc["diabetes", "value"] == "n/a (n=0, 1 diverged)"
    assert at.warning and "Cells pool different configs" in at.warning[0].value


def test_tables_bad_url_values_fall_back(seeded):
    at = open_app("pages/tables.py", {"metric": "no_such_metric", "row": "../../etc", "dec": "x", "spread": "iqr",
                                      "base": "nope", "h.lr": "7"})
    no_exception(at)


# --- Runs ------------------------------------------------------------------------------------------------------------

def test_runs_side_by_side_task_views(seeded):
    points = seeded.by_cell[("relu", "adam")][0]
    ids = [points, seeded.mnist_id, seeded.colored_id, seeded.regression_id]
    at = open_app("pages/runs.py", {"runs": ids})
    no_exception(at)
    assert at.multiselect(key="url_runs").value == ids
    diff = next(df.value for df in at.dataframe if "task" in df.value.index)
    assert list(diff.loc["task"]) == ["points", "mnist", "colored_mnist", "regression"]
    assert "seed" not in diff.index and "val_fraction" not in diff.index  # only what differs
    specs = [json.dumps(s) for s, _ in charts(at)]
    assert len(specs) == 1 + 1 + 1 + 2 + 2  # curves, boundary, 1 + 2 confusion matrices, band + calibration
    labels = [m.label for m in at.metric]
    assert "val accuracy" in labels and "digit accuracy" in labels and "colour accuracy" in labels
    assert "RMSE" in labels
    calib = next(df.value for df in at.dataframe if "nominal" in df.value.columns)
    assert calib["observed"].between(0, 1).all()


def test_runs_without_weights_say_why(seeded):
    at = open_app("pages/runs.py", {"runs": [seeded.diverged_id, seeded.diverged_early_id, seeded.running_id,
                                             seeded.nan_id]})
    no_exception(at)
    infos = [i.value for i in at.info]
    assert len(infos) == 4
    # What happened, not "has no checkpoint": where each diverged run blew up, that one still runs.
    assert re.match(r"diverged at epoch 5, step \d+ ", infos[0]) and re.match(r"diverged at epoch 0, step \d+ ",
                                                                              infos[1])
    assert infos[2].startswith("running")
    assert "no checkpoint" in infos[3]  # completed, logged by hand without weights


# --- SQL -------------------------------------------------------------------------------------------------------------

def test_sql_page_runs_a_query(seeded):
    at = open_app("pages/sql.py", {"q": "SELECT count(*) AS n FROM runs WHERE status = 'completed'", "run": "1"})
    no_exception(at)
    result = at.dataframe[0].value
    assert result["n"].iloc[0] == len(seeded.study_ids) + 4  # + mnist, colored, regression, the NaN run


def test_sql_page_refuses_a_forbidden_query(seeded):
    at = open_app("pages/sql.py")
    no_exception(at)
    at.text_area(key="url_q").set_value("SELECT * FROM read_csv('/etc/passwd')")
    at.button(key="run_sql").click().run()
    no_exception(at)
    assert at.error and "Refused" in at.error[0].value and "read_csv" in at.error[0].value
    assert not at.dataframe


# --- downloads: every format carries the table on screen ---------------------------------------------------------------

def test_downloads_carry_exactly_the_table_on_screen(tmp_path):
    import io

    import openpyxl

    from ui.downloads import table_bytes
    table = pd.DataFrame({"adam": ["98.67 ± 1.15 (3) @2", "92.22 ± 1.39 (3) @2"],
                          "sgd": ["87.78 ± 0.39 (3) @2", "–"]}, index=pd.Index(["relu", "tanh"], name="activation"))
    table.columns.name = "optimizer"
    best = ("relu", "adam")
    flat = table.reset_index()

    assert pd.read_csv(io.BytesIO(table_bytes(table, "CSV", best)), dtype=str, keep_default_na=False).equals(flat)
    assert pd.read_parquet(io.BytesIO(table_bytes(table, "Parquet", best))).equals(flat)

    (tmp_path / "t.xlsx").write_bytes(table_bytes(table, "Excel", best))
    ws = openpyxl.load_workbook(tmp_path / "t.xlsx").active
    values = [[c.value for c in row] for row in ws.iter_rows()]
    assert values[0] == ["activation", "adam", "sgd"] and values[1] == ["relu", *table.loc["relu"]]
    assert ws["B2"].font.bold and not ws["C2"].font.bold

    md = table_bytes(table, "Markdown", best).decode()
    assert "**98.67 ± 1.15 (3) @2**" in md and "92.22 ± 1.39 (3) @2" in md and md.count("\n") == 4

    tex = table_bytes(table, "LaTeX", best, caption="best val_accuracy").decode()
    assert tex.startswith("% best val_accuracy\n% needs \\usepackage{booktabs}")
    assert "\n\\begin{tabular}{lrr}\n" in tex
    assert r"\textbf{98.67 $\pm$ 1.15 (3) @2}" in tex and r"92.22 $\pm$ 1.39 (3) @2" in tex
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex and "--" in tex
    assert r"\multicolumn{2}{c}{optimizer}" in tex


def test_markdown_latex_and_excel_downloads_carry_the_footnote(tmp_path):
    import openpyxl

    from ui.downloads import table_bytes
    table = pd.DataFrame({"value": ["0.85 ± 0.01 s.e. (n=3) best | Δ +0.10 [+0.05, +0.15] better"]},
                         index=pd.Index(["relu"], name="activation"))
    notes = ["Each cell: mean ± standard error", "tie: Holm-corrected", "Diverged runs are excluded and counted"]
    md = table_bytes(table, "Markdown", notes=notes).decode()
    assert md.endswith("Notes:\n\n- Each cell: mean ± standard error\n- tie: Holm-corrected\n"
                       "- Diverged runs are excluded and counted\n")
    tex = table_bytes(table, "LaTeX", notes=notes).decode()
    assert r"$\Delta$ +0.10" in tex and r"{\footnotesize" in tex and r"tie: Holm-corrected\\" in tex
    assert tex.index(r"\end{tabular}") < tex.index("Diverged runs are excluded")
    (tmp_path / "t.xlsx").write_bytes(table_bytes(table, "Excel", notes=notes))
    assert [c.value for c in openpyxl.load_workbook(tmp_path / "t.xlsx")["notes"]["A"]] == ["notes", *notes]


def test_latex_escapes_what_latex_would_choke_on():
    from ui.downloads import latex_escape
    assert latex_escape("val_accuracy 50% & #1 {x} ~ ^ $ \\") == (
        r"val\_accuracy 50\% \& \#1 \{x\} \textasciitilde{} \textasciicircum{} \$ \textbackslash{}")


# --- shaping (ui/shape.py) -------------------------------------------------------------------------------------------

def synthetic_runs():
    runs = pd.DataFrame({"run_id": ["a0", "a1", "b0", "b1"], "status": ["completed", "completed", "diverged",
                                                                         "completed"],
                         "activation": ["relu", "relu", "tanh", "tanh"], "seed": [0, 1, 0, 1],
                         "optimizer": ["sgd", "sgd", "adam", "adam"], "momentum": [0.0, 0.0, None, None]})
    curves = pd.DataFrame({"run_id": ["a0"] * 3 + ["a1"] * 3 + ["b0"] * 2 + ["b1"] * 3,
                           "epoch": [0, 1, 2, 0, 1, 2, 0, 1, 0, 1, 2],
                           "time_s": [1.0, 2, 3, 1.5, 2.5, 3.5, 1, 2, 1, 2, 3],
                           "val_loss": [1.0, 0.5, 0.25, 3.0, 1.5, float("nan"), 2.0, 4.0, 1.0, 1.0, 1.0]})
    return runs, curves


def test_curve_frame_groups_over_seeds_with_nan_and_divergence():
    from ui.shape import curve_frame
    runs, curves = synthetic_runs()
    lines, ends, groups = curve_frame(curves, runs, "val_loss", "epoch", True, "std", 0.0, ["activation"])
    relu = lines[lines["_activation"] == "relu"].set_index("epoch")
    assert relu.loc[0, "y"] == 2.0 and relu.loc[0, "n"] == 2 and relu.loc[0, "hi"] == pytest.approx(2 + 2 ** 0.5)
    assert relu.loc[2, "y"] == 0.25 and relu.loc[2, "n"] == 1  # the NaN is left out, not averaged in
    assert list(ends["run_id"]) == ["b0"] and ends["epoch"].iloc[0] == 1 and ends["y"].iloc[0] == 4.0
    assert set(groups["config"]) == {"activation=relu, optimizer=sgd", "activation=tanh, optimizer=adam"}
    assert groups.set_index("config")["diverged"].to_dict() == {"activation=relu, optimizer=sgd": 0,
                                                                "activation=tanh, optimizer=adam": 1}
    minmax, _, _ = curve_frame(curves, runs, "val_loss", "time", True, "min-max", 0.0, [])
    first = minmax[minmax["series"].str.startswith("activation=relu")].iloc[0]
    assert (first["lo"], first["hi"], first["x"]) == (1.0, 3.0, 1.25)


def test_curve_frame_ema_per_run():
    from ui.shape import curve_frame
    runs, curves = synthetic_runs()
    lines, _, _ = curve_frame(curves, runs, "val_loss", "epoch", False, "std", 0.5, [])
    a0 = lines[lines["run_id"] == "a0"]["y"].tolist()
    assert a0[0] == 1.0 and a0[1] == pytest.approx((0.5 * 0.5 + 1.0 * 0.5 * 0.5) / (0.5 + 0.25))
    assert len(lines[lines["run_id"] == "a1"]) == 2  # the NaN epoch stays out even when smoothed
