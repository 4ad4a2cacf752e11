"""The Launch page's pieces: the config form (built from RunConfig.field_help(), offering only what applies and
only valid choices), the study builder, the launch summary, idempotent submission and the live jobs panel.

Work runs in the store's supervisor process (engine/jobs/worker.py), never in the Streamlit script: the page only
writes job records and reads them back, so reruns, reloads, closed tabs and server restarts lose nothing.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import time
from pathlib import Path
from typing import Any

import altair as alt
import streamlit as st

from engine.config import STRUCTURAL, ConfigError, RunConfig, allowed_values, applies, field_help
from engine.errors import is_user_error
from engine.jobs import JobQueue, Limits, Submitted, load_limits
from engine.jobs.device import MachineInfo, probe_machine
from engine.jobs.limits import ENV, default_max_running
from engine.jobs.queue import REQUEUEABLE, job_id_for, validate_configs
from engine.study.builder import expand, format_duration, plan_study, study_data, to_toml
from engine.jobs.worker import ensure_supervisor
from ui.state import get_store, store_root

GROUPS = (
    ("Task and data", ("task", "dataset", "n_samples", "noise", "class_balance", "n_colors", "normalize",
                       "data_seed", "val_fraction", "test_fraction")),
    ("Model", ("model", "hidden", "activation", "channels", "kernel_sizes", "pool", "shared_trunk")),
    ("Loss and optimisation", ("loss", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "schedule",
                               "min_lr", "step_size", "gamma", "grad_clip", "batch_size", "epochs", "seed",
                               "evaluate_test")),
)
NOT_FACTORS = ("task", "model", "seed")  # they change which fields apply: pick them in the base config
PAGES_DIR = Path(__file__).resolve().parents[1] / "pages"
RECENT_JOBS = 8
MAX_CURVE_RUNS = 24
REFRESH_S = 1.5
STATE_ICON = {"queued": "⏳", "running": "▶️", "completed": "✅", "failed": "❌", "cancelled": "⏹️",
              "timed_out": "⌛", "interrupted": "⚠️"}


# --- what applies, what is valid ----------------------------------------------------------------------------------

def _try(values: dict[str, Any]) -> tuple[RunConfig | None, str | None]:
    try:
        return RunConfig.from_dict(values), None
    except ConfigError as e:
        return None, str(e)


def _fmt_number(v: float) -> str:
    return f"{v:g}"


def parse_ints(text: str, name: str) -> list[int]:
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"{name} must be integers separated by commas, e.g. 100,150 (empty for none), "
                          f"got {text!r}") from None


# --- the config form ----------------------------------------------------------------------------------------------

def config_form(prefix: str, skip: tuple[str, ...] = (), columns: int = 4) -> tuple[dict[str, Any], str | None]:
    """Draw one widget per field that applies; return (the values, the ConfigError message or None).

    Widget keys carry the task, so switching the task resets the form to that task's defaults."""
    info = field_help()
    values: dict[str, Any] = {}
    struct: dict[str, Any] = {}
    errors: list[str] = []
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
            canonical, _ = _try(struct)
            default = getattr(canonical, name) if canonical is not None else meta["default"]
            key = f"{prefix}.{name}" if name == "task" else f"{prefix}.{task}.{name}"
            col = cols[i % columns]
            i += 1
            try:
                value = _widget(col, name, meta, default, struct, key)
            except ConfigError as e:
                errors.append(str(e))
                continue
            if value is not None:
                values[name] = value
            if name in STRUCTURAL:
                struct[name] = value
    if errors:
        return values, errors[0]
    _, err = _try(values)
    return values, err


def _widget(col, name: str, meta: dict, default: Any, struct: dict, key: str) -> Any:
    kind, text = meta["kind"], meta["help"]
    if meta["choices"]:
        options = list(allowed_values(name, struct))
        index = options.index(default) if default in options else 0
        return col.selectbox(name, options, index=index, key=key, help=text)
    if kind == "bool":
        return col.checkbox(name, value=bool(default), key=key, help=text)
    if kind == "int":
        return int(col.number_input(name, value=int(default) if default is not None else None, step=1, key=key,
                                    help=text))
    if kind == "float":
        value = col.number_input(name, value=float(default) if default is not None else None, format="%g",
                                 step=_step(name, default), key=key, help=text,
                                 placeholder="off" if default is None else None)
        return None if value is None else float(value)
    if kind == "ints":
        raw = col.text_input(name, value=",".join(map(str, default or ())), key=key,
                             help=text + " (comma-separated; empty for none)")
        return parse_ints(raw, name)
    raise AssertionError(kind)


