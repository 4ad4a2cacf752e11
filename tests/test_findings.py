"""Findings as data (engine/study/finding_spec.py, engine/study/findings.py): a bad [[findings]] or [[answers]] entry
is rejected when the file loads, naming the file, the entry and the key; each kind's verdict follows from the
interval over seeds (engine.stats), computed here again with SciPy, on synthetic runs (no training)."""
from __future__ import annotations

import statistics

import pytest
from scipy import stats

from engine.study.finding_spec import check_references
from engine.study.findings import (INCONCLUSIVE, NOT_REPRODUCED, NOT_RUN, REPRODUCED, StudyData, combine, evaluate,
                                   Verdict)
from engine.study.spec import StudyError, load_study, load_study_text

STUDY = """\
name = "ex9-demo"
seeds = [0, 1, 2]
[base]
task = "points"
optimizer = "sgd"
lr = 0.1
epochs = 3
[factors]
activation = ["sigmoid", "tanh", "relu"]
lr = [0.01, 0.1]
[[grids]]
label = "linear"
base = { hidden = [], activation = "identity" }
"""

GOOD = """
[[findings]]
text = "first, a good one"
kind = "threshold"
above = 0.5
"""


def write(tmp_path, findings: str, name: str = "ex9_demo.toml"):
    path = tmp_path / name
    path.write_text(STUDY + GOOD + findings)
    return path


# --- bad entries: each is an error naming the file, the entry and the key ---------------------------------------------

BAD = [
    ('kind = "ranks"', "kind", "unknown kind 'ranks'; kinds: order, beats, best, threshold, diverges, close"),
    ('kind = "order"\nby = "activation"\nlevels = ["relu", "tahn"]', "levels",
     "no cell has activation=tahn; its values there: identity, relu, sigmoid, tanh"),
    ('kind = "order"\nby = "activaton"\nlevels = ["relu", "tanh"]', "by", "'activaton' is not a config field"),
    ('kind = "order"\nby = "activation"', None, "kind 'order' needs 'levels'"),
    ('kind = "order"\nby = "activation"\nlevels = ["relu"]', "levels", "two or more"),
    ('kind = "beats"\na = { grid = "lineer" }\nb = { lr = 0.1 }', "a", "no grid labelled 'lineer'; grids: main, linear"),
    ('kind = "beats"\na = { lr = 0.5 }\nb = { lr = 0.1 }', "a", "no cell has lr=0.5; its values there: 0.01, 0.1"),
    ('kind = "beats"\na = { lrate = 0.1 }\nb = { lr = 0.1 }', "b" if False else "a", "'lrate' is not a config field"),
    ('kind = "beats"\na = { lr = 0.01 }\nb = { lr = 0.1 }\nmargin = "big"', "margin", "must be a number"),
    ('kind = "beats"\na = { lr = 0.01 }\nb = { lr = 0.1, pick = "worst" }', "b", "pick must be \"best\" or \"pool\""),
    ('kind = "best"\nby = "activation"\nexpect = ["softplus"]', "expect", "no cell has activation=softplus"),
    ('kind = "best"\nby = "activation"\nexpect = ["tanh"]\nmetric = "val_acuracy"', "metric",
     "does not log 'val_acuracy'"),
    ('kind = "threshold"\nabove = 0.5\nbelow = 0.9', None, "exactly one of above = X or below = X"),
    ('kind = "threshold"\nabove = 0.5\nmetric = "best(val accuracy)"', "metric", "not a metric"),
    ('kind = "threshold"\nabove = 0.5\nbest_seed = "yes"', "best_seed", "must be true or false"),
    ('kind = "threshold"\nabove = 0.5\nper = "actvation"', "per", "must be a config field"),
    ('kind = "threshold"\nabove = 0.5\nrequire = "half"', "require", "must be one of all, most, any"),
    ('kind = "threshold"\nabove = 0.5\ncolour = "red"', "colour", "unknown key 'colour' for kind 'threshold'"),
    ('kind = "diverges"\nexpect = "sometimes"', "expect", "must be true (the runs diverge) or false"),
    ('kind = "diverges"\nruns = "half"', "runs", "must be \"all\" or \"some\""),
    ('kind = "diverges"\nor_worse_than = { lr = 7 }', "or_worse_than", "no cell has lr=7"),
    ('kind = "close"\na = { lr = 0.01 }\nb = { lr = 0.1 }', None, "kind 'close' needs 'within'"),
    ('kind = "close"\na = { lr = 0.01 }\nb = { lr = 0.1 }\nwithin = -1', "within", "must be > 0"),
    ('kind = "close"\na = { metric = "test_accuracy" }\nb = { lr = 0.1 }\nwithin = 0.1', "a.metric",
     "does not log 'test_accuracy'"),
]


