"""Study specs: expansion of factors, ranges, grids, cells and [quick]; strict errors that name the file, the key
(with its line) and the cell; a bad study trains nothing."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from engine.cli import main
from engine.config import RunConfig
from engine.store import RunStore
from engine.study.spec import StudyError, load_study

GOOD = """\
name = "demo"
description = "a test study"
seeds = [0, 1]

[base]
task = "points"
n_samples = 200
epochs = 2

[factors]
activation = ["tanh", "relu"]
lr = { log_range = [0.001, 0.1], num = 3 }

[[grids]]
label = "linear"
base = { hidden = [], activation = "identity" }

[[grids]]
label = "batch"
base = { optimizer = "sgd" }
factors = { batch_size = { range = [10, 30], step = 10 } }

[[cells]]
label = "wide"
hidden = [200]

[quick]
seeds = [0]
base = { epochs = 1 }
factors = { lr = [0.01] }
grids = ["main", "linear"]
"""


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_factors_ranges_grids_cells_and_seeds_expand(tmp_path):
    spec = load_study(write(tmp_path, GOOD))
    assert spec.name == spec.study_name == "demo"
    assert spec.metric == "val_accuracy" and spec.goal == "max"  # the task's headline metric by default
    labels = spec.cell_labels()
    # 2 activations x 3 lrs + 1 linear + 3 batch sizes + 1 cell = 11 cells, each with 2 seeds
    assert len(labels) == 11 and len(spec.runs) == 22
    lrs = sorted({c.config.lr for c in spec.runs if c.grid == "main"})
    assert lrs == pytest.approx([0.001, 0.01, 0.1]) and lrs[1] == 0.01  # log-spaced, rounded to clean values
    assert sorted({c.config.batch_size for c in spec.runs if c.grid == "batch"}) == [10, 20, 30]
    linear = [c for c in spec.runs if c.grid == "linear"]
    assert {c.config.hidden for c in linear} == {()} and {c.seed for c in linear} == {0, 1}
    assert [c.config.hidden for c in spec.runs if c.grid == "wide"] == [(200,), (200,)]
    assert "activation=tanh lr=0.001" in labels and "linear: hidden=[] activation=identity" in labels
    # every run is a valid RunConfig with the base applied, and run ids are unique
    assert all(c.config.n_samples == 200 and c.config.epochs == 2 for c in spec.runs)
    assert len({c.run_id for c in spec.runs}) == 22


def test_quick_applies_seeds_forced_base_factor_values_and_grids(tmp_path):
    quick = load_study(write(tmp_path, GOOD), quick=True)
    assert quick.study_name == "demo-quick"
    assert {c.grid for c in quick.runs} == {"main", "linear"}
    assert {c.seed for c in quick.runs} == {0}
    assert {c.config.epochs for c in quick.runs} == {1}
    assert {c.config.lr for c in quick.runs if c.grid == "main"} == {0.01}
    assert len(quick.runs) == 3


def test_a_run_reached_by_two_grids_trains_once_but_belongs_to_both(tmp_path):
    text = GOOD.replace('factors = { batch_size = { range = [10, 30], step = 10 } }',
                        'factors = { batch_size = [10] }').replace('base = { optimizer = "sgd" }',
                                                                    'base = { activation = "relu", lr = 0.01 }')
    spec = load_study(write(tmp_path, text))
    shared = [c for c in spec.runs if c.config.activation == "relu" and c.config.lr == 0.01
              and c.config.batch_size == 10 and c.config.hidden == (75,)]
    assert len(shared) == 2  # one per seed, not two
    assert all(c.grids == ("main", "batch") for c in shared)


def test_other_range_forms_and_seed_count(tmp_path):
    text = """
