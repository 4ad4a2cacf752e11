"""RunConfig: validation messages, canonical ids, TOML and CLI agreement."""
from __future__ import annotations

import pytest

from engine.cli import build_parser
from engine.cli.train import config_from_args
from engine.config import (CONDITIONAL, DATASETS, FIELD_NAMES, TASK_MODELS, ConfigError, RunConfig, allowed_values, applies,
                           field_help)

# (bad fields, words the message must contain: the field, the value and what is allowed)
BAD_CONFIGS = [
    ({"lr": -1}, "lr must be > 0, got -1"),
    ({"lr": 0}, "lr must be > 0, got 0"),
    ({"lr": "fast"}, "lr must be a number, got 'fast'"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"task": "cifar"}, "task must be one of points, mnist, colored_mnist, regression, got 'cifar'"),
    ({"activation": "swish"}, "activation must be one of relu, tanh, sigmoid"),
    ({"optimizer": "lion"}, "optimizer must be one of sgd, adam, adamw, rmsprop, got 'lion'"),
    ({"task": "mnist", "loss": "gaussian_nll"}, "loss=gaussian_nll needs task=regression"),
    ({"task": "mnist", "loss": "bce"}, "loss=bce needs a binary task (points); task=mnist has 10 classes"),
    ({"task": "colored_mnist", "loss": "bce"}, "loss=bce needs a binary task"),
    ({"model": "cnn"}, "model=cnn needs an image task (mnist, colored_mnist), got task=points"),
    ({"task": "regression", "loss": "cross_entropy"}, "task=regression allows loss mse or gaussian_nll"),
    ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ({"epochs": 2.5}, "epochs must be an integer, got 2.5"),
    ({"hidden": [75, -3]}, "hidden must list at most 16 widths, each 1..100000, got [75, -3]"),
    ({"hidden": ["a"]}, "hidden must be a list of integers"),
    ({"dataset": "moons", "task": "mnist"}, "dataset must be one of sample5k, full for task mnist, got 'moons'"),
    ({"task": "mnist", "n_samples": 500}, "n_samples applies only to points and regression/hetero1d"),
    ({"momentum": 0.9}, "momentum applies only to optimizer sgd or rmsprop"),
    ({"optimizer": "sgd", "nesterov": True}, "nesterov=true needs momentum > 0"),
    ({"optimizer": "sgd", "momentum": 1.0}, "momentum must be < 1, got 1.0"),
    ({"schedule": "cosine", "min_lr": 0.5, "lr": 0.1}, "min_lr must be <= lr (0.1), got 0.5"),
    ({"class_balance": 1.0}, "class_balance must be < 1, got 1.0"),
    ({"grad_clip": 0}, "grad_clip must be > 0, got 0"),
    ({"task": "mnist", "model": "cnn", "channels": [8, 8], "kernel_sizes": [3]},
     "kernel_sizes must give one size per conv layer (2), got [3]"),
    ({"task": "mnist", "model": "cnn", "kernel_sizes": [4, 3, 3]}, "kernel_sizes must be odd numbers 1..11"),
    ({"task": "colored_mnist", "n_colors": 2}, "n_colors must be >= 3, got 2"),
    ({"normalize": False}, "normalize applies only to regression"),
    ({"evaluate_test": "yes"}, "evaluate_test must be true or false, got 'yes'"),
]


@pytest.mark.parametrize("fields,message", BAD_CONFIGS, ids=[str(f) for f, _ in BAD_CONFIGS])
def test_bad_config_names_field_value_and_allowed(fields, message):
    with pytest.raises(ConfigError) as info:
        RunConfig(**fields)
    assert message in str(info.value)


def test_unknown_key_is_an_error_listing_allowed_keys():
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"task": "points", "learning_rate": 0.1})
    assert "unknown key(s) learning_rate" in str(info.value)
    assert "lr" in str(info.value).split("allowed keys:")[1]


def test_unknown_key_in_toml_names_the_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('task = "points"\nlayers = 3\n')
    with pytest.raises(ConfigError) as info:
        RunConfig.from_toml(path)
    assert str(path) in str(info.value) and "unknown key(s) layers" in str(info.value)