@pytest.mark.parametrize("body, key, reason", BAD, ids=[b[0].split("\n")[0] + f" #{i}" for i, b in enumerate(BAD)])
def test_bad_finding_entry_names_file_entry_and_key(tmp_path, body, key, reason):
    path = write(tmp_path, f'\n[[findings]]\ntext = "the claim"\n{body}\n')
    with pytest.raises(StudyError) as err:
        load_study(path)
    message = str(err.value)
    assert message.startswith(f"{path}: findings{'.' + key if key else ''}")
    assert "[[findings]] #2 ('the claim')" in message  # the second entry: the first one is fine
    assert reason in message


def test_a_line_number_points_at_the_bad_key(tmp_path):
    path = write(tmp_path, '\n[[findings]]\ntext = "x"\nkind = "order"\nby = "activation"\nlevels = ["relu", "tahn"]\n')
    with pytest.raises(StudyError) as err:
        load_study(path)
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if t.startswith("levels = [\"relu\", \"tahn"))
    assert f"findings.levels, line {line}:" in str(err.value)


def test_findings_need_text_and_valid_tables(tmp_path):
    with pytest.raises(StudyError, match=r"findings.text: \[\[findings\]\] #2 \('\?'\): must be a non-empty string"):
        load_study(write(tmp_path, '\n[[findings]]\nkind = "threshold"\nabove = 1\n'))
    with pytest.raises(StudyError, match="findings, line 1: must be an array of tables"):
        load_study_text("findings = 3\n" + STUDY, "inline.toml")


@pytest.mark.parametrize("body, key, reason", [
    ('cells = { grid = "nope" }', "cells", "no grid labelled 'nope'"),
    ('cells = { lr = 3.0 }', "cells", "no cell has lr=3"),
    ('metric = "val_loss@0"', "metric", "not a metric"),
    ('scale = "percent"', "scale", "must be a number"),
    ('where = 1', "where", "unknown key 'where'; an answer has line, cells, metric, scale, note"),
])
def test_bad_answer_entry_names_file_entry_and_key(tmp_path, body, key, reason):
    path = write(tmp_path, f'\n[[answers]]\nline = "3 linear layers, relu"\n{body}\n')
    with pytest.raises(StudyError) as err:
        load_study(path)
    assert str(err.value).startswith(f"{path}: answers.{key}")
    assert "[[answers]] #1 ('3 linear layers, relu')" in str(err.value) and reason in str(err.value)


def test_references_across_studies_are_checked_when_the_set_loads(tmp_path):
    other = load_study(write(tmp_path, "", "ex8.toml"))  # name ex9-demo, too: give it its own name
    other = load_study_text(other.text.replace('name = "ex9-demo"', 'name = "ex8-other"'), tmp_path / "ex8.toml")
    path = write(tmp_path, '\n[[findings]]\ntext = "cross"\nkind = "beats"\na = { lr = 0.1 }\n'
                           'b = { study = "ex7-missing", lr = 0.1 }\n')
    spec = load_study(path)  # another study's cells are checked when all studies are loaded
    with pytest.raises(StudyError, match=r"findings.b.*#2 \('cross'\): no study named 'ex7-missing'"):
        check_references({spec.name: spec, other.name: other}, set())
    path = write(tmp_path, '\n[[findings]]\ntext = "cross"\nkind = "beats"\na = { lr = 0.1 }\n'
                           'b = { study = "ex8-other", lr = 0.3 }\n')
    spec = load_study(path)
    with pytest.raises(StudyError, match=r"findings.b.*no cell has lr=0.3"):
        check_references({spec.name: spec, other.name: other}, set())
    path = write(tmp_path, '\n[[answers]]\nline = "a line the reference lacks"\n')
    spec = load_study(path)
    with pytest.raises(StudyError, match=r"answers.line.*'a line the reference lacks' is not a `setting`"):
        check_references({spec.name: spec}, {"3 linear layers, relu"})
    twice = write(tmp_path, '\n[[answers]]\nline = "L"\n')
    a, b = load_study(twice), load_study_text(load_study(twice).text.replace("ex9-demo", "ex8-other"), "b.toml")
    with pytest.raises(StudyError, match="'L' is answered by .* already"):
        check_references({a.name: a, b.name: b}, {"L"})


