"""The reproduction report, built from a small real store: every reference line is in the table beside the value
measured in the store (converted to the reference's unit, with its interval), and the findings the study files
declare get a verdict with their numbers. (`reproduce --quick` itself takes minutes; here tiny studies with the
reference studies' names stand in.)"""
from __future__ import annotations

import statistics

import pytest

from scipy import stats

from engine import queries
from engine.cli import main
from engine.store import RunStore
from engine.study.executor import run_study
from engine.study.findings import VERDICTS
from engine.study.reproduce import (STUDY_FILES, build_report, load_specs, print_estimates, reference_rows,
                                    select_studies)
from engine.study.spec import StudyError, load_study

EX1 = """\
name = "ex1-architecture"
seeds = [0, 1]
[base]
task = "points"
n_samples = 200
optimizer = "sgd"
lr = 0.1
epochs = 2
[factors]
activation = ["tanh"]
hidden = [[75]]
[[grids]]
label = "linear"
base = { hidden = [], activation = "identity" }
[[grids]]
label = "3 layers"
base = { hidden = [32, 32] }
factors = { activation = ["sigmoid", "tanh", "relu"] }

[[findings]]
text = "3-layer MLP on points: relu > tanh > sigmoid"
kind = "order"
cells = { grid = "3 layers" }
by = "activation"
levels = ["relu", "tanh", "sigmoid"]
""" + "".join(f"""
[[answers]]
line = "3 linear layers, {activation}"
cells = {{ grid = "3 layers", activation = "{activation}" }}
scale = 100
""" for activation in ("sigmoid", "tanh", "relu"))