def _step(name: str, default: Any) -> float:
    if isinstance(default, (int, float)) and default and default > 0:
        return float(f"{10 ** math.floor(math.log10(default)):g}")
    return 0.01 if name in ("lr", "min_lr") else 0.1


# --- the study builder ----------------------------------------------------------------------------------------------

def minimal_base(values: dict[str, Any]) -> dict[str, Any]:
    """The study's [base]: the task, and only the values that differ from what RunConfig would fill in anyway.
    Defaults are then filled per cell, so varying a structural factor (optimizer adam|sgd, schedule, dataset) does
    not carry fields that applied to the base's choice only (sgd's momentum into the adam cells)."""
    struct = {k: values[k] for k in STRUCTURAL if k in values}
    canonical, _ = _try(struct)
    if canonical is None:
        return dict(values)
    defaults = canonical.to_dict()
    return {k: v for k, v in values.items() if k == "task" or v != defaults.get(k)}


def parse_numbers(text: str, name: str, kind: str) -> list[Any]:
    out = []
    for p in [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p]:
        try:
            v = float(p)
        except ValueError:
            raise ConfigError(f"{name}: {p!r} is not a number; write values separated by commas") from None
        if kind == "int":
            if not v.is_integer():
                raise ConfigError(f"{name} takes integers, got {p}")
            v = int(v)
        out.append(v)
    if not out:
        raise ConfigError(f"{name}: give at least one value")
    return out