# --- verdicts on synthetic runs ------------------------------------------------------------------------------------------

def synthetic(tmp_path, findings: str, values: dict, curves: dict | None = None, status: dict | None = None,
              study: str = STUDY) -> tuple[dict[str, StudyData], str]:
    """A study whose runs' final val_accuracy is values[(activation, lr)][seed] (a cell missing: not run)."""
    path = tmp_path / "synthetic.toml"
    path.write_text(study + findings)
    spec = load_study(path)
    records, per_run = {}, {}
    for cell in spec.runs:
        key = (cell.config.activation, cell.config.lr)
        if key not in values:
            continue
        v = values[key][cell.seed]
        s = (status or {}).get(key, "completed")
        records[cell.run_id] = {"status": s, "summary": {}, "meta": {}, "final": {"val_accuracy": v}}
        if curves and key in curves:
            per_run[cell.run_id] = curves[key][cell.seed]
    data = StudyData(spec, store=None, records=records)
    data._curves["val_accuracy"] = per_run
    return {spec.name: data}, spec.name


def verdict(tmp_path, findings: str, values: dict, **kw):
    studies, name = synthetic(tmp_path, findings, values, **kw)
    return evaluate(studies, name, studies[name].spec.findings[0])


def paired_ci(a, b):
    return stats.ttest_rel(a, b).confidence_interval(0.95)


BEATS = '\n[[findings]]\ntext = "tanh beats sigmoid"\nkind = "beats"\na = { activation = "tanh", lr = 0.1 }\n' \
        'b = { activation = "sigmoid", lr = 0.1 }\n'


@pytest.mark.parametrize("tanh, sigmoid", [
    ([0.90, 0.92, 0.91], [0.60, 0.65, 0.61]),    # far apart: interval above 0
    ([0.60, 0.62, 0.61], [0.90, 0.91, 0.93]),    # reversed: interval below 0
    ([0.90, 0.70, 0.85], [0.80, 0.86, 0.75]),    # noisy: straddles 0
])
def test_beats_verdict_follows_the_paired_interval(tmp_path, tanh, sigmoid):
    r = verdict(tmp_path, BEATS, {("tanh", 0.1): tanh, ("sigmoid", 0.1): sigmoid})
    ci = paired_ci(tanh, sigmoid)
    expected = REPRODUCED if ci.low > 0 else NOT_REPRODUCED if ci.high < 0 else INCONCLUSIVE
    assert r.verdict == expected
    assert f"[{(ci.low) * 100:+.2f} points, {ci.high * 100:+.2f} points]" in r.numbers
    # the means alone would have decided: the interval is what matters
    assert (statistics.fmean(tanh) > statistics.fmean(sigmoid)) == (expected != NOT_REPRODUCED)


def test_beats_with_one_seed_or_none_is_inconclusive_or_not_run(tmp_path):
    one = STUDY.replace("seeds = [0, 1, 2]", "seeds = [0]")
    r = verdict(tmp_path, BEATS, {("tanh", 0.1): [0.99], ("sigmoid", 0.1): [0.10]}, study=one)
    assert r.verdict == INCONCLUSIVE and r.numbers.endswith("single seed")
    r = verdict(tmp_path, BEATS, {("tanh", 0.1): [0.9, 0.9, 0.9]})
    assert r.verdict == NOT_RUN


def test_beats_margin_shifts_the_claim(tmp_path):
    body = BEATS + "margin = 0.2\n"
    tanh, sigmoid = [0.90, 0.92, 0.91], [0.80, 0.81, 0.79]  # ahead by ~0.11, clearly less than 0.2
    assert paired_ci(tanh, sigmoid).high < 0.2
    assert verdict(tmp_path, body, {("tanh", 0.1): tanh, ("sigmoid", 0.1): sigmoid}).verdict == NOT_REPRODUCED
    body = BEATS + "margin = -0.05\n"  # "not worse by more than 5 points"
    assert verdict(tmp_path, body, {("tanh", 0.1): [0.80, 0.81, 0.80], ("sigmoid", 0.1): [0.81, 0.82, 0.80]}) \
        .verdict == REPRODUCED


