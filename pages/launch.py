"""Launch: train one run or a whole study from the page, on this machine's GPU when it has one; watch the jobs live,
cancel them. The work runs in the store's supervisor process, outside this script (see engine/jobs/)."""
from __future__ import annotations

import time

import streamlit as st

from engine.config import RunConfig
from engine.study.builder import study_data, to_toml
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
timeout_s = 60 * c[1].number_input("Wall-clock limit per job (minutes)", min_value=0.1, max_value=43200.0,
                                   value=lim.timeout_s / 60, format="%g", key="launch.timeout_min",
                                   help="A job still running after this long stops as timed_out; finished runs "
                                        "are kept")

one_run, study = st.tabs(["One run", "Study"])

with one_run:
    values, error = launch_form.config_form("run")
    if error is None:
        config = RunConfig.from_dict(values)
        s, error = study_builder.summary_or_error(study_data(f"run-{config.run_id}", base=values, seeds=[config.seed]))
        if s is not None:
            st.info(f"Run `{config.run_id}`: " + ("already in the store, launching trains nothing" if s["cached"]
                                                   else f"not in the store yet, {study_builder.about_text(s)}"))
    if error is not None:
        st.error(error)
    jobs_panel.launch_button("Launch run", "launch_run", error is not None,
                             lambda: jobs_panel.submit("run", [values], None, device, timeout_s),
                             what=(values, device, timeout_s))

with study:
    if "study.name" not in st.session_state:
        st.session_state["study.name"] = f"launch-{time.strftime('%Y%m%d-%H%M%S')}"
    c = st.columns(3)
    name = c[0].text_input("Study name", key="study.name", help="Runs are recorded under this study name")
    seeds = int(c[1].number_input("Seeds per cell", min_value=1, max_value=100, value=2, step=1, key="study.seeds"))
    epochs = int(c[2].number_input("Epochs", min_value=1, max_value=10_000, value=10, step=1, key="study.epochs"))
    st.markdown("##### Base config")
    base, error = launch_form.config_form("study", skip=("seed", "epochs"))
    base["epochs"] = epochs
    st.markdown("##### Vary")
    factors, factor_error = study_builder.factor_inputs("study", base)
    error = error or factor_error
    data = study_data(name, study_builder.minimal_base(base), factors, seeds)
    s = None
    if error is None:
        s, error = study_builder.summary_or_error(data)
    if error is not None:
        st.error(error)
    else:
        st.info(study_builder.summary_text(s))
    jobs_panel.launch_button("Launch study", "launch_study", error is not None,
                             lambda: jobs_panel.submit("study", s["spec"].configs(), s["spec"].study_name, device,
                                                       timeout_s, spec=to_toml(data)),
                             what=(data, device, timeout_s))

st.subheader("Jobs")
jobs_panel.fragment_jobs_panel()
