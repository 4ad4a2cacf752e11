"""Ablation Lab's dashboard: `streamlit run dashboard.py` (or `make run`). This file is the router and the
Overview page; the other pages live in pages/, shared pieces in ui/, everything else in engine/."""
from __future__ import annotations


import streamlit as st

from ui import charts, curation, data, demo
from ui.outcomes import what_happened
from ui.overview import full_height, show_studies, studies_table
from ui.page import show_problems
from ui.state import get_store, guard, store_root, store_version

RECENT = 15


def overview() -> None:
    st.title("Ablation Lab")
    root, version = store_root(), store_version()
    st.caption(f"Run store: `{root}`")
    with guard("reading the store"):
        runs = data.runs(version, root)
        counts = data.status_counts(version, root)
        studies = data.study_progress(version, root)
    show_problems(data.problems(runs))

    if runs.empty:
        st.info("The store has no runs yet. Train some from a terminal (`python -m engine study run "
                "studies/<file>.toml --quick`, or `python -m engine train --help`), or run the quick demo study "
                f"here: {demo.describe()}.")
        if st.button("Run the quick demo study", type="primary", key="run_demo"):
            with st.spinner("Training the demo study..."), guard("running the demo study"):
                message = demo.run_demo(get_store())
            st.success(message + ". Open **Curves** or **Tables** to compare them.")
            st.rerun()
        return

    # Every status has its count, so that they add up to the runs.
    cols = st.columns(len(counts) + 1)
    cols[0].metric("runs", f"{len(runs):,}")
    for col, (status, n) in zip(cols[1:], zip(counts["status"], counts["n"])):
        col.metric(status.replace("_", " "), f"{int(n):,}")

    left, right = st.columns(2)
    with left:
        st.subheader("Runs by status")
        st.altair_chart(charts.status_bars(counts[counts["n"] > 0]))
    with right:
        st.subheader("Tasks")
        tasks = (runs.groupby(["task", "dataset"], dropna=False).agg(runs=("run_id", "count"))
                 .reset_index().sort_values("runs", ascending=False))
        st.dataframe(tasks, hide_index=True)

    st.subheader("Studies")
    if studies.empty:
        st.caption("No studies recorded: these runs were trained one by one (`python -m engine train`).")
    else:
        st.caption("Newest first. The best cell is the mean over seeds of the study's headline metric; the links "
                   "open each page on the study.")
        show_studies(curation.with_study_notes(studies_table(runs, studies)))
        curation.studies_panel(studies, runs)  # tags, note, exclusion or deletion of a study

    st.subheader("Recent runs")
    headline = [c for c in ("final_val_accuracy", "final_val_loss", "final_val_mse", "final_val_nll") if c in runs]
    show = ["run_id", "status", "what happened", "started_at", "task", "dataset", "activation", "optimizer", "loss",
            "lr"] + headline
    recent = runs.sort_values("started_at", ascending=False, na_position="last").head(RECENT)
    recent = recent.assign(**{"what happened": recent.apply(what_happened, axis=1)})
    st.dataframe(recent[[c for c in show if c in recent]], hide_index=True, height=full_height(len(recent)),
                 column_config={
        c: st.column_config.NumberColumn(c.replace("final_", ""), format="%.4g") for c in headline})


pages = [
    st.Page(overview, title="Overview", icon=":material/home:", default=True),
    st.Page("pages/launch.py", title="Launch", icon=":material/rocket_launch:", url_path="launch"),
    st.Page("pages/curves.py", title="Curves", icon=":material/show_chart:"),
    st.Page("pages/tables.py", title="Tables", icon=":material/table:"),
    st.Page("pages/factors.py", title="Factors", icon=":material/bar_chart:", url_path="factors"),
    st.Page("pages/report.py", title="Report", icon=":material/description:", url_path="report"),
    st.Page("pages/runs.py", title="Runs", icon=":material/compare:"),
    st.Page("pages/sql.py", title="SQL", icon=":material/terminal:"),
]
st.set_page_config(page_title="Ablation Lab", layout="wide")
# .streamlit/config.toml hides the sidebar navigation so that the menu Streamlit builds from the pages/ folder on a
# fresh server's first script run (dashboard, Launch, curves, ...) is never shown; this router's menu is shown on
# every run. The option is process-wide: set it right before st.navigation, which leaves the pages/ fallback for good.
st.set_option("client.showSidebarNavigation", True)
st.navigation(pages).run()
