"""The reproduction report, built from a small real store: every reference line is in the table beside the value
measured in the store (converted to the reference's unit), and the study's findings are checks with their numbers.
(`reproduce --quick` itself takes minutes; here tiny studies with the reference studies' names stand in.)"""
from __future__ import annotations

import statistics

import pytest

from engine import queries
from engine.store import RunStore
from engine.study.executor import run_study
from engine.study.reproduce import STUDY_FILES, build_report, load_specs, reference_rows
from engine.study.spec import load_study

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
"""

EX4 = """\
name = "ex4-loss"
metric = "val_nll"
seeds = [0, 1]
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
    text, checks = build_report(store, specs, quick=True, reference=reference)
    return store, text, checks, reference


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
    assert "The data sets differ from the study's" in text


def test_measured_values_come_from_the_store_in_the_reference_unit(report):
    store, text, _, _ = report
    runs = queries.list_runs(store, filters={"task": "points"})
    for activation in ("sigmoid", "tanh", "relu"):
        mine = runs[(runs["activation"] == activation) & (runs["n_hidden"] == 2)]["final_val_accuracy"]
        assert len(mine) == 2
        cells = table_row(text, f"3 linear layers, {activation}")
        mean, std = statistics.fmean(mine) * 100, statistics.stdev(mine) * 100
        assert cells[6] == f"{mean:.2f} +- {std:.2f} (n=2)"
        assert "ex1-architecture [3 layers]" in cells[7]
    nll = queries.list_runs(store, filters={"task": "regression", "lr": 0.001})
    cells = table_row(text, "Gaussian NLL (mean + log-variance head), lr=0.001, 100 epochs")
    assert cells[6].startswith(f"{statistics.fmean(nll['final_val_nll']):.3f} +- ")
    # a study that did not run shows as such, it is not invented
    assert table_row(text, "1 linear layer + softmax")[6] == "- (no completed runs)"


def test_findings_are_checks_with_numbers(report):
    store, text, checks, _ = report
    by_name = {c.finding: c for c in checks}
    c = by_name["3-layer MLP on points: relu > tanh > sigmoid"]
    runs = queries.list_runs(store, filters={"task": "points"})
    means = {a: runs[(runs["activation"] == a) & (runs["n_hidden"] == 2)]["final_val_accuracy"].mean()
             for a in ("relu", "tanh", "sigmoid")}
    assert c.status == ("PASS" if means["relu"] > means["tanh"] > means["sigmoid"] else "FAIL")
    assert c.numbers == f"relu {means['relu'] * 100:.2f}%, tanh {means['tanh'] * 100:.2f}%, " \
                       f"sigmoid {means['sigmoid'] * 100:.2f}%"
    g = by_name["Gaussian NLL goes negative (hetero1d)"]
    assert g.status in ("PASS", "FAIL") and "hetero1d" in g.numbers
    # studies that did not run make their checks N/A, never PASS
    assert by_name["unnormalised regression diverges (linear model, SGD lr 0.01, raw diabetes features and target)"] \
        .status == "N/A"
    assert {c.status for c in checks} <= {"PASS", "FAIL", "N/A"}
    assert f"| 1 | 3-layer MLP on points: relu > tanh > sigmoid | {c.status} | {c.numbers} |" in text


def test_the_reference_study_files_load_in_both_modes():
    # every studies/*.toml expands and validates (full and quick) without training anything
    full, quick = load_specs(), load_specs(quick=True)
    assert len(full) == len(quick) == len(STUDY_FILES) == 16
    for name, spec in full.items():
        assert quick[name].study_name == f"{name}-quick"
        assert len(quick[name].runs) <= len(spec.runs)
    # the test question re-uses a run of the loss question (evaluate_test everywhere): a cache hit, not a retrain
    for ex in ("ex1", "ex2", "ex3"):
        for specs in (full, quick):
            loss = {c.run_id for c in specs[f"{ex}-loss"].runs}
            test = {c.run_id for c in specs[f"{ex}-test"].runs}
            assert loss & test