def test_invalid_toml_is_reported_with_the_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('task = "points\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        RunConfig.from_toml(path)


def test_equal_configs_share_an_id_and_defaults_are_canonical():
    a = RunConfig(task="points", hidden=[75], lr=0.01)
    b = RunConfig.from_dict({"lr": 0.01, "hidden": 75, "task": "points"})
    c = RunConfig(task="points", hidden=(75,), lr=0.01, n_samples=1000, noise=0.1, class_balance=0.5)
    assert a == b == c
    assert a.run_id == b.run_id == c.run_id
    assert len(a.run_id) == 16 and int(a.run_id, 16) >= 0


@pytest.mark.parametrize("change", [
    {"lr": 0.02}, {"seed": 1}, {"data_seed": 1}, {"hidden": [75, 75]}, {"activation": "tanh"},
    {"optimizer": "sgd"}, {"loss": "bce"}, {"batch_size": 20}, {"epochs": 21}, {"noise": 0.2},
    {"schedule": "cosine"}, {"grad_clip": 1.0}, {"evaluate_test": True}, {"dataset": "moons"},
])
def test_any_change_that_can_change_the_result_changes_the_id(change):
    base = RunConfig()
    assert base.replace(**change).run_id != base.run_id


def test_round_trip_through_dict_and_json():
    config = RunConfig(task="mnist", model="cnn", channels=[20, 20], kernel_sizes=[5, 3], optimizer="sgd",
                       momentum=0.9, nesterov=True, schedule="step")
    again = RunConfig.from_dict(config.to_dict())
    assert again == config and again.canonical_json() == config.canonical_json()
    assert config.to_dict()["channels"] == [20, 20]


def test_config_is_frozen():
    config = RunConfig()
    with pytest.raises(AttributeError):
        config.lr = 1.0  # type: ignore[misc]


def test_toml_file_and_cli_flags_produce_the_same_config(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('task = "points"\nhidden = [100, 150]\nactivation = "tanh"\noptimizer = "sgd"\n'
                    'momentum = 0.9\nlr = 0.05\nepochs = 7\n')
    parser = build_parser()
    from_file = config_from_args(parser.parse_args(["train", "--config", str(path)]))
    from_flags = config_from_args(parser.parse_args(
        ["train", "--task", "points", "--hidden", "100", "150", "--activation", "tanh", "--optimizer", "sgd",
         "--momentum", "0.9", "--lr", "0.05", "--epochs", "7"]))
    from_commas = config_from_args(parser.parse_args(
        ["train", "--task", "points", "--hidden", "100,150", "--activation", "tanh", "--optimizer", "sgd",
         "--momentum", "0.9", "--lr", "0.05", "--epochs", "7"]))
    assert from_file == from_flags == from_commas
    assert from_file.run_id == from_flags.run_id


def test_cli_flags_override_the_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('task = "points"\nlr = 0.05\n')
    config = config_from_args(build_parser().parse_args(["train", "--config", str(path), "--lr", "0.2"]))
    assert config.lr == 0.2


def test_bare_hidden_flag_means_the_linear_model():
    config = config_from_args(build_parser().parse_args(["train", "--task", "points", "--hidden"]))
    assert config.hidden == ()


STRUCTURAL_CHOICES = [dict(task=t, dataset=d, model=m, optimizer=o, schedule=s)
                      for t, datasets in DATASETS.items() for d in datasets for m in TASK_MODELS[t]
                      for o in ("adam", "sgd", "rmsprop") for s in ("constant", "cosine", "step")]


@pytest.mark.parametrize("choices", STRUCTURAL_CHOICES, ids=lambda c: "-".join(c.values()))
def test_applies_and_allowed_values_agree_with_validation(choices):
    """What a form asks (applies, allowed_values) is what RunConfig accepts: a field applies exactly when the
    canonical config fills it in, and a choice is allowed exactly when the config builds with it."""
    config = RunConfig(**choices)
    for name in FIELD_NAMES:
        fills_it_in = name not in CONDITIONAL or getattr(config, name) is not None  # grad_clip: None means off
        assert applies(name, choices) == fills_it_in, name
    for name in ("dataset", "model", "loss", "activation", "optimizer", "schedule"):
        allowed = allowed_values(name, choices)
        for value in field_help()[name]["choices"]:
            try:
                RunConfig(**{**choices, name: value})
                ok = True
            except ConfigError:
                ok = False
            assert ok == (value in allowed), (name, value)