EX4 = """\
name = "ex4-loss"
metric = "val_nll"
seeds = [0, 1, 2]
[base]
task = "regression"
dataset = "hetero1d"
n_samples = 300
hidden = [16]
activation = "tanh"
loss = "gaussian_nll"
optimizer = "rmsprop"
epochs = 4
evaluate_test = true
[factors]
lr = [0.005, 0.001]

[[answers]]
line = "Gaussian NLL (mean + log-variance head), lr=0.001, 100 epochs"
cells = { lr = 0.001 }

[[findings]]
text = "Gaussian NLL goes negative (hetero1d)"
kind = "threshold"
cells = { lr = 0.001 }
below = 0.0

[[findings]]
text = "a finding about a study that did not run"
kind = "beats"
a = { lr = 0.001 }
b = { study = "ex2-loss", lr = 0.025 }
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    store = RunStore(tmp / "store")
    specs = {}
    for name, text in (("ex1_architecture.toml", EX1), ("ex4_loss.toml", EX4)):
        (tmp / name).write_text(text)
        spec = load_study(tmp / name)
        assert run_study(spec, store, workers=2, device="cpu", show_progress=False).ok
        specs[spec.name] = spec
    reference = reference_rows()
    text, results = build_report(store, specs, quick=True, reference=reference)
    return store, text, results, reference


def table_row(text: str, setting: str) -> list[str]:
    rows = [line for line in text.splitlines() if line.startswith("| ") and f"| {setting} |" in line]
    assert len(rows) == 1, setting
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def test_every_reference_line_is_in_the_table(report):
    _, text, _, reference = report
    assert len(reference) == 26
    for ref in reference:
        cells = table_row(text, ref["setting"])
        assert cells[0] == ref["exercise"] and cells[5] == ref["value"]
    assert "## Results: 26 reference lines, 4 measured, 22 not run" in text


def test_measured_values_come_from_the_store_in_the_reference_unit(report):
    store, text, _, _ = report
    runs = queries.list_runs(store, filters={"task": "points"})
    for activation in ("sigmoid", "tanh", "relu"):
        mine = runs[(runs["activation"] == activation) & (runs["n_hidden"] == 2)]["final_val_accuracy"]
        assert len(mine) == 2
        cells = table_row(text, f"3 linear layers, {activation}")
        mean = statistics.fmean(mine) * 100
        # two seeds: an interval needs three (engine/stats), so the mean and n alone
        assert cells[6] == f"{mean:.2f} (n=2)"
        assert cells[7] == f"ex1-architecture: [3 layers] activation={activation}"
    nll = queries.list_runs(store, filters={"task": "regression", "lr": 0.001})["final_val_nll"]
    cells = table_row(text, "Gaussian NLL (mean + log-variance head), lr=0.001, 100 epochs")
    lo, hi = stats.t.interval(0.95, len(nll) - 1, loc=statistics.fmean(nll), scale=stats.sem(nll))
    assert cells[6] == f"{statistics.fmean(nll):.4g} [{lo:.4g}, {hi:.4g}] (n=3)"
    # a study that did not run shows as such, it is not invented
    assert table_row(text, "1 linear layer + softmax")[6] == "not run"


def test_findings_have_verdicts_with_numbers(report):
    store, text, results, _ = report
    by_text = {r.finding.text: r for r in results}
    assert len(results) == 3
    order = by_text["3-layer MLP on points: relu > tanh > sigmoid"]
    # two seeds per cell: no interval, so the order cannot be reproduced or refuted
    assert order.verdict == "inconclusive" and "2 seeds; an interval needs 3" in order.numbers
    nll = queries.list_runs(store, filters={"task": "regression", "lr": 0.001})["final_val_nll"]
    lo, hi = stats.t.interval(0.95, len(nll) - 1, loc=statistics.fmean(nll), scale=stats.sem(nll))
    g = by_text["Gaussian NLL goes negative (hetero1d)"]
    assert g.verdict == ("reproduced" if hi < 0 else "not reproduced" if lo >= 0 else "inconclusive")
    assert by_text["a finding about a study that did not run"].verdict == "not run"
    counts = {v: sum(r.verdict == v for r in results) for v in VERDICTS}
    assert (f"## Findings: 3 ({counts['reproduced']} reproduced, {counts['not reproduced']} not reproduced, "
            f"{counts['inconclusive']} inconclusive, {counts['not run']} not run)") in text
    assert f"| ex1-architecture | 3-layer MLP on points: relu > tanh > sigmoid | order | inconclusive |" in text
    # the header's counts are the table's
    table = text.split("## Findings")[1].split("## Studies")[0]
    rows = [line.split(" | ")[3] for line in table.splitlines() if line.startswith("| ex")]
    assert len(rows) == len(results)
    assert {v: rows.count(v) for v in VERDICTS} == counts


def test_the_reference_study_files_load_in_both_modes():
    # every studies/*.toml expands and validates (full and quick) without training anything
    full, quick = load_specs(), load_specs(quick=True)
    assert len(full) == len(quick) == len(STUDY_FILES) == 16
    for name, spec in full.items():
        assert quick[name].study_name == f"{name}-quick"
        assert len(quick[name].runs) <= len(spec.runs)
        assert quick[name].findings == spec.findings and quick[name].answers == spec.answers
    # every reference line is answered by exactly one study (load_specs checks there are no duplicates)
    answered = [a.line for spec in full.values() for a in spec.answers]
    assert sorted(answered) == sorted(r["setting"] for r in reference_rows())
    # the MNIST exercises run on full MNIST; quick mode on the shipped sample
    for name, spec in full.items():
        if name.startswith(("ex2", "ex3")):
            assert {c.config.dataset for c in spec.runs} == {"full"}
            assert {c.config.dataset for c in quick[name].runs} == {"sample5k"}
    # the reference's own hyper-parameters outside [quick]: ex2 starts from SGD lr 0.1
    assert {c.config.lr for c in full["ex2-architecture"].runs} == {0.1}
    assert {c.config.lr for c in quick["ex2-architecture"].runs} == {1.0}
    # the test question re-uses a run of the loss question (evaluate_test everywhere): a cache hit, not a retrain
    for ex in ("ex1", "ex2", "ex3"):
        for specs in (full, quick):
            loss = {c.run_id for c in specs[f"{ex}-loss"].runs}
            test = {c.run_id for c in specs[f"{ex}-test"].runs}
            assert loss & test


def test_reproduce_writes_its_report_into_the_store_not_the_current_folder(report, tmp_path, monkeypatch):
    store, _, _, _ = report
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "--quick", "--report-only", "--quiet", "--store", str(store.root)]) == 0
    assert list(tmp_path.iterdir()) == []
    written = store.root / "reports" / "reproduce-quick.md"
    assert written.read_text().startswith("# Ablation Lab: the reference study, reproduced (quick)")
    out = tmp_path / "elsewhere.md"
    assert main(["reproduce", "--quick", "--report-only", "--quiet", "--store", str(store.root), "--out",
                 str(out)]) == 0
    assert "## Findings: 38 (" in out.read_text()


def test_only_selects_studies_and_grids():
    specs = load_specs()
    assert list(select_studies(specs, "ex1,ex4-test")) == ["ex1-architecture", "ex1-optimizer", "ex1-loss",
                                                           "ex1-test", "ex4-test"]
    linear = select_studies(specs, "ex2-architecture:linear")["ex2-architecture"]
    assert len(linear.runs) == len(specs["ex2-architecture"].seeds) and {c.grid for c in linear.runs} == {"linear"}
    with pytest.raises(StudyError, match="--only ex7: no study named 'ex7'"):
        select_studies(specs, "ex7")
    with pytest.raises(StudyError, match="ex2-architecture has no grid 'lin'; grids: linear, 1 conv layer, 2-3 conv layers"):
        select_studies(specs, "ex2-architecture:lin")


def test_expected_time_is_printed_per_study_before_training(report, tmp_path, capsys):
    store, _, _, _ = report
    cached = load_study(_write(tmp_path, "ex1_architecture.toml", EX1))
    new = load_study(_write(tmp_path, "new.toml", EX1.replace('name = "ex1-architecture"', 'name = "new"')
                            .replace("epochs = 2", "epochs = 3")))
    estimates = print_estimates({"ex1-architecture": cached, "new": new}, {"ex1-architecture": cached}, store,
                                workers=1)
    err = capsys.readouterr().err
    assert "  ex1-architecture: nothing to train (10 runs in the store)" in err
    assert f"  new: not selected by --only: {len(new.runs)} runs, expected " in err
    assert "from a calibration" in err and "on this machine" in err
    assert set(estimates) == {"new"} and estimates["new"] in err
    # a study partly selected: what is left out is estimated too, for the report's "not run"
    linear = select_studies({"new": new}, "new:linear")
    estimates = print_estimates({"new": new}, linear, store, workers=1)
    err = capsys.readouterr().err
    assert f"  new: to train: {len(linear['new'].runs)} runs, expected " in err
    assert f"    and left out by --only: {len(new.runs) - len(linear['new'].runs)} runs, expected" in err
    assert estimates["new"].startswith(f"{len(new.runs) - len(linear['new'].runs)} runs, expected")


def _write(folder, name, text):
    (folder / name).write_text(text)
    return folder / name
