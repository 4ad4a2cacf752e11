"""The command line answers bad input with one clear line and exit code 2, never a traceback."""
from __future__ import annotations

import pytest

from engine.cli import main


@pytest.mark.parametrize("argv,message", [
    (["train", "--hidden", "abc"], "hidden must be a list of integers, got ['abc']"),
    (["train", "--lr", "-1"], "lr must be > 0, got -1.0"),
    (["train", "--task", "mnist", "--loss", "bce"], "loss=bce needs a binary task"),
    (["train", "--device", "tpu"], "device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    (["train", "--config", "/no/such/run.toml"], "/no/such/run.toml: no such config file"),
    (["study", "run", "/no/such/study.toml"], "/no/such/study.toml: no such study file"),
])
def test_bad_input_is_one_error_line(tmp_path, capsys, argv, message):
    assert main([*argv, "--store", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_train_prints_run_id_and_final_metrics_then_hits_the_cache(tmp_path, capsys):
    argv = ["train", "--task", "points", "--hidden", "8", "--epochs", "2", "--quiet", "--store", str(tmp_path)]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "status: completed\n" in first and "val_accuracy: " in first
    run_id = next(line.split(": ")[1] for line in first.splitlines() if line.startswith("run_id: "))
    assert len(run_id) == 16
    assert main(argv) == 0
    assert "status: completed (cached: nothing trained)" in capsys.readouterr().out


def test_config_flags_take_the_hyphenated_spelling_and_the_field_name():
    from engine.cli import build_parser
    from engine.cli.train import config_from_args
    parser = build_parser()
    hyphen = parser.parse_args(["train", "--batch-size", "7", "--val-fraction", "0.3", "--weight-decay", "0.01"])
    under = parser.parse_args(["train", "--batch_size", "7", "--val_fraction", "0.3", "--weight_decay", "0.01"])
    assert config_from_args(hyphen) == config_from_args(under)
    cfg = config_from_args(hyphen)
    assert (cfg.batch_size, cfg.val_fraction, cfg.weight_decay) == (7, 0.3, 0.01)
    assert "--batch-size" in parser._subparsers._group_actions[0].choices["train"].format_help()
