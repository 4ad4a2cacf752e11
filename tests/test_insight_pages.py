"""The Factors and Report pages under AppTest on the hand-logged insight store (tests/insight_fixtures.py: diverged
runs, a NaN final value, a running run, a one-seed study, a study of identical runs), and one consistency check:
the Tables page, the Factors page, the Report and `engine analyze --format json` give the same numbers for the
same cells."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from engine import analysis
from engine.analysis import level_text
from engine.report.build import IMPORTANCE_METHOD, fmt

pytest_plugins = ["tests.insight_fixtures", "tests.dashboard_fixtures"]

REPO = Path(__file__).resolve().parent.parent


def open_app(page: str, params: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "dashboard.py"), default_timeout=120)
    for k, v in (params or {}).items():
        at.query_params[k] = v
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "info", "warning", "error", "text")
                     for e in at.get(kind))


def charts(at: AppTest) -> dict[str, tuple[dict, list[pd.DataFrame]]]:
    """title -> (spec, every dataset) of each Altair chart on the page."""
    out = {}
    for el in at.get("vega_lite_chart"):
        spec = json.loads(el.proto.spec)
        frames = [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in el.proto.datasets]
        title = spec.get("title")
        out[title if isinstance(title, str) else json.dumps(title)] = (spec, frames)
    return out


def same(got: tuple, want: tuple) -> bool:
    """Equal numbers, None and NaN alike (a frame holds None as NaN), up to the last bits that summing the same
    values in another order changes (relative 1e-12 is a thousand times the 2^-52 of one rounding per run)."""
    def norm(x):
        return None if x is None or x != x else x
    return all(norm(g) == norm(w) if norm(w) is None or norm(g) is None else g == pytest.approx(w, rel=1e-12)
               for g, w in zip(got, want)) and len(got) == len(want)


def cells_of_bars(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return next(f for f in frames if "share" in f.columns)


def cells_of(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The per-cell dataset of a chart (the one with a mean column)."""
    return next(f for f in frames if "mean" in f.columns)


@pytest.fixture()
def insight(insight_store, use_store):
    use_store(insight_store.root)
    return insight_store


# --- Factors ----------------------------------------------------------------------------------------------------------

def test_factors_page_slices_interaction_divergence_and_importance(insight):
    at = open_app("pages/factors.py", {"f.study": "lrgrid", "x": "lr", "line": "activation"})
    found = charts(at)
    assert set(found) == {"val_accuracy by activation", "val_accuracy by lr", "val_accuracy: lr × activation",
                          "diverged runs by lr × activation", "what explains val_accuracy"}
    # lr on a log axis, activation as categories
    lr_spec = json.dumps(found["val_accuracy by lr"][0])
    assert '"type": "log"' in lr_spec and '"type": "log"' not in json.dumps(found["val_accuracy by activation"][0])
    views = analysis.factor_views(_study_runs(insight), "val_accuracy")
    lr_cells = cells_of(found["val_accuracy by lr"][1]).set_index("lr")
    for c in views["lr"].cells:
        row = lr_cells.loc[level_text(c.key["lr"])]
        assert (row["n"], row["n_diverged"]) == (c.n, c.n_diverged)
        if c.mean is not None:  # the page's runs come in another order: sums may differ in the last bit
            assert same((row["mean"], row["ci_low"], row["ci_high"]), (c.mean, c.ci_low, c.ci_high))
    # every usable run is a dot: 24 finished - 7 diverged or NaN
    points = next(f for f in found["val_accuracy by lr"][1] if "seed" in f.columns)
    assert len(points) == 17 and not points["diverged"].any()
    # the divergence map: every lr 1.0 run diverged, one of three at tanh/0.1 (the NaN final value)
    div = cells_of(found["diverged runs by lr × activation"][1]).set_index(["lr", "activation"])
    assert div.loc[("1", "relu"), "label"] == "100% (3/3)" and div.loc[("0.1", "tanh"), "label"] == "33% (1/3)"
    assert div.loc[("0.01", "relu"), "diverged_share"] == 0.0
    # importance: the method named, lr first
    shown = texts(at)
    assert IMPORTANCE_METHOD in shown and "left out of the mean" in shown
    assert "diverged (not in the means): 0.1: 1 of 6, 1: 6 of 6" in shown
    imp = cells_of_bars(found["what explains val_accuracy"][1])
    assert imp["term"].iloc[0] == "lr" and imp["term"].iloc[-1] == "seed noise (residual)"
    assert imp["share"].sum() == pytest.approx(1.0, abs=1e-12)
    direct = analysis.importance_of_runs(_study_runs(insight), "val_accuracy")
    assert list(imp["share"]) == pytest.approx([t.share for t in direct.terms], rel=1e-12)  # run order: last bits
    assert f"| lr | {direct.terms[0].share:.1%} |" in shown             # the table under the bars


def _study_runs(insight):
    from engine import queries
    return queries.study_runs(insight.store(), "lrgrid")


