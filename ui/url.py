"""Widgets whose value lives in the URL (``st.query_params``), so that a link reproduces a view.

Each helper reads its initial value from the URL (ignoring values that are not valid options), draws the widget,
and writes the chosen value back; a value equal to the default is removed from the URL to keep links short.
Keys are short and stable: they are part of the links users share.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st

# An empty multiselect written to the URL as this, where an empty URL would bring a page's default back.
EVERYTHING = "*"
_NOTICES = "_url_notices"


def start_notices() -> None:
    """Reserve the top of the page for the notice that names URL values this page could not use. Called once per
    run, before any URL widget (ui.page.load_runs); pages without it get the notice beside the widget."""
    st.session_state[_NOTICES] = (st.empty(), [])


def clear_notices() -> None:
    st.session_state.pop(_NOTICES, None)


def ignored(key: str, values: Sequence[str], fallback: str) -> None:
    """Say which URL values were not used, and what is shown instead, rather than widening the view silently."""
    if not values:
        return
    text = f"`{key}={', '.join(values)}` in the link is not among the choices here: ignored, showing {fallback}."
    area, seen = st.session_state.get(_NOTICES, (None, None))
    if area is None:
        st.warning(text, icon="⚠️")
        return
    seen.append(text)
    area.warning("  \n".join(seen), icon="⚠️")


def get_all(key: str) -> list[str]:
    return list(st.query_params.get_all(key))


def get(key: str, default: str | None = None) -> str | None:
    values = get_all(key)
    return values[-1] if values else default


def put(key: str, value: Any, default: Any = None) -> None:
    """Write a value (str, number, bool or list of those) to the URL, or remove it when it equals the default."""
    if value is None or value == default or (isinstance(value, (list, tuple)) and not value):
        if key in st.query_params:
            del st.query_params[key]
        return
    if isinstance(value, bool):
        new: str | list[str] = "1" if value else "0"
    elif isinstance(value, (list, tuple)):
        new = [str(v) for v in value]
    else:
        new = str(value)
    current = get_all(key)
    if (current if isinstance(new, list) else (current[-1] if current else None)) != new:
        st.query_params[key] = new


def _from_url(label: str, options: list[Any], key: str, default: Any, format_func: Callable[[Any], str],
              to_url: Callable[[Any], str]) -> Any:
    """The option the URL names; the default (said so) when it names none of them."""
    by_url = {to_url(o): o for o in options}
    fallback = default if default in options else options[0]
    raw = get(key)
    if raw is not None and raw not in by_url:
        ignored(key, [raw], f"{label.lower()} {format_func(fallback)}")
    return by_url.get(raw or "", fallback)


def _seed(widget_key: str, chosen: Any, valid: Callable[[Any], bool]) -> None:
    """Give the widget its starting value through the session state (not ``index=``/``default=``): a value set
    there reaches the browser even when the widget already exists, so a default that changes (another study, a
    "best two" button) is shown, not just returned."""
    if widget_key not in st.session_state or not valid(st.session_state[widget_key]):
        st.session_state[widget_key] = chosen


def defaults_follow(scope: str, keys: Sequence[str], clear_url: Sequence[str] = ()) -> None:
    """Let these widgets take their (new) defaults afresh when ``scope`` changes (another study on show brings its
    own metric and factors), instead of keeping what the last study's defaults were. Values in the URL still win,
    except those of ``clear_url`` (picks that belonged to the old scope, such as the runs compared)."""
    memo = f"_scope_{','.join(keys)}"
    if st.session_state.get(memo) not in (None, scope):
        for k in keys:
            st.session_state.pop(f"url_{k}", None)
        for k in clear_url:
            if k in st.query_params:
                del st.query_params[k]
    st.session_state[memo] = scope


def selectbox(label: str, options: Sequence[Any], key: str, default: Any = None,
              format_func: Callable[[Any], str] = str, to_url: Callable[[Any], str] = str,
              widget_key: str | None = None, **kw: Any) -> Any:
    """``widget_key`` (default ``url_<key>``): give it a part that changes when the default should apply afresh."""
    options = list(options)
    if not options:
        return None
    widget_key = widget_key or f"url_{key}"
    _seed(widget_key, _from_url(label, options, key, default, format_func, to_url), options.__contains__)
    value = st.selectbox(label, options, format_func=format_func, key=widget_key, **kw)
    put(key, None if value is None else to_url(value), None if default is None else to_url(default))
    return value


def radio(label: str, options: Sequence[Any], key: str, default: Any = None,
          format_func: Callable[[Any], str] = str, widget_key: str | None = None, **kw: Any) -> Any:
    """``widget_key`` (default ``url_<key>``): give it a part that changes when the default should apply afresh."""
    options = list(options)
    widget_key = widget_key or f"url_{key}"
    _seed(widget_key, _from_url(label, options, key, default, format_func, str), options.__contains__)
    value = st.radio(label, options, format_func=format_func, key=widget_key, horizontal=True, **kw)
    put(key, str(value), str(default if default in options else options[0]))
    return value


def multiselect(label: str, options: Sequence[Any], key: str, default: Sequence[Any] = (),
                format_func: Callable[[Any], str] = str, to_url: Callable[[Any], str] = str,
                max_selections: int | None = None, keep_empty: bool = False, **kw: Any) -> list[Any]:
    """``keep_empty``: an emptied selection is written to the URL (as ``*``) instead of removed, for widgets whose
    page would otherwise bring its default back on the next load."""
    options = list(options)
    by_url = {to_url(o): o for o in options}
    in_url = [v for v in get_all(key) if v != EVERYTHING]
    unknown = [v for v in in_url if v not in by_url]
    chosen = [by_url[v] for v in in_url if v in by_url] if in_url else (
        [] if get_all(key) else [d for d in default if d in options])
    if unknown:
        ignored(key, unknown, ", ".join(format_func(c) for c in chosen) if chosen else f"all ({label.lower()})")
    if max_selections:
        chosen = chosen[:max_selections]
    _seed(f"url_{key}", chosen, lambda v: isinstance(v, list) and all(o in options for o in v)
          and (not max_selections or len(v) <= max_selections))
    value = st.multiselect(label, options, format_func=format_func, key=f"url_{key}",
                           max_selections=max_selections, **kw)
    if keep_empty and not value:
        put(key, EVERYTHING)
    else:
        put(key, [to_url(v) for v in value], [to_url(d) for d in default if d in options])
    return value


def toggle(label: str, key: str, default: bool = False, **kw: Any) -> bool:
    raw = get(key)
    initial = default if raw not in ("0", "1") else raw == "1"
    value = st.toggle(label, value=initial, key=f"url_{key}", **kw)
    put(key, bool(value), bool(default))
    return value


def slider(label: str, key: str, min_value: float, max_value: float, default: float, step: float,
           **kw: Any) -> float:
    try:
        initial = float(get(key, str(default)))
    except ValueError:
        initial = default
    initial = min(max(initial, min_value), max_value)
    value = st.slider(label, min_value=min_value, max_value=max_value, value=initial, step=step, key=f"url_{key}",
                      **kw)
    put(key, round(float(value), 6), default)
    return value


def text_area(label: str, key: str, default: str = "", **kw: Any) -> str:
    _seed(f"url_{key}", get(key, default), lambda v: isinstance(v, str))
    value = st.text_area(label, key=f"url_{key}", **kw)
    put(key, value, default)
    return value


def set_value(key: str, value: Any) -> None:
    """Put a value in the URL and into its widget (a button that loads an example, picks runs): the widget shows it
    on the next run."""
    st.session_state.pop(f"url_{key}", None)
    put(key, value)