def factor_inputs(prefix: str, base: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Pick the fields to vary and their values (multi-selects for choices, lists or ranges for numbers)."""
    info = field_help()
    struct = {k: base[k] for k in STRUCTURAL if k in base}
    candidates = [n for n in info if n not in NOT_FACTORS and applies(n, struct)]
    chosen = st.multiselect("Factors to vary", candidates, key=f"{prefix}.factors",
                            help="Each factor's values multiply the number of cells; every cell runs once per seed.")
    factors: dict[str, Any] = {}
    for name in chosen:
        meta = info[name]
        kind = meta["kind"]
        key = f"{prefix}.f.{name}"
        cols = st.columns([1.2, 3])
        cols[0].markdown(f"**{name}**", help=meta["help"])
        with cols[1]:
            try:
                if meta["choices"]:
                    options = list(allowed_values(name, {k: v for k, v in struct.items() if k != name}))
                    default = [base[name]] if base.get(name) in options else options[:1]
                    factors[name] = st.multiselect(name, options, default=default, key=key,
                                                   label_visibility="collapsed")
                elif kind == "bool":
                    factors[name] = st.multiselect(name, [False, True], default=[False, True], key=key,
                                                   format_func=lambda b: "true" if b else "false",
                                                   label_visibility="collapsed")
                elif kind == "ints":
                    default = ",".join(map(str, base.get(name) or ())) or "none"
                    raw = st.text_input(name, value=default, key=key, label_visibility="collapsed",
                                        placeholder="75; 100,150; none",
                                        help="lists separated by ';', each comma-separated; 'none' for an empty "
                                             "list (hidden: the linear model)")
                    factors[name] = [[] if p.strip().lower() in ("none", "linear") else parse_ints(p.strip(), name)
                                     for p in raw.split(";") if p.strip()]
                else:
                    factors[name] = _numeric_factor(name, kind, base.get(name), key)
            except ConfigError as e:
                return factors, str(e)
        if isinstance(factors.get(name), list) and not factors[name]:
            return factors, f"{name}: pick at least one value (or stop varying it)"
    return factors, None


def _numeric_factor(name: str, kind: str, base_value: Any, key: str) -> Any:
    how = st.radio(name, ["values", "range", "log range"], key=f"{key}.how", horizontal=True,
                   label_visibility="collapsed")
    if how == "values":
        default = _fmt_number(base_value) if base_value is not None else ""
        raw = st.text_input(f"{name} values", value=default, key=f"{key}.values", label_visibility="collapsed",
                            placeholder="values separated by commas")
        return parse_numbers(raw, name, kind)
    c = st.columns(3)
    lo_default = float(base_value) if isinstance(base_value, (int, float)) and base_value else 1.0
    lo = c[0].number_input("from", value=lo_default / (10 if how == "log range" else 1), format="%g",
                           key=f"{key}.{how}.lo")
    hi = c[1].number_input("to", value=lo_default * (10 if how == "log range" else 2), format="%g",
                           key=f"{key}.{how}.hi")
    num = c[2].number_input("values", min_value=1, max_value=1000, value=3, step=1, key=f"{key}.{how}.num")
    return {"log_range" if how == "log range" else "range": [lo, hi], "num": int(num)}


# --- summary of what a launch trains --------------------------------------------------------------------------------

@st.cache_data(show_spinner=False, ttl=600, max_entries=64)
def _estimate(spec_text: str, root: str) -> tuple[int, float | None, str]:
    """(missing runs when estimated, seconds, source): calibration trains a few steps, so it is cached by the spec
    alone for a while rather than redone whenever the store changes."""
    spec = expand(json.loads(spec_text))
    plan = plan_study(spec, get_store(), estimate=True)
    src = " and ".join(f"{'stored epoch times' if s == 'store' else 'a calibration'}"
                       for s in plan.estimate_sources) or "nothing to train"
    return len(plan.missing), plan.estimate_s, src


@st.cache_data(show_spinner=False, max_entries=64)
def _cached_count(spec_text: str, version: str, root: str) -> int:
    spec = expand(json.loads(spec_text))
    plan = plan_study(spec, get_store(), estimate=False)
    return len(plan.cached)


def summary(data: dict[str, Any]) -> dict[str, Any]:
    """Cells, runs, cached, to train and the time estimate of a study spec (StudyError when it is invalid)."""
    spec = expand(data)
    text = json.dumps(data, sort_keys=True)
    root = store_root()
    cached = _cached_count(text, get_store().version(), root)
    missing = len(spec.runs) - cached
    est_missing, est_s, source = _estimate(text, root)
    if est_s is not None and est_missing:
        est_s = est_s * missing / est_missing  # runs finished since the estimate no longer count
    return {"spec": spec, "cells": len(spec.cell_labels()), "seeds": len(spec.seeds), "runs": len(spec.runs),
            "cached": cached, "missing": missing, "estimate_s": est_s if missing else 0.0, "source": source}


def about_text(s: dict[str, Any]) -> str:
    if not s["missing"]:
        return "nothing to train"
    return f"about {format_duration(s['estimate_s'])}" if s["estimate_s"] is not None else "time unknown"


def summary_or_error(data: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """``summary`` of a study spec, or the message of the project's error that stops it (a bad study, a damaged
    store). Bugs keep their traceback."""
    try:
        return summary(data), None
    except Exception as e:
        if not is_user_error(e):
            raise
        return None, str(e)


def summary_text(s: dict[str, Any]) -> str:
    cells = f"{s['cells']} cell{'s' if s['cells'] != 1 else ''}"
    runs = f"{s['runs']} run{'s' if s['runs'] != 1 else ''}"
    return (f"{cells} × {s['seeds']} seed{'s' if s['seeds'] != 1 else ''} = {runs}, {s['cached']} cached, "
            f"{s['missing']} to train, {about_text(s)}")


# --- machine, limits --------------------------------------------------------------------------------------------------

@st.cache_resource(show_spinner="Looking at this machine's devices...")
def machine() -> MachineInfo:
    return probe_machine()


def device_label(info: MachineInfo, device: str) -> str:
    if device == "auto":
        resolved = info.default_device
        name = next((d.label for d in info.cuda), None) if resolved == "cuda" else resolved
        return f"auto ({name})"
    if device.startswith("cuda:"):
        return next((d.label for d in info.cuda if f"cuda:{d.index}" == device), device)
    if device == "cpu":
        return f"cpu ({info.cpu_cores} cores)"
    return device


def get_queue() -> JobQueue:
    return JobQueue(store_root())


def limits() -> Limits:
    """The queue's limits as the worker applies them (its running limit from this machine's devices)."""
    info = machine()
    running = None if os.environ.get(ENV["max_running"]) else default_max_running(len(info.cuda), info.mps,
                                                                                   info.cpu_cores)
    return load_limits(max_running=running, probe=False)


# --- submitting -------------------------------------------------------------------------------------------------------

def submit(kind: str, configs: list, study: str | None, device: str, timeout_s: float,
           spec: str | None = None) -> Submitted:
    """Queue once per click: the client token is kept while the submitted content stays the same, so a double
    click (or any rerun that repeats the click) returns the job that already exists."""
    queue = get_queue()
    run_ids = [c.run_id for c in validate_configs(configs)]
    content = job_id_for(kind, run_ids, study, device, float(timeout_s), None)
    last = st.session_state.get("launch.last")
    token = last[1] if last is not None and last[0] == content else secrets.token_hex(8)
    st.session_state["launch.last"] = (content, token)
    submitted = queue.submit(kind, configs, study=study, device=device, timeout_s=timeout_s, client_token=token,
                             limits=limits(), spec=spec)
    ensure_supervisor(queue.root, wait_s=0.5)
    return submitted


def launch_button(label: str, key: str, disabled: bool, do_submit, what: Any = None) -> None:
    """The button, and under it what its last click did (the project's errors as messages, never a traceback).
    The message stays while ``what`` (the form's content) is unchanged."""
    fingerprint = json.dumps(what, sort_keys=True, default=str)
    if st.button(label, type="primary", key=key, disabled=disabled):
        try:
            submitted = do_submit()
        except Exception as exc:
            if not is_user_error(exc):
                raise
            message = ("error", str(exc))
        else:
            job = submitted.job
            message = (("success", f"Queued job {job.id}: {job.label}.") if submitted.created else
                       ("info", f"Already launched as job {job.id} ({job.state}); nothing new was queued."))
        st.session_state[f"{key}.message"] = (fingerprint, message)
    shown = st.session_state.get(f"{key}.message")
    if shown is not None and shown[0] == fingerprint:
        kind, text = shown[1]
        getattr(st, kind)(text)


# --- the jobs panel ---------------------------------------------------------------------------------------------------

def _cancel(job_id: str) -> None:
    try:
        get_queue().cancel(job_id)
    except Exception as exc:
        if not is_user_error(exc):
            raise
        st.session_state["jobs.message"] = str(exc)


def _requeue(job_id: str) -> None:
    try:
        queue = get_queue()
        queue.requeue(job_id, limits=limits())
        ensure_supervisor(queue.root, wait_s=0.5)
    except Exception as exc:
        if not is_user_error(exc):
            raise
        st.session_state["jobs.message"] = str(exc)


def _ago(t: float | None) -> str:
    if not t:
        return ""
    s = max(0.0, time.time() - t)
    return f"{s:.0f}s ago" if s < 90 else f"{s / 60:.0f} min ago" if s < 5400 else f"{s / 3600:.1f} h ago"


def _link_params(job) -> dict[str, str]:
    """Sidebar filters of the Curves and Tables pages (``f.<column>``) that select exactly the job's runs."""
    from ui.filters import fmt
    if job.study:
        return {"f.study": job.study}
    config = job.configs[0]
    return {f"f.{k}": fmt(tuple(v) if isinstance(v, list) else v) for k, v in config.items() if v is not None}


def _links(job) -> None:
    params = _link_params(job)
    cols = st.columns(3)
    for col, (script, title) in zip(cols, (("curves.py", "Curves"), ("tables.py", "Tables"))):
        with col:
            try:  # an absolute path: the router may live anywhere (a test's stand-in router, say)
                st.page_link(str(PAGES_DIR / script), label=f"Open in {title}", query_params=params)
            except Exception:  # the page is not registered (this page run on its own): a plain link instead
                from html import escape
                from urllib.parse import urlencode
                href = escape(f"./{title.lower()}?{urlencode(params)}")
                st.markdown(f'<a href="{href}" target="_self">Open in {title}</a>', unsafe_allow_html=True)
    if job.kind == "run":
        with cols[2]:
            st.caption(f"run id `{job.run_ids[0]}`")


def _curve(job) -> None:
    from engine import queries
    run_ids = list(job.run_ids[:MAX_CURVE_RUNS])
    try:
        df = queries.curves(get_store(), run_ids, ["val_loss"])
    except Exception as exc:
        if is_user_error(exc):
            return  # no epoch logged yet (the metric column does not exist): nothing to draw
        raise
    if df.empty:
        return
    chart = (alt.Chart(df).mark_line(point=len(df) < 60).encode(
        x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y("val_loss:Q", title="val loss"),
        color=alt.Color("run_id:N", legend=None), tooltip=["run_id", "epoch", "val_loss"])
        .properties(height=140))
    st.altair_chart(chart)


def job_card(job) -> None:
    with st.container(border=True, key=f"job-{job.id}"):
        top = st.columns([6, 1.2])
        when = job.finished_at or job.started_at or job.created_at
        top[0].markdown(f"{STATE_ICON.get(job.state, '')} **{job.state}** · `{job.id}` · {job.label} · "
                        f"{job.device}{' → ' + job.device_used if job.device_used else ''} · {_ago(when)}")
        if job.active:
            top[1].button("Cancel" if not job.cancel_requested else "Cancelling...", key=f"cancel-{job.id}",
                          on_click=_cancel, args=(job.id,), disabled=job.cancel_requested)
        elif job.state in REQUEUEABLE:
            top[1].button("Run again", key=f"requeue-{job.id}", on_click=_requeue, args=(job.id,),
                          help="Queue it again: runs it finished are cached and do not train again")
        pct = round(100 * job.fraction)
        st.progress(job.fraction, text=f"{pct}% · {job.progress_done}/{job.progress_total} run-epochs · "
                                       f"{job.n_runs} run{'s' if job.n_runs != 1 else ''}")
        if job.error and job.state != "completed":
            (st.caption if job.state in ("cancelled",) else st.warning)(job.error)
        if job.state == "running":
            _curve(job)
        if not job.active:
            _links(job)


def jobs_panel() -> None:
    """Every queued and running job and the most recent finished ones, refreshed every REFRESH_S seconds."""
    queue = get_queue()
    jobs = queue.jobs()
    active = [j for j in jobs if j.active]
    finished = sorted((j for j in jobs if not j.active), key=lambda j: j.finished_at or 0, reverse=True)
    supervisor = queue.supervisor()
    if active and supervisor is None:
        supervisor = ensure_supervisor(queue.root, wait_s=0.5)
        if supervisor is None:
            st.warning(f"The worker has not started yet; if this persists, its log says why: `{queue.worker_log}`")
    lim = limits()
    st.caption(f"{len(active)} active job(s) · at most {lim.max_running} running at once and {lim.max_queued} "
               f"waiting · worker: {'pid ' + str(supervisor.get('pid')) if supervisor else 'idle (starts on launch)'}")
    message = st.session_state.pop("jobs.message", None)
    if message:
        st.error(message)
    if not jobs:
        st.info("No jobs yet: launch a run or a study above.")
        return
    for job in active:
        job_card(job)
    if finished:
        st.markdown("**Finished**")
        for job in finished[:RECENT_JOBS]:
            job_card(job)


def fragment_jobs_panel() -> None:
    st.fragment(run_every=REFRESH_S)(jobs_panel)()


def resume_queue() -> None:
    """Start the store's worker when jobs are queued or marked running and none is alive (after a restart of the
    machine or of `make run`): the worker settles what a dead one left and resumes the queue. Cheap when idle: it
    reads the job records (cached by file identity) and probes one lock."""
    queue = get_queue()
    if queue.supervisor() is None and any(j.active for j in queue.jobs()):
        ensure_supervisor(queue.root, wait_s=0.0)


__all__ = ["config_form", "factor_inputs", "minimal_base", "summary", "summary_text", "about_text", "submit", "launch_button",
           "machine", "device_label", "limits", "jobs_panel", "fragment_jobs_panel", "resume_queue", "study_data",
           "to_toml"]
