"""The Launch page's config form: one widget per RunConfig field that applies (engine.config.applies), choice
fields offering only the allowed values (engine.config.allowed_values), defaults from the canonical config.
"""
from __future__ import annotations

import math
import re
from typing import Any

import streamlit as st

from engine.config import STRUCTURAL, ConfigError, RunConfig, allowed_values, applies, field_help

GROUPS = (
    ("Task and data", ("task", "dataset", "n_samples", "noise", "class_balance", "n_colors", "normalize",
                       "data_seed", "val_fraction", "test_fraction")),
    ("Model", ("model", "hidden", "activation", "channels", "kernel_sizes", "pool", "shared_trunk")),
    ("Loss and optimisation", ("loss", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "schedule",
                               "min_lr", "step_size", "gamma", "grad_clip", "batch_size", "epochs", "seed",
                               "evaluate_test")),
)


def canonical(values: dict[str, Any]) -> RunConfig | None:
    """The config these values make (defaults filled in), or None when they are not a valid config."""
    try:
        return RunConfig.from_dict(values)
    except ConfigError:
        return None


def config_error(values: dict[str, Any]) -> str | None:
    """The ConfigError message of these values, or None when they make a valid config."""
    try:
        RunConfig.from_dict(values)
    except ConfigError as e:
        return str(e)
    return None


# The form's labels: the words a researcher reads; the config's field name stays in each widget's help.
LABELS = {"n_samples": "Samples", "class_balance": "Class balance", "n_colors": "Colours", "data_seed": "Data seed",
          "val_fraction": "Validation fraction", "test_fraction": "Test fraction", "hidden": "Hidden widths",
          "kernel_sizes": "Kernel sizes", "pool": "Pooling", "shared_trunk": "Shared trunk", "lr": "Learning rate",
          "weight_decay": "Weight decay", "min_lr": "Minimum learning rate", "step_size": "Step size (epochs)",
          "grad_clip": "Gradient clip", "batch_size": "Batch size", "evaluate_test": "Evaluate on test"}


def label(name: str) -> str:
    """The label the form shows for a config field (``lr`` -> "Learning rate"); a title passed as it is shown
    ("Seeds per cell") stays as it is."""
    if not name.isidentifier():
        return name
    return LABELS.get(name) or name.replace("_", " ").capitalize()


def parse_ints(text: str, name: str) -> list[int]:
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"{label(name)} takes whole numbers separated by commas, e.g. 100,150 (empty for none); "
                          f"you typed {text.strip()}") from None


def parse_number(text: str, name: str, kind: str, optional: bool = False, low: float | None = None,
                 high: float | None = None) -> int | float | None:
    """What the user typed in a number field, or a ConfigError in their words: "abc" is not a number, "2.5" is
    not a whole number (never truncated to 2), an empty field is "off" only where the field may be off."""
    raw = text.strip()
    if not raw:
        if optional:
            return None
        raise ConfigError(f"{label(name)} needs a value")
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{label(name)} must be a number (you typed {raw})") from None
    if not math.isfinite(value):
        raise ConfigError(f"{label(name)} must be a finite number (you typed {raw})")
    if kind == "int":
        if not value.is_integer():
            raise ConfigError(f"{label(name)} must be a whole number (you typed {raw})")
        value = int(value)
    if low is not None and value < low:
        raise ConfigError(f"{label(name)} must be >= {low:g} (you typed {raw})")
    if high is not None and value > high:
        raise ConfigError(f"{label(name)} must be <= {high:g} (you typed {raw})")
    return value


_CELL = re.compile(r"cell \{(?P<cell>[^}]*)\} \(seed \d+\) is not a valid config: (?P<inner>.*)$", re.S)
_FIELD_FIRST = re.compile(r"^(?P<field>[a-z_]+)(?P<rest>(?: must| takes| needs|:| =).*?)"
                          r"(?:,? got (?P<got>.+))?$", re.S)


def in_user_words(error: str, typed: dict[str, str] | None = None) -> tuple[str | None, str]:
    """(the config field an engine error is about, the error in the form's words).

    ``lr must be > 0, got -1.0`` -> ("lr", "Learning rate must be > 0 (you typed -1)"), with the text the user
    typed where ``typed`` has it; a study cell's error (``study builder: [factors], factors.lr: cell {lr=-1}
    (seed 0) is not a valid config: ...``) is said about the factor, without the loader's location."""
    typed = dict(typed or {})
    text = re.sub(r"^study builder: ", "", error.strip())
    cell = _CELL.search(text)
    if cell:
        for pair in cell["cell"].split(", "):
            k, _, v = pair.partition("=")
            typed.setdefault(k.strip(), v.strip())
        text = cell["inner"]
    else:
        text = re.sub(r"^(\[factors\], )?factors\.(?=[a-z_]+:)", "", text)
    m = _FIELD_FIRST.match(text)
    if not m or m["field"] not in _fields():
        return None, text[:1].upper() + text[1:]
    name = m["field"]
    rest = m["rest"].lstrip(":= ").strip() if m["rest"].startswith((":", " =")) else m["rest"].strip()
    sep = ": " if m["rest"].startswith((":", " =")) else " "
    got = typed.get(name, m["got"])
    return name, f"{label(name)}{sep}{rest}" + (f" (you typed {got})" if got is not None else "")


