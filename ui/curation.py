"""Curating runs from the dashboard: the "show excluded runs" toggle every page shares, and the panels that exclude,
tag, note and delete runs (Runs page) and studies (Overview). Everything they write goes through the engine
(``RunStore.annotate`` / ``plan_delete`` / ``delete``, one atomic record per action); a store that cannot be written
shows the panels disabled with the reason.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.errors import is_user_error
from ui import url
from ui.state import get_store, read_only_reason


# --- exclusion: hidden by default everywhere ------------------------------------------------------------------------

def hide_excluded(runs: pd.DataFrame) -> pd.DataFrame:
    """Drop the runs excluded from analysis unless the sidebar toggle (URL key ``excl``) shows them; says how many
    are hidden. Pages call this through ui.page.load_runs, so Curves, Tables and Runs agree. It also shows what the
    last curation action did (the page may now show fewer runs, or none, so the panel itself may not be drawn)."""
    _message()
    if "excluded" not in runs:
        return runs
    mask = runs["excluded"].fillna(False).astype(bool)
    n = int(mask.sum())
    if not n:
        return runs
    with st.sidebar:
        show = url.toggle("Show excluded runs", "excl", False,
                          help="Runs excluded from analysis (with a reason, on the Runs page or with `python -m "
                               "engine runs exclude`) are left out of every chart and statistic unless shown here.")
        st.caption(f"{n:,} run(s) excluded from analysis" + (" — shown, and counted in the statistics" if show
                                                               else " are hidden"))
    return runs if show else runs[~mask]


# --- shared pieces --------------------------------------------------------------------------------------------------

def _act(what: str, fn) -> None:
    """Run a store action; the project's errors become a message that survives the rerun."""
    try:
        message = fn()
    except Exception as exc:
        if not is_user_error(exc):
            raise
        st.session_state["curation.message"] = ("error", f"Could not {what}: {exc}")
    else:
        st.session_state["curation.message"] = ("success", message)
    st.rerun()


def _message() -> None:
    shown = st.session_state.pop("curation.message", None)
    if shown is not None:
        getattr(st, shown[0])(shown[1])


def _delete_confirmation(key: str, run_ids: list[str], what: str) -> None:
    """A delete button that first says how many runs and how much disk, then asks again."""
    pending = st.session_state.get(f"{key}-pending")
    if pending is None or pending[0] != sorted(run_ids):
        if st.button(f"Delete {what}…", key=f"{key}-ask", disabled=not run_ids):
            plan = get_store().plan_delete(run_ids)
            st.session_state[f"{key}-pending"] = (sorted(run_ids), plan.describe())
            st.rerun()
        return
    st.warning(f"Delete {pending[1]} for good? Running runs are refused; this cannot be undone.")
    c = st.columns(2)
    if c[0].button("Yes, delete", key=f"{key}-confirm", type="primary"):
        st.session_state.pop(f"{key}-pending", None)

        def delete() -> str:
            store = get_store()
            plan = store.plan_delete(run_ids)
            store.delete(plan)
            return f"Deleted {plan.describe()}."
        _act("delete", delete)
    if c[1].button("Cancel", key=f"{key}-cancel"):
        st.session_state.pop(f"{key}-pending", None)
        st.rerun()


