"""The Launch page's queue side: this machine and the queue's limits, idempotent submission, and the live jobs
panel (progress, cancel, run again, links to the runs).

Work runs in the store's supervisor process (engine/jobs/), never in the Streamlit script: the page only writes job
records and reads them back, so reruns, reloads, closed tabs and server restarts lose nothing.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import altair as alt
import streamlit as st

from engine.errors import is_user_error
from engine.jobs import JobQueue, Limits, Submitted, load_limits
from engine.jobs.device import MachineInfo, probe_machine
from engine.jobs.limits import ENV, default_max_running
from engine.jobs.queue import REQUEUEABLE, job_id_for, validate_configs
from engine.jobs.service import ensure_supervisor
from ui.state import get_store, read_only_reason, store_root

PAGES_DIR = Path(__file__).resolve().parents[1] / "pages"
RECENT_JOBS = 8
MAX_CURVE_RUNS = 24
REFRESH_S = 1.5
# Streamlit's bundled Material icons: emoji render as empty boxes where the machine has no emoji font
STATE_ICON = {"queued": ":gray[:material/schedule:]", "running": ":blue[:material/play_circle:]",
              "completed": ":green[:material/check_circle:]", "failed": ":red[:material/error:]",
              "cancelled": ":gray[:material/cancel:]", "timed_out": ":orange[:material/timer_off:]",
              "interrupted": ":orange[:material/warning:]"}



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
    """The queue's limits as the supervisor applies them (its running limit from this machine's devices)."""
    info = machine()
    running = None if os.environ.get(ENV["max_running"]) else default_max_running(len(info.cuda), info.mps,
                                                                                   info.cpu_cores)
    return load_limits(max_running=running, probe=False)


# --- submitting -------------------------------------------------------------------------------------------------------

def submit(kind: str, configs: list, study: str | None, device: str, timeout_s: float,
           spec: str | None = None, ray_address: str | None = None) -> Submitted:
    """Queue once per click: the client token is kept while the submitted content stays the same, so a double
    click (or any rerun that repeats the click) returns the job that already exists."""
    queue = get_queue()
    run_ids = [c.run_id for c in validate_configs(configs)]
    content = job_id_for(kind, run_ids, study, device, float(timeout_s), None, ray_address)
    last = st.session_state.get("launch.last")
    token = last[1] if last is not None and last[0] == content else secrets.token_hex(8)
    st.session_state["launch.last"] = (content, token)
    submitted = queue.submit(kind, configs, study=study, device=device, timeout_s=timeout_s, client_token=token,
                             limits=limits(), spec=spec, ray_address=ray_address)
    ensure_supervisor(queue.root, wait_s=0.5)
    return submitted


def launch_button(label: str, key: str, disabled: bool, do_submit, what: Any = None) -> None:
    """The button, and under it what its last click did (the project's errors as messages, never a traceback).
    The message stays while ``what`` (the form's content) is unchanged and its job has not been cancelled: a
    cancelled job's card says so, and "Queued job ..." above it would contradict it."""
    fingerprint = json.dumps(what, sort_keys=True, default=str)
    read_only = read_only_reason()
    if read_only:
        st.warning(f"Launching is disabled: {read_only}. Every page still reads the store.")
    if st.button(label, type="primary", key=key, disabled=disabled or bool(read_only)):
        try:
            submitted = do_submit()
        except Exception as exc:
            if not is_user_error(exc):
                raise
            message = ("error", str(exc))
        else:
            job = submitted.job
            message = (("success", f"Queued job {job.id}: {job.label}. Its card is under Jobs, with the same id.")
                       if submitted.created else
                       ("info", f"Already launched as job {job.id} ({job.state}); nothing new was queued."))
            message = (*message, job.id)
        st.session_state[f"{key}.message"] = (fingerprint, message)
    shown = st.session_state.get(f"{key}.message")
    if shown is not None and shown[0] == fingerprint:
        kind, text, *job_id = shown[1]
        job = get_queue().get(job_id[0]) if job_id else None
        if job_id and (job is None or job.cancel_requested or job.state == "cancelled"):
            del st.session_state[f"{key}.message"]
        else:
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
    """The sidebar filter of the Curves and Tables pages (``f.<column>``) that selects exactly the job's runs: the
    study, or the run's id (one short filter, not one per config field)."""
    if job.study:
        return {"f.study": job.study}
    return {"f.run_id": job.run_ids[0]}


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
        top[0].markdown(f"{STATE_ICON.get(job.state, '')} **{job.state}** · job `{job.id}` · {job.label} · "
                        f"{job.device}{' → ' + job.device_used if job.device_used else ''} · {_ago(when)}")
        if job.active:
            if top[1].button("Cancel" if not job.cancel_requested else "Cancelling...", key=f"cancel-{job.id}",
                             disabled=job.cancel_requested):
                _cancel(job.id)
                st.rerun(scope="app")  # the whole page: the launch message naming this job is stale now
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
            st.warning(f"The supervisor has not started yet; if this persists, its log says why: "
                       f"`{queue.supervisor_log}`")
    lim = limits()
    who = f"pid {supervisor.get('pid')}" if supervisor else "idle (starts on launch)"
    st.caption(f"{len(active)} active job(s) · at most {lim.max_running} running at once and {lim.max_queued} "
               f"waiting · supervisor: {who}")
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
    """Start the store's supervisor when jobs are queued or marked running and none is alive (after a restart of the
    machine or of `make run`): the supervisor settles what a dead one left and resumes the queue. Cheap when idle: it
    reads the job records (cached by file identity) and probes one lock."""
    queue = get_queue()
    if queue.supervisor() is None and any(j.active for j in queue.jobs()):
        ensure_supervisor(queue.root, wait_s=0.0)