def _fields() -> set[str]:
    return set(field_help())



def config_form(prefix: str, skip: tuple[str, ...] = (), columns: int = 4) -> tuple[dict[str, Any], str | None]:
    """Draw one widget per field that applies; return (the values, the first error in the user's words or None).

    The error is also shown under the field it is about. Widget keys carry the task, so switching the task resets
    the form to that task's defaults."""
    info = field_help()
    values: dict[str, Any] = {}
    struct: dict[str, Any] = {}
    errors: list[str] = []
    slots: dict[str, Any] = {}  # under each widget: where its error goes
    typed: dict[str, str] = {}  # what the user typed in each text field, for the messages
    task = st.session_state.get(f"{prefix}.task", "points")
    grouped = {n for _, names in GROUPS for n in names}
    others = tuple(n for n in info if n not in grouped)  # a field added to RunConfig later still gets a widget
    for title, names in GROUPS + ((("Other", others),) if others else ()):
        st.markdown(f"**{title}**")
        cols = st.columns(columns)
        i = 0
        for name in names:
            if name in skip or not applies(name, struct):
                continue
            meta = info[name]
            filled = canonical(struct)
            default = getattr(filled, name) if filled is not None else meta["default"]
            key = f"{prefix}.{name}" if name == "task" else f"{prefix}.{task}.{name}"
            col = cols[i % columns]
            i += 1
            try:
                value = _widget(col, name, meta, default, struct, key, typed)
            except ConfigError as e:
                errors.append(str(e))
                col.error(str(e), icon=":material/error:")  # at the field, in the parser's (the user's) words
                continue
            finally:
                slots[name] = col.empty()
            if value is not None:
                values[name] = value
            if name in STRUCTURAL:
                struct[name] = value
    if errors:
        return values, errors[0]
    error = config_error(values)
    if error is None:
        return values, None
    return values, show_at_field(error, slots, typed)


def show_at_field(error: str, slots: dict[str, Any], typed: dict[str, str] | None = None) -> str:
    """Say an engine error under the field it is about (when that field has a slot here), in the form's words;
    return the message."""
    field, message = in_user_words(error, typed)
    if field in slots:
        slots[field].error(message, icon=":material/error:")
    return message


def _widget(col, name: str, meta: dict, default: Any, struct: dict, key: str, typed: dict[str, str]) -> Any:
    kind, text = meta["kind"], f"`{name}`: {meta['help']}"
    if meta["choices"]:
        options = list(allowed_values(name, struct))
        index = options.index(default) if default in options else 0
        return col.selectbox(label(name), options, index=index, key=key, help=text)
    if kind == "bool":
        return col.checkbox(label(name), value=bool(default), key=key, help=text)
    if kind in ("int", "float"):
        # A text field, not st.number_input: the browser's number box silently reverts "abc" and truncates "2.5"
        # epochs to 2; here what was typed is kept and refused at the field with a reason.
        shown = "" if default is None else f"{default:g}" if kind == "float" else str(int(default))
        raw = col.text_input(label(name), value=shown, key=key, help=text,
                             placeholder="off" if default is None else None)
        typed[name] = raw.strip()
        return parse_number(raw, name, kind, optional=default is None)
    if kind == "ints":
        raw = col.text_input(label(name), value=",".join(map(str, default or ())), key=key,
                             help=text + " (comma-separated; empty for none)")
        typed[name] = raw.strip()
        return parse_ints(raw, name)
    raise AssertionError(kind)


def number_field(col, title: str, key: str, default: float, low: float, high: float, kind: str = "int",
                 help: str | None = None) -> tuple[int | float | None, str | None]:
    """A number field outside the config (seeds, epochs of a study, the time limit): (its value, or None and the
    error said under it in the user's words)."""
    raw = col.text_input(title, value=f"{default:g}", key=key, help=help)
    try:
        return parse_number(raw, title, kind, low=low, high=high), None
    except ConfigError as e:
        col.error(str(e), icon=":material/error:")
        return None, str(e)
