"""Launch: train one run or a whole study from the page, on this machine's GPU when it has one; watch the jobs live,
cancel them. The work runs in the store's supervisor process, outside this script (see engine/jobs/)."""
from __future__ import annotations

import os
import time

import streamlit as st

from engine.config import RunConfig
from engine.study.builder import study_data, to_toml
from engine.study.ray_executor import RAY_ADDRESS_ENV
from ui import jobs_panel, launch_form, study_builder
from ui.state import ensure_router, guard, store_root

ensure_router()
st.title("Launch")
info = jobs_panel.machine()
with guard("reading the queue's limits"):
    lim = jobs_panel.limits()
st.caption(f"Run store: `{store_root()}` · this machine: " + " · ".join(info.describe())
           + (f" · {info.note}" if info.note else ""))
c = st.columns([2, 1])
device = c[0].selectbox("Device", info.choices(), format_func=lambda d: jobs_panel.device_label(info, d),
                        key="launch.device", help="auto: the CUDA GPU, else Apple's MPS, else the CPU")
timeout_min, limit_error = launch_form.number_field(
    c[1], "Wall-clock limit per job (minutes)", "launch.timeout_min", lim.timeout_s / 60, low=0.1, high=43200.0,
    kind="float", help="A job still running after this long stops as timed_out; finished runs are kept")
timeout_s = 60 * (timeout_min or lim.timeout_s / 60)

ray_address = None
if st.toggle("Train on a Ray cluster", value=bool(os.environ.get(RAY_ADDRESS_ENV)), key="launch.on_ray",
             help="Send the runs' stacks to a cluster started with `ray start` (docs/cluster.md); the job still "
                  "counts against this machine's queue limits, and its epochs reach the store live"):
    ray_address = st.text_input("Ray cluster address", value=os.environ.get(RAY_ADDRESS_ENV, ""),
                                key="launch.ray_address", placeholder="HOST:6379",
                                help=f"As `ray start --head` printed it [default: ${RAY_ADDRESS_ENV}]").strip() or None

one_run, study = st.tabs(["One run", "Study"])

with one_run:
    values, error = launch_form.config_form("run")
    if error is None:
        config = RunConfig.from_dict(values)
        s, error = study_builder.summary_or_error(study_data(f"run-{config.run_id}", base=values, seeds=[config.seed]))
        if s is not None:
            st.info(f"Run id `{config.run_id}`: " + ("already in the store, launching trains nothing" if s["cached"]
                                                      else f"not in the store yet, {study_builder.about_text(s)}"))
        else:
            error = launch_form.in_user_words(error)[1]
    error = limit_error or error
    if error is not None:
        st.error(error)
    jobs_panel.launch_button("Launch run", "launch_run", error is not None,
                             lambda: jobs_panel.submit("run", [values], None, device, timeout_s,
                                                       ray_address=ray_address),
                             what=(values, device, timeout_s, ray_address))

with study:
    if "study.name" not in st.session_state:
        st.session_state["study.name"] = f"launch-{time.strftime('%Y%m%d-%H%M%S')}"
    c = st.columns(3)
    name = c[0].text_input("Study name", key="study.name", help="Runs are recorded under this study name").strip()
    study_builder.warn_if_study_exists(c[0], name)
    seeds, seeds_error = launch_form.number_field(c[1], "Seeds per cell", "study.seeds", 2, low=1, high=100)
    epochs, epochs_error = launch_form.number_field(c[2], "Epochs", "study.epochs", 10, low=1, high=10_000)
    st.markdown("##### Base config")
    base, error = launch_form.config_form("study", skip=("seed", "epochs"))
    base["epochs"] = epochs
    st.markdown("##### Vary")
    factors, factor_error, factor_slots = study_builder.factor_inputs("study", base)
    error = limit_error or seeds_error or epochs_error or error or factor_error or (None if name else "Give the study a name")
    data = study_data(name, study_builder.minimal_base(base), factors, seeds or 1)
    s = None
    if error is None:
        s, error = study_builder.summary_or_error(data)
        if error is not None:
            error = launch_form.show_at_field(error, factor_slots)
    if error is not None:
        st.error(error)
    else:
        st.info(study_builder.summary_text(s))
    jobs_panel.launch_button("Launch study", "launch_study", error is not None,
                             lambda: jobs_panel.submit("study", s["spec"].configs(), s["spec"].study_name, device,
                                                       timeout_s, spec=to_toml(data), ray_address=ray_address),
                             what=(data, device, timeout_s, ray_address))

st.subheader("Jobs")
jobs_panel.fragment_jobs_panel()
