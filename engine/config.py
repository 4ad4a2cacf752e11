"""One run's configuration: a frozen, validated value whose hash is the run id.

Every knob the reference study turned is a field here. Fields that do not apply to the chosen task or model are
canonicalised to ``None`` (and rejected when set explicitly), so they can never change the run id: two configs that
train the same thing are the same run, and the store treats the second as a cache hit.

The device is deliberately *not* part of the config: a study cached on a GPU box is not retrained on a laptop. The run
records the device it actually used.
"""
from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

# Bump when a change to the engine changes what a config trains into: old cached runs then stop matching.
ENGINE_VERSION = 1

TASKS = ("points", "mnist", "colored_mnist", "regression")
DATASETS = {
    "points": ("circles", "moons", "xor", "spirals"),
    "mnist": ("sample5k", "full"),
    "colored_mnist": ("sample5k", "full"),
    "regression": ("diabetes", "hetero1d"),
}
MODELS = ("mlp", "cnn")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu", "elu", "gelu", "silu", "softmax", "identity")
LOSSES = ("mse", "bce", "cross_entropy", "gaussian_nll")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "cosine", "step")

CLASSIFICATION_TASKS = ("points", "mnist", "colored_mnist")
IMAGE_TASKS = ("mnist", "colored_mnist")
# The losses each task allows (the first is its default), and the models.
TASK_LOSSES = {"points": ("mse", "bce", "cross_entropy"), "mnist": ("cross_entropy", "mse"),
               "colored_mnist": ("cross_entropy", "mse"), "regression": ("mse", "gaussian_nll")}
TASK_MODELS = {task: MODELS if task in IMAGE_TASKS else ("mlp",) for task in TASKS}


class ConfigError(ValueError):
    """A config value or combination is not allowed; the message names the field, the value and what is allowed."""