@pytest.mark.parametrize("study, says", [("oneseed", "cannot be computed"), ("same", "cannot be computed")])
def test_factors_page_with_one_seed_or_identical_runs_says_why(insight, study, says):
    at = open_app("pages/factors.py", {"f.study": study})
    assert says in " ".join(w.value for w in at.warning)
    found = charts(at)
    assert "val_accuracy by activation" in found
    cells = cells_of(found["val_accuracy by activation"][1]).set_index("activation")
    assert cells.loc["relu", "mean"] == 0.9 and cells.loc["tanh", "mean"] == 0.8


def test_factors_page_opens_on_the_most_recent_study(insight):
    at = open_app("pages/factors.py")
    assert at.multiselect(key="url_f.study").value == ["same"]  # the study logged last


def test_factors_page_on_the_seeded_store_with_nan_diverged_and_running_runs(seeded_store, use_store):
    use_store(seeded_store.root)
    at = open_app("pages/factors.py", {"f.task": "points"})
    assert "val_accuracy by activation" in charts(at)
    at = open_app("pages/factors.py", {"f.task": "regression", "metric": "val_mse"})
    assert "diverged" in texts(at)


# --- Report -----------------------------------------------------------------------------------------------------------

def test_report_page_shows_the_document_and_offers_every_format(insight):
    at = open_app("pages/report.py", {"study": ["lrgrid", "oneseed"]})
    from engine.report import build_report
    s = build_report(insight.store(), ["lrgrid"], with_figures=False).sections[0]
    shown = texts(at)
    assert f"mean final val_accuracy {fmt(s.winner.cell.mean)}" in shown
    assert f"Margin: {fmt(s.winner.margin)}" in shown
    assert "Only one seed" in shown and "7 of 24 finished runs diverged" in shown and "1 running" in shown
    assert "95% confidence interval" in shown
    titles = set(charts(at))
    assert {"val_accuracy: lr × activation", "what explains val_accuracy"} <= titles
    buttons = {b.proto.label: b.proto for b in at.get("download_button")}
    assert set(buttons) == {"Markdown (zip)", "HTML", "LaTeX (zip)"}


def test_report_page_on_identical_runs_a_running_study_and_a_store_without_studies(insight, one_run_store_root,
                                                                                   use_store):
    at = open_app("pages/report.py", {"study": "same"})
    assert "identical values" in texts(at)
    at = open_app("pages/report.py", {"study": "pending"})  # its one run is still running
    assert "no winner" in texts(at) and "1 running" in texts(at)
    use_store(one_run_store_root)
    at = open_app("pages/report.py")
    assert "no study yet" in texts(at)


@pytest.fixture(scope="module")
def one_run_store_root(tmp_path_factory):
    from engine.config import RunConfig
    from engine.store import RunStore
    from tests.insight_fixtures import _log
    root = tmp_path_factory.mktemp("no-study-store")
    _log(RunStore(root, durable=False), RunConfig(task="points", epochs=1), [0.5])
    return root


# --- one store, four views, the same numbers --------------------------------------------------------------------------

def test_tables_factors_report_and_analyze_json_agree(insight):
    def key(activation, lr):
        return level_text(activation), level_text(lr)

    # engine analyze --format json
    proc = subprocess.run([sys.executable, "-m", "engine", "analyze", "--store", str(insight.root), "--study", "lrgrid",
                           "--by", "activation,lr", "--format", "json"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    cli = {key(c["key"]["activation"], c["key"]["lr"]): (c["mean"], c["ci_low"], c["ci_high"], c["n"])
           for c in json.loads(proc.stdout)["cells"]}
    usable = {k: v for k, v in cli.items() if v[0] is not None}
    assert len(usable) == 6 and len(cli) == 8

    # the Tables page's long table of cells
    at = open_app("pages/tables.py", {"f.study": "lrgrid", "row": "activation", "col": "lr", "spread": "ci",
                                      "pct": "0", "dec": "5"})
    long = next(df.value for df in at.dataframe if "interval" in getattr(df.value, "columns", []))
    tables = {(r.activation, r.lr): (r.mean, r.ci_low, r.ci_high, r.n) for r in long.itertuples()}

    # the Factors page's interaction plot (activation across, lr as lines)
    at = open_app("pages/factors.py", {"f.study": "lrgrid", "x": "activation", "line": "lr"})
    inter = cells_of(charts(at)["val_accuracy: activation × lr"][1])
    factors = {(r.activation, r.lr): (r.mean, r.ci_low, r.ci_high, r.n) for r in inter.itertuples()}

    # the report's cells
    from engine.report import build_report
    section = build_report(insight.store(), ["lrgrid"], with_figures=False).sections[0]
    report = {key(c.key["activation"], c.key["lr"]): (c.mean, c.ci_low, c.ci_high, c.n) for c in section.analysis.cells}

    for k, want in usable.items():
        assert same(tables[k], want), (k, tables[k], want)
        assert same(factors[k], want), (k, factors[k], want)
        assert same(report[k], want), (k, report[k], want)
    assert section.winner.cell.mean == max(v[0] for v in usable.values())