ORDER = '\n[[findings]]\ntext = "relu > tanh > sigmoid"\nkind = "order"\ncells = { lr = 0.1 }\nby = "activation"\n' \
        'levels = ["relu", "tanh", "sigmoid"]\n'


def test_order_needs_every_step(tmp_path):
    good = {("relu", 0.1): [0.99, 0.98, 0.99], ("tanh", 0.1): [0.80, 0.81, 0.79], ("sigmoid", 0.1): [0.5, 0.52, 0.5]}
    assert verdict(tmp_path, ORDER, good).verdict == REPRODUCED
    swapped = {**good, ("tanh", 0.1): [0.40, 0.41, 0.39]}  # tanh below sigmoid
    r = verdict(tmp_path, ORDER, swapped)
    assert r.verdict == NOT_REPRODUCED and r.numbers.count(" vs ") == 2


def test_best_compares_the_best_expected_level_with_the_best_other(tmp_path):
    body = '\n[[findings]]\ntext = "tanh is best"\nkind = "best"\nby = "activation"\nexpect = ["tanh"]\n'
    base = {("sigmoid", 0.01): [0.5] * 3, ("sigmoid", 0.1): [0.6, 0.61, 0.6], ("relu", 0.01): [0.7, 0.71, 0.7],
            ("relu", 0.1): [0.8, 0.79, 0.81], ("tanh", 0.01): [0.5, 0.5, 0.52]}
    # tanh's best cell (lr 0.1) against relu's best cell (lr 0.1)
    r = verdict(tmp_path, body, {**base, ("tanh", 0.1): [0.95, 0.96, 0.95]})
    assert r.verdict == REPRODUCED and "relu lr=0.1" in r.numbers.replace("activation=relu", "relu")
    r = verdict(tmp_path, body, {**base, ("tanh", 0.1): [0.70, 0.71, 0.69]})
    assert r.verdict == NOT_REPRODUCED
    body = body.replace('expect = ["tanh"]', 'expect = ["tanh"]\npick = "pool"')  # pooled over lr: the mean of 6
    r = verdict(tmp_path, body, {**base, ("tanh", 0.1): [0.95, 0.96, 0.95]})
    assert "activation=tanh: 73.00% (n=6)" in r.numbers


def test_threshold_uses_the_interval_of_the_mean_or_the_best_seed(tmp_path):
    body = '\n[[findings]]\ntext = "above 90%"\nkind = "threshold"\ncells = { activation = "relu", lr = 0.1 }\n' \
           'above = 0.9\n'
    for vals in ([0.95, 0.96, 0.97], [0.80, 0.82, 0.81], [0.85, 0.95, 0.99]):
        lo, hi = stats.t.interval(0.95, 2, loc=statistics.fmean(vals), scale=stats.sem(vals))
        expected = REPRODUCED if lo > 0.9 else NOT_REPRODUCED if hi <= 0.9 else INCONCLUSIVE
        assert verdict(tmp_path, body, {("relu", 0.1): vals}).verdict == expected
    best = body + "best_seed = true\n"
    assert verdict(tmp_path, best, {("relu", 0.1): [0.80, 0.95, 0.81]}).verdict == REPRODUCED
    assert verdict(tmp_path, best, {("relu", 0.1): [0.80, 0.85, 0.81]}).verdict == NOT_REPRODUCED


def test_threshold_per_group_and_require(tmp_path):
    body = '\n[[findings]]\ntext = "above 90% at each lr"\nkind = "threshold"\ncells = { activation = "relu" }\n' \
           'per = "lr"\nabove = 0.9\n'
    vals = {("relu", 0.1): [0.95, 0.96, 0.97], ("relu", 0.01): [0.50, 0.52, 0.51]}
    r = verdict(tmp_path, body, vals)
    assert r.verdict == NOT_REPRODUCED and "lr=0.01: not reproduced" in r.numbers and "lr=0.1: reproduced" in r.numbers
    assert verdict(tmp_path, body + 'require = "any"\n', vals).verdict == REPRODUCED