def _f(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field carrying the help text the CLI and the dashboard form show."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class RunConfig:
    # --- task and data -------------------------------------------------------------------------------------------
    task: str = _f("points", "which exercise of the study", choices=TASKS)
    dataset: str | None = _f(None, "data set of the task (points: circles|moons|xor|spirals; mnist, colored_mnist: "
                                   "sample5k|full; regression: diabetes|hetero1d)",
                             choices=tuple(sorted({d for ds in DATASETS.values() for d in ds})))
    n_samples: int | None = _f(None, "samples to generate (points, regression/hetero1d); default 1000")
    noise: float | None = _f(None, "noise of generated data (points, regression/hetero1d); default 0.1 / 1.0")
    class_balance: float | None = _f(None, "share of class 1 in points data, in (0, 1); default 0.5")
    n_colors: int | None = _f(None, "colours in colored_mnist, 3..8; default 3")
    normalize: bool | None = _f(None, "standardise regression inputs and targets (fit on train only); default true")
    data_seed: int = _f(0, "seed of data generation and of the train/val/test split")
    val_fraction: float = _f(0.15, "share of the data held out for validation")
    test_fraction: float = _f(0.15, "share of the data held out for the test split")
    # --- model ---------------------------------------------------------------------------------------------------
    model: str = _f("mlp", "mlp (any task) or cnn (mnist, colored_mnist)", choices=MODELS)
    hidden: tuple[int, ...] | None = _f(None, "mlp hidden widths, e.g. 75 or 100,150; empty = linear model")
    activation: str = _f("relu", "hidden activation", choices=ACTIVATIONS)
    channels: tuple[int, ...] | None = _f(None, "cnn output channels per conv layer; default 10,10,10")
    kernel_sizes: tuple[int, ...] | None = _f(None, "cnn kernel size per conv layer; default 3 for each")
    pool: bool | None = _f(None, "cnn: 2x2 max-pool after each conv layer; default true")
    shared_trunk: bool | None = _f(None, "colored_mnist: one trunk shared by both heads; default false")
    # --- loss and optimisation -----------------------------------------------------------------------------------
    loss: str | None = _f(None, "mse | bce | cross_entropy | gaussian_nll; default per task", choices=LOSSES)
    optimizer: str = _f("adam", "optimizer", choices=OPTIMIZERS)
    lr: float = _f(0.01, "learning rate")
    momentum: float | None = _f(None, "momentum (sgd, rmsprop); default 0")
    nesterov: bool | None = _f(None, "Nesterov momentum (sgd, needs momentum > 0); default false")
    weight_decay: float = _f(0.0, "L2 penalty (adamw: decoupled weight decay)")
    schedule: str = _f("constant", "learning-rate schedule, stepped once per epoch", choices=SCHEDULES)
    min_lr: float | None = _f(None, "cosine: learning rate reached at the last epoch; default 0")
    step_size: int | None = _f(None, "step: epochs between decays; default 10")
    gamma: float | None = _f(None, "step: decay factor; default 0.1")
    grad_clip: float | None = _f(None, "clip the gradient norm to this value; default off")
    batch_size: int = _f(10, "mini-batch size")
    epochs: int = _f(20, "passes over the training split")
    seed: int = _f(0, "seed of initialisation and data order")
    evaluate_test: bool = _f(False, "evaluate the test split after training")

    # ------------------------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        _validate_and_canonicalise(self)

    @property
    def run_id(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    def canonical_json(self) -> str:
        payload = {"engine_version": ENGINE_VERSION, **self.to_dict()}
        return json.dumps(payload, sort_keys=True, separators=(",", ":"))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    def replace(self, **changes: Any) -> "RunConfig":
        return RunConfig.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "RunConfig":
        unknown = sorted(set(data) - FIELD_NAMES)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; allowed keys: {', '.join(sorted(FIELD_NAMES))}")
        return cls(**data)

    @classmethod
    def from_toml(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        try:
            return cls.from_dict(data, source=str(path))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}" if not str(e).startswith(str(path)) else str(e)) from None

    # --- derived facts the rest of the engine asks about -----------------------------------------------------------
    @property
    def is_classification(self) -> bool:
        return self.task in CLASSIFICATION_TASKS

    @property
    def gaussian_head(self) -> bool:
        return self.loss == "gaussian_nll"


FIELD_NAMES = frozenset(f.name for f in fields(RunConfig))



# --- which fields apply where, and which choices are allowed -----------------------------------------------------------
# The choices that decide which other fields apply and which values are allowed; a form asks `applies` and
# `allowed_values` with these (unset ones take their defaults), and validation uses the same rules.
STRUCTURAL = ("task", "dataset", "model", "loss", "optimizer", "schedule")


@dataclass(frozen=True)
class Conditional:
    """A field that only some configs use. Where it does not apply it must stay unset (it is canonicalised to None,
    so it cannot change the run id); where it does, an unset value takes ``default`` (a value, or a function of the
    config)."""
    where: str                       # how an error names the configs it applies to
    when: Callable[[Any], bool]      # of a config, or of the structural choices (attributes task, model, ...)
    default: Any


def _generated(c: Any) -> bool:
    return c.task == "points" or (c.task == "regression" and c.dataset == "hetero1d")


def _cnn(c: Any) -> bool:
    return c.model == "cnn"


CONDITIONAL: dict[str, Conditional] = {
    "n_samples": Conditional("points and regression/hetero1d", _generated, 1000),
    "noise": Conditional("points and regression/hetero1d", _generated,
                         lambda c: 0.1 if c.task == "points" else 1.0),
    "class_balance": Conditional("points", lambda c: c.task == "points", 0.5),
    "n_colors": Conditional("colored_mnist", lambda c: c.task == "colored_mnist", 3),
    "normalize": Conditional("regression", lambda c: c.task == "regression", True),
    "hidden": Conditional("model=mlp", lambda c: c.model == "mlp", lambda c: (75,) if c.task == "points" else (100,)),
    "channels": Conditional("model=cnn", _cnn, (10, 10, 10)),
    "kernel_sizes": Conditional("model=cnn", _cnn, lambda c: (3,) * len(c.channels or ())),
    "pool": Conditional("model=cnn", _cnn, True),
    "shared_trunk": Conditional("colored_mnist", lambda c: c.task == "colored_mnist", False),
    "momentum": Conditional("optimizer sgd or rmsprop", lambda c: c.optimizer in ("sgd", "rmsprop"), 0.0),
    "nesterov": Conditional("optimizer sgd", lambda c: c.optimizer == "sgd", False),
    "min_lr": Conditional("schedule=cosine", lambda c: c.schedule == "cosine", 0.0),
    "step_size": Conditional("schedule=step", lambda c: c.schedule == "step", 10),
    "gamma": Conditional("schedule=step", lambda c: c.schedule == "step", 0.1),
}


def _choices(values: dict[str, Any]) -> SimpleNamespace:
    """The structural choices of ``values``, unset ones at their defaults (the task's first data set and loss)."""
    task = values.get("task") or "points"
    defaults = {"task": task, "dataset": DATASETS.get(task, (None,))[0], "model": "mlp",
                "loss": TASK_LOSSES.get(task, (None,))[0], "optimizer": "adam", "schedule": "constant"}
    return SimpleNamespace(**{k: values.get(k) if values.get(k) is not None else v for k, v in defaults.items()})


def applies(name: str, values: dict[str, Any]) -> bool:
    """Does field ``name`` apply to configs with these structural choices (the other keys are ignored)?"""
    rule = CONDITIONAL.get(name)
    return rule is None or rule.when(_choices(values))


def allowed_values(name: str, values: dict[str, Any]) -> tuple[Any, ...]:
    """The values a choice field may take with these structural choices, its default first where that is fixed
    (a task's data sets and losses); () for a field that is not a choice."""
    c = _choices(values)
    if name == "dataset":
        return DATASETS.get(c.task, ())
    if name == "loss":
        return TASK_LOSSES.get(c.task, ())
    if name == "model":
        return TASK_MODELS.get(c.task, ())
    return next((f.metadata.get("choices") or () for f in fields(RunConfig) if f.name == name), ())


def _set(cfg: RunConfig, name: str, value: Any) -> None:
    object.__setattr__(cfg, name, value)


def _check_type(name: str, value: Any, kind: str) -> Any:
    """Coerce TOML/CLI/form values to the field's type or raise a ConfigError naming the field."""
    if value is None:
        return None
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    if kind == "ints":
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if isinstance(value, str):
            value = [v for v in value.replace(" ", ",").split(",") if v]
            try:
                value = [int(v) for v in value]
            except ValueError:
                raise ConfigError(f"{name} must be a list of integers, got {value!r}") from None
        if not isinstance(value, (list, tuple)) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise ConfigError(f"{name} must be a list of integers, got {value!r}")
        return tuple(value)
    raise AssertionError(kind)


FIELD_KINDS = {
    "task": "str", "dataset": "str", "n_samples": "int", "noise": "float", "class_balance": "float",
    "n_colors": "int", "normalize": "bool", "data_seed": "int", "val_fraction": "float", "test_fraction": "float",
    "model": "str", "hidden": "ints", "activation": "str", "channels": "ints", "kernel_sizes": "ints",
    "pool": "bool", "shared_trunk": "bool", "loss": "str", "optimizer": "str", "lr": "float",
    "momentum": "float", "nesterov": "bool", "weight_decay": "float", "schedule": "str", "min_lr": "float",
    "step_size": "int", "gamma": "float", "grad_clip": "float", "batch_size": "int", "epochs": "int",
    "seed": "int", "evaluate_test": "bool",
}


def _choice(name: str, value: Any, allowed: tuple[str, ...], context: str = "") -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}{context}, got {value!r}")


def _only_for(cfg: RunConfig, name: str) -> None:
    """A field that does not apply must stay unset (it is canonicalised to None); one that does gets its default."""
    rule = CONDITIONAL[name]
    value = getattr(cfg, name)
    if not rule.when(cfg):
        if value is not None:
            raise ConfigError(f"{name} applies only to {rule.where}, got {name}={value!r} here")
        return
    if value is None:
        _set(cfg, name, rule.default(cfg) if callable(rule.default) else rule.default)


def _range(name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
           lo_open: bool = False, hi_open: bool = False) -> None:
    if value is None:
        return
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise ConfigError(f"{name} must be {'>' if lo_open else '>='} {lo:g}, got {value!r}")
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise ConfigError(f"{name} must be {'<' if hi_open else '<='} {hi:g}, got {value!r}")


def _why_not(task: str, loss: str) -> str:
    """Why TASK_LOSSES refuses this loss for this task."""
    if loss == "gaussian_nll":
        return f"loss=gaussian_nll needs task=regression (it predicts a mean and a variance), got task={task}"
    if task == "regression":
        return f"task=regression allows loss {' or '.join(TASK_LOSSES[task])}, got loss={loss}"
    return f"loss={loss} needs a binary task (points); task={task} has 10 classes: use cross_entropy"


def _validate_and_canonicalise(cfg: RunConfig) -> None:
    for name, kind in FIELD_KINDS.items():
        _set(cfg, name, _check_type(name, getattr(cfg, name), kind))

    _choice("task", cfg.task, TASKS)
    task = cfg.task
    if cfg.dataset is None:
        _set(cfg, "dataset", DATASETS[task][0])
    _choice("dataset", cfg.dataset, DATASETS[task], f" for task {task}")

    _only_for(cfg, "n_samples")
    _only_for(cfg, "noise")
    _only_for(cfg, "class_balance")
    _only_for(cfg, "n_colors")
    _only_for(cfg, "normalize")
    _range("n_samples", cfg.n_samples, 20, 1_000_000)
    _range("noise", cfg.noise, 0.0)
    _range("class_balance", cfg.class_balance, 0.0, 1.0, lo_open=True, hi_open=True)
    _range("n_colors", cfg.n_colors, 3, 8)
    _range("data_seed", cfg.data_seed, 0)
    _range("val_fraction", cfg.val_fraction, 0.0, 0.5, lo_open=True)
    _range("test_fraction", cfg.test_fraction, 0.0, 0.5, lo_open=True)

    # --- model ---
    _choice("model", cfg.model, MODELS)
    _choice("activation", cfg.activation, ACTIVATIONS)
    if cfg.model not in TASK_MODELS[task]:
        raise ConfigError(f"model=cnn needs an image task ({', '.join(IMAGE_TASKS)}), got task={task}")
    _only_for(cfg, "hidden")
    if cfg.hidden is not None:
        if len(cfg.hidden) > 16 or any(w < 1 or w > 100_000 for w in cfg.hidden):
            raise ConfigError(f"hidden must list at most 16 widths, each 1..100000, got {list(cfg.hidden)}")
    _only_for(cfg, "channels")
    _only_for(cfg, "kernel_sizes")
    _only_for(cfg, "pool")
    if cfg.model == "cnn":
        if not 1 <= len(cfg.channels) <= 8 or any(c < 1 or c > 1024 for c in cfg.channels):
            raise ConfigError(f"channels must list 1..8 conv layers, each 1..1024 channels, got {list(cfg.channels)}")
        if len(cfg.kernel_sizes) != len(cfg.channels):
            raise ConfigError(f"kernel_sizes must give one size per conv layer ({len(cfg.channels)}), "
                              f"got {list(cfg.kernel_sizes)}")
        if any(k < 1 or k % 2 == 0 or k > 11 for k in cfg.kernel_sizes):
            raise ConfigError(f"kernel_sizes must be odd numbers 1..11 (padding keeps the size), "
                              f"got {list(cfg.kernel_sizes)}")
        if cfg.pool and len(cfg.channels) > 4:
            raise ConfigError(f"with pool=true at most 4 conv layers fit a 28x28 image, got {len(cfg.channels)}")
    _only_for(cfg, "shared_trunk")

    # --- loss ---
    if cfg.loss is None:
        _set(cfg, "loss", TASK_LOSSES[task][0])
    _choice("loss", cfg.loss, LOSSES)
    if cfg.loss not in TASK_LOSSES[task]:
        raise ConfigError(_why_not(task, cfg.loss))

    # --- optimisation ---
    _choice("optimizer", cfg.optimizer, OPTIMIZERS)
    _choice("schedule", cfg.schedule, SCHEDULES)
    _range("lr", cfg.lr, 0.0, 100.0, lo_open=True)
    _only_for(cfg, "momentum")
    _range("momentum", cfg.momentum, 0.0, 1.0, hi_open=True)
    _only_for(cfg, "nesterov")
    if cfg.nesterov and not cfg.momentum:
        raise ConfigError("nesterov=true needs momentum > 0, got momentum=0")
    _range("weight_decay", cfg.weight_decay, 0.0)
    _only_for(cfg, "min_lr")
    _range("min_lr", cfg.min_lr, 0.0)
    if cfg.min_lr is not None and cfg.min_lr > cfg.lr:
        raise ConfigError(f"min_lr must be <= lr ({cfg.lr:g}), got {cfg.min_lr:g}")
    _only_for(cfg, "step_size")
    _only_for(cfg, "gamma")
    _range("step_size", cfg.step_size, 1)
    _range("gamma", cfg.gamma, 0.0, 1.0, lo_open=True)
    _range("grad_clip", cfg.grad_clip, 0.0, lo_open=True)
    _range("batch_size", cfg.batch_size, 1, 65536)
    _range("epochs", cfg.epochs, 1, 10_000)
    _range("seed", cfg.seed, 0)


def config_from_cli_values(values: dict[str, Any]) -> RunConfig:
    """Build a config from parsed CLI flags (unset flags are left out so defaults apply as in a TOML file)."""
    return RunConfig.from_dict({k: v for k, v in values.items() if v is not None})


def field_help() -> dict[str, dict[str, Any]]:
    """Help text, kind, default and choices of every field: shared by the CLI's --help and the dashboard form."""
    out = {}
    for f in fields(RunConfig):
        out[f.name] = {"help": f.metadata["help"], "kind": FIELD_KINDS[f.name], "default": f.default,
                       "choices": f.metadata.get("choices")}
    return out


__all__ = ["RunConfig", "ConfigError", "FIELD_NAMES", "FIELD_KINDS", "field_help", "config_from_cli_values",
           "STRUCTURAL", "CONDITIONAL", "applies", "allowed_values", "TASK_LOSSES", "TASK_MODELS",
           "TASKS", "DATASETS", "MODELS", "ACTIVATIONS", "LOSSES", "OPTIMIZERS", "SCHEDULES", "ENGINE_VERSION"]