seeds = 3
[base]
task = "points"
[factors]
lr = { range = [0.1, 0.3], num = 3 }
epochs = { values = [1, 2] }
"""
    spec = load_study(write(tmp_path, text, "ranges.toml"))
    assert spec.name == "ranges"  # the file name when no name is given
    assert spec.seeds == (0, 1, 2)
    assert sorted({c.config.lr for c in spec.runs}) == [0.1, 0.2, 0.3]
    assert len(spec.runs) == 3 * 2 * 3


@pytest.mark.parametrize("old,new,expected", [
    ('activation = ["tanh", "relu"]', 'activaton = ["tanh", "relu"]',
     ["study.toml", "factors.activaton", "line 11", "unknown factor 'activaton'"]),
    ('activation = ["tanh", "relu"]', 'activation = []',
     ["study.toml", "factors.activation", "line 11", "empty list"]),
    ('activation = ["tanh", "relu"]', 'activation = ["tanh", 3]',
     ["factors.activation", "line 11", "value #2", "activation must be a string, got 3"]),
    ('lr = { log_range = [0.001, 0.1], num = 3 }', 'lr = ["fast"]',
     ["factors.lr", "line 12", "lr must be a finite number, got 'fast'"]),
    ('lr = { log_range = [0.001, 0.1], num = 3 }', 'lr = 0.1',
     ["factors.lr", "line 12", "a fixed value belongs in [base]"]),
    ('lr = { log_range = [0.001, 0.1], num = 3 }', 'lr = { log_range = [0.0, 0.1], num = 3 }',
     ["factors.lr", "log_range needs positive numbers"]),
    ('factors = { batch_size = { range = [10, 30], step = 10 } }',
     'factors = { batch_size = { range = [10, 30], step = 7.5 } }',
     ["grids.factors.batch_size", "line 21", "takes integers"]),
    ('epochs = 2', 'epochs = "two"', ["base.epochs", "line 8", "epochs must be an integer"]),
    ('n_samples = 200', 'n_sample = 200', ["base.n_sample", "line 7", "unknown config field 'n_sample'"]),
    ('seeds = [0, 1]', 'seeds = []', ["seeds", "line 3", "non-empty list"]),
    ('seeds = [0, 1]', 'seeds = [0, 1]\nrepeat = 3', ["repeat", "line 4", "unknown key 'repeat'"]),
    ('lr = { log_range', 'seed = [1, 2]\nlr = { log_range', ["factors.seed", "seeds = [...]"]),
    ('grids = ["main", "linear"]', 'grids = ["main", "lineer"]', ["quick.grids", "no grid labelled 'lineer'"]),
])
def test_bad_study_names_file_key_line_and_reason(tmp_path, old, new, expected):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(StudyError) as info:
        load_study(path)
    message = str(info.value)
    assert message.startswith(str(path))
    for part in expected:
        assert part in message, message


@pytest.mark.parametrize("old,new,expected", [
    # a value that is valid alone but not in this cell: the message names the cell and where the value was set
    ('lr = { log_range = [0.001, 0.1], num = 3 }', 'lr = [0.01, 200.0]',
     ["[factors]", "factors.lr (line 12)", "cell {activation=tanh lr=200}", "lr must be <= 100"]),
    ('base = { optimizer = "sgd" }', 'base = { optimizer = "sgd", nesterov = true }',
     ["[[grids]] #2 (batch)", "grids.base.nesterov (line 20)", "cell {optimizer=sgd nesterov=true batch_size=10}",
      "nesterov=true needs momentum > 0"]),
    ('label = "wide"\nhidden = [200]', 'label = "wide"\nhidden = [200]\nmomentum = 0.9',
     ["[[cells]] #1", "cells.momentum (line 26)", "momentum applies only to optimizer sgd or rmsprop"]),
    ('base = { epochs = 1 }', 'base = { epochs = 0 }', ["quick.base.epochs (line 29)", "epochs must be >= 1"]),
])
def test_invalid_cell_names_the_cell_and_the_key(tmp_path, old, new, expected):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(StudyError) as info:
        load_study(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "is not a valid config" in message
    for part in expected:
        assert part in message, message


def test_metric_must_be_logged_by_every_cell(tmp_path):
    path = write(tmp_path, GOOD.replace('seeds = [0, 1]', 'seeds = [0, 1]\nmetric = "val_mse"'))
    with pytest.raises(StudyError, match=r"metric, line 4: cell \{activation=tanh lr=0.001\} does not log "
                                         r"'val_mse'; it logs .*val_accuracy"):
        load_study(path)
    path = write(tmp_path, GOOD.replace('seeds = [0, 1]', 'seeds = [0, 1]\nmetric = "val_loss"'))
    assert load_study(path).goal == "min"


def test_a_bad_study_trains_nothing_and_the_cli_exits_2(tmp_path, capsys):
    store_root = tmp_path / "store"
    path = write(tmp_path, GOOD.replace('lr = { log_range = [0.001, 0.1], num = 3 }', 'lr = [0.01, 200.0]'))
    code = main(["study", "run", str(path), "--store", str(store_root), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: {path}" in err and "cell {activation=tanh lr=200}" in err
    assert not (store_root / "live").exists() and not (store_root / "sealed").exists()
    assert RunStore(store_root).attempts(RunConfig(task="points", n_samples=200, epochs=2).run_id) == {}
    assert main(["study", "plan", str(tmp_path / "missing.toml"), "--store", str(store_root)]) == 2
    assert "no such study file" in capsys.readouterr().err


def test_log_range_endpoints_are_exact(tmp_path):
    text = '[base]\ntask = "points"\n[factors]\nlr = { log_range = [1e-4, 1.0], num = 5 }\n'
    spec = load_study(write(tmp_path, text))
    assert sorted({c.config.lr for c in spec.runs}) == [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    assert all(math.isfinite(c.config.lr) for c in spec.runs)