def test_combine_rules():
    v = lambda *kinds: [Verdict(k, "") for k in kinds]  # noqa: E731
    assert combine(v(REPRODUCED, INCONCLUSIVE), "all") == INCONCLUSIVE
    assert combine(v(REPRODUCED, REPRODUCED, NOT_REPRODUCED), "most") == REPRODUCED
    assert combine(v(REPRODUCED, NOT_REPRODUCED), "most") == NOT_REPRODUCED
    assert combine(v(NOT_RUN, NOT_RUN), "all") == NOT_RUN
    assert combine(v(NOT_REPRODUCED, INCONCLUSIVE), "any") == INCONCLUSIVE


DIVERGES = '\n[[findings]]\ntext = "relu at lr 0.1 diverges"\nkind = "diverges"\ncells = { activation = "relu", ' \
           'lr = 0.1 }\n'


def test_diverges(tmp_path):
    vals = {("relu", 0.1): [float("nan")] * 3, ("relu", 0.01): [0.9, 0.91, 0.92]}
    assert verdict(tmp_path, DIVERGES, vals, status={("relu", 0.1): "diverged"}).verdict == REPRODUCED
    assert verdict(tmp_path, DIVERGES, {("relu", 0.1): [0.5, 0.5, 0.5]}).verdict == NOT_REPRODUCED
    assert verdict(tmp_path, DIVERGES, {}).verdict == NOT_RUN
    not_expected = DIVERGES + "expect = false\n"
    assert verdict(tmp_path, not_expected, vals, status={("relu", 0.1): "diverged"}).verdict == NOT_REPRODUCED
    # runs that complete must end worse than the other selection
    worse = DIVERGES + 'runs = "some"\nor_worse_than = { lr = 0.01 }\n'
    assert verdict(tmp_path, worse, {("relu", 0.1): [0.5, 0.52, 0.5], ("relu", 0.01): [0.9, 0.91, 0.92]}) \
        .verdict == REPRODUCED
    assert verdict(tmp_path, worse, {("relu", 0.1): [0.95, 0.96, 0.95], ("relu", 0.01): [0.5, 0.51, 0.52]}) \
        .verdict == NOT_REPRODUCED


def test_close(tmp_path):
    body = '\n[[findings]]\ntext = "lr does not matter for relu"\nkind = "close"\ncells = { activation = "relu" }\n' \
           'a = { lr = 0.1 }\nb = { lr = 0.01 }\nwithin = 0.05\n'
    assert verdict(tmp_path, body, {("relu", 0.1): [0.90, 0.91, 0.92], ("relu", 0.01): [0.90, 0.92, 0.91]}) \
        .verdict == REPRODUCED
    assert verdict(tmp_path, body, {("relu", 0.1): [0.90, 0.91, 0.92], ("relu", 0.01): [0.50, 0.52, 0.51]}) \
        .verdict == NOT_REPRODUCED
    r = verdict(tmp_path, body, {("relu", 0.1): [0.90, 0.80, 0.99], ("relu", 0.01): [0.85, 0.91, 0.88]})
    ci = paired_ci([0.90, 0.80, 0.99], [0.85, 0.91, 0.88])
    assert r.verdict == INCONCLUSIVE and ci.low < -0.05  # a wide interval is no evidence of closeness


@pytest.mark.parametrize("metric, expected", [
    ("val_accuracy@1", [0.5, 0.6, 0.55]),                        # epoch 1
    ("best(val_accuracy)", [0.9, 0.95, 0.8]),                    # best epoch
    ("rise(val_accuracy)", [0.1, 0.0, 0.13]),                    # how far it fell back after its best
    ("epochs_to(val_accuracy >= 0.9)", [2.0, 3.0, 4.0]),         # never reached: epochs + 1 = 4
])
def test_per_epoch_metrics_from_curves(tmp_path, metric, expected):
    curves = {("relu", 0.1): [[0.5, 0.9, 0.8], [0.6, 0.85, 0.95], [0.55, 0.8, 0.67]]}
    body = f'\n[[findings]]\ntext = "t"\nkind = "threshold"\nmetric = "{metric}"\ncells = {{ activation = "relu", ' \
           f'lr = 0.1 }}\nbelow = 100\n'
    studies, name = synthetic(tmp_path, body, {("relu", 0.1): [0.8, 0.95, 0.67]}, curves=curves)
    data, f = studies[name], studies[name].spec.findings[0]
    got = [data.value(c, f.metric) for c in data.cells(f.cells)]
    assert got == pytest.approx(expected)
