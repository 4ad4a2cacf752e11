"""SQL: a read-only DuckDB console over the store's documented views; results downloadable.

It reads the store and nothing else: see engine/sql_console.py for how (one SELECT, checked by DuckDB's own parser,
run on a private locked-down database with a time limit).
"""
from __future__ import annotations

import streamlit as st

from pathlib import Path

from engine.sql_console import (EXAMPLES, STORE_VIEWS, STUDY_EXAMPLE, SqlConsole, SqlError, SqlRefused, SqlStopped,
                                study_example)
import ui
from ui import data, downloads, url
from ui.defaults import latest_study
from ui.page import DEMO_HINT, show_problems
from ui.state import ensure_router, get_store, guard, store_root, store_version

DEFAULT = EXAMPLES["Runs per status"]


@st.cache_resource(show_spinner=False)
def console(root: str) -> SqlConsole:
    # One per store root and process: each query still gets its own fresh, locked database.
    return SqlConsole.for_store(get_store())


ensure_router()
st.title("SQL")
st.caption("A read-only DuckDB console over the views " + ", ".join(f"`{v}`" for v in STORE_VIEWS)
           + " (*Store format* below lists every column). One SELECT at a time; it cannot read other files, reach the "
           f"network, write, install extensions or change settings, and a query is stopped after "
           f"{console(store_root()).timeout_s:g} s.")

with guard("reading the store"):
    counts = data.status_counts(store_version(), store_root())
if counts["n"].sum() == 0:
    st.info(f"The run store at `{store_root()}` has no runs yet: the views are empty. {DEMO_HINT}")

with guard("reading the runs"):
    study = latest_study(data.runs(store_version(), store_root()))
examples = ({STUDY_EXAMPLE + f" ({study})": study_example(study)} if study else {}) | EXAMPLES
with st.expander("Examples: one click loads one into the box"):
    for i, (title, text) in enumerate(examples.items()):
        left, right = st.columns([1, 4])
        if left.button(title, key=f"example_{i}", width="stretch"):
            url.set_value("q", text)
            url.put("run", True)
            st.rerun()
        right.code(text, language="sql")
with st.expander("Store format (docs/store.md): the views and their columns"):
    st.markdown((Path(ui.__file__).resolve().parent.parent / "docs" / "store.md").read_text())

query = url.text_area("Query", "q", DEFAULT, height=140)
if st.button("Run", type="primary", key="run_sql") or url.get("run") == "1":
    url.put("run", True)
    con = console(store_root())
    # The spinner takes the place of the last answer (or error) at once: nothing stale stays on screen.
    with guard("running the query"), st.spinner("Running the query..."):  # the store's own errors
        try:
            result = con.run(query)
        except SqlRefused as exc:
            st.error(f"**Refused.** {str(exc).removeprefix('refused: ')}")
            st.stop()
        except SqlStopped as exc:
            st.error(f"**Stopped.** {exc}")
            st.stop()
        except SqlError as exc:
            st.error(f"**DuckDB could not run the query.** {exc}")
            st.stop()
    show_problems(con.problems)
    frame = result.frame
    st.caption(f"{len(frame):,} rows in {result.elapsed_s * 1000:.0f} ms"
               + (f" — only the first {len(frame):,} are shown and downloadable; add a LIMIT or aggregate"
                  if result.truncated else ""))
    st.dataframe(frame, hide_index=True, key="sql_result")
    downloads.frame_buttons(frame, "query", "dl_sql")