def _annotation_controls(key: str, runs: list[str], studies: list[str], excluded: bool, note: str | None) -> None:
    store = get_store()
    c = st.columns([3, 1, 1])
    reason = c[0].text_input("Reason for excluding", key=f"{key}-reason",
                             placeholder="e.g. launched with the wrong data set")
    c[1].markdown("&nbsp;")
    if c[1].button("Exclude", key=f"{key}-exclude", disabled=not reason.strip(),
                   help="Hide from every chart and statistic (kept in the store); needs a reason"):
        _act("exclude", lambda: (store.annotate("exclude", runs, studies, reason=reason),
                                 f"Excluded from analysis: {reason}.")[1])
    c[2].markdown("&nbsp;")
    if c[2].button("Include again", key=f"{key}-include", disabled=not excluded):
        _act("include", lambda: (store.annotate("include", runs, studies), "Included in analysis again.")[1])
    c = st.columns([3, 1, 1])
    tag = c[0].text_input("Tag", key=f"{key}-tag", placeholder="a free tag, e.g. baseline")
    c[1].markdown("&nbsp;")
    if c[1].button("Add tag", key=f"{key}-addtag", disabled=not tag.strip()):
        _act("tag", lambda: (store.annotate("tag", runs, studies, tag=tag), f"Tagged {tag!r}.")[1])
    c[2].markdown("&nbsp;")
    if c[2].button("Remove tag", key=f"{key}-untag", disabled=not tag.strip()):
        _act("untag", lambda: (store.annotate("untag", runs, studies, tag=tag), f"Removed tag {tag!r}.")[1])
    c = st.columns([3, 1])
    text = c[0].text_input("Note", value=note or "", key=f"{key}-note", placeholder="a short note")
    c[1].markdown("&nbsp;")
    if c[1].button("Save note", key=f"{key}-savenote"):
        _act("note", lambda: (store.annotate("note", runs, studies, note=text), "Note saved.")[1])


# --- Runs page ------------------------------------------------------------------------------------------------------

def runs_panel(runs: pd.DataFrame, chosen: list[str]) -> None:
    """Exclude/include, tag, note and delete the runs picked on the Runs page, or every run matching the filters
    (a study's cell: filter to it, then act on all)."""
    with st.expander("Curate runs: exclude, tag, note, delete", expanded=bool(chosen)):
        reason = read_only_reason()
        if reason:
            st.info(f"Read-only: {reason}.")
            return
        scope = st.radio("Act on", ["the runs picked below", "every run matching the filters"], horizontal=True,
                         key="curation-scope")
        ids = list(chosen) if scope.startswith("the runs picked") else list(runs["run_id"])
        target = runs[runs["run_id"].isin(ids)]
        if target.empty:
            st.caption("No run to act on: pick runs below, or widen the filters.")
            return
        shown = target[["run_id", "status"] + [c for c in ("excluded_reason", "tags", "note") if c in target]]
        st.dataframe(shown.head(50), hide_index=True, key="curation-targets")
        st.caption(f"{len(ids):,} run(s)" + (" (the first 50 shown)" if len(ids) > 50 else ""))
        excluded = bool(target["excluded"].fillna(False).any()) if "excluded" in target else False
        note = target["note"].iloc[0] if "note" in target and len(target) == 1 else None
        _annotation_controls("curation-runs", ids, [], excluded, None if pd.isna(note) else note)
        _delete_confirmation("curation-delete-runs", ids, f"{len(ids):,} run(s)")


# --- Overview: studies ----------------------------------------------------------------------------------------------

def with_study_notes(studies: pd.DataFrame) -> pd.DataFrame:
    """The Overview's studies table with each study's exclusion, tags and note."""
    if studies.empty or "study" not in studies:
        return studies
    notes = get_store().annotations().studies
    out = studies.copy()
    out["excluded"] = out["study"].map(lambda s: notes[s].excluded if s in notes else None)
    out["tags"] = out["study"].map(lambda s: ", ".join(sorted(notes[s].tags)) if s in notes else "")
    out["note"] = out["study"].map(lambda s: notes[s].note if s in notes else None)
    return out


def studies_panel(studies: pd.DataFrame, runs: pd.DataFrame) -> None:
    """Tag, note, exclude (or include) a study, or delete its runs (``runs``: the store's runs frame)."""
    if studies.empty or "study" not in studies:
        return
    with st.expander("Curate a study: tags, note, exclude, delete",
                     expanded="curation.message" in st.session_state):
        _message()
        reason = read_only_reason()
        if reason:
            st.info(f"Read-only: {reason}.")
            return
        name = st.selectbox("Study", list(studies["study"]), key="curation-study")
        notes = get_store().annotations().studies.get(name)
        _annotation_controls(f"curation-study-{name}", [], [name], bool(notes and notes.excluded),
                             notes.note if notes else None)
        ids = [r for r, member in zip(runs["run_id"], runs["studies"]) if name in member]
        _delete_confirmation(f"curation-delete-study-{name}", ids, f"the {len(ids)} run(s) of {name}")
