"""Report: the document ``python -m engine report`` writes (engine/report/), shown here with its figures and
downloadable as Markdown (zip: the text and its SVG figures), self-contained HTML, or LaTeX (zip: the .tex and its
PDF figures)."""
from __future__ import annotations

import streamlit as st

from engine.report import FORMATS, blocks, render, zip_bytes
from engine.report.render import Bullets, FigureBlock, Heading, Para, Table, markdown_table
from ui import data, url
from ui.defaults import latest_study
from ui.page import load_runs
from ui.state import ensure_router, guard

HEADLINE = "(each study's headline metric)"
DOWNLOADS = {"markdown": ("Markdown (zip)", "zip", "application/zip"),
             "html": ("HTML", "html", "text/html"),
             "latex": ("LaTeX (zip)", "zip", "application/zip")}

ensure_router()
st.title("Report")
root, version, runs = load_runs()
with guard("listing the studies"):
    names = data.study_names(version, root)
if not names:
    st.info("The store holds no study yet: a report covers studies (`python -m engine study run FILE`).")
    st.stop()
# A link from the Overview names its study as the other pages' filter does (f.study); else the most recent study.
linked = [s for s in url.get_all("f.study") if s in names]
recent = latest_study(runs)
c = st.columns([3, 2])
with c[0]:
    studies = url.multiselect("Studies", names, "study", default=linked or ([recent] if recent in names else names[:1]),
                              help="each study gets its question, winner, factors and figures")
with c[1]:
    metrics = [HEADLINE] + data.metrics_of(runs)
    metric = url.selectbox("Metric", metrics, "metric", HEADLINE)
if not studies:
    st.info("Pick one or more studies.")
    st.stop()

with guard("building the report"):
    report = data.report(version, root, tuple(studies), None if metric == HEADLINE else metric)

stem = "report" if len(studies) > 1 else f"report-{studies[0]}"
cols = st.columns(len(FORMATS))
for col, fmt in zip(cols, FORMATS):
    label, ext, mime = DOWNLOADS[fmt]

    def content(fmt=fmt) -> bytes:  # rendered on click: figure export costs time
        rendered = render(report, fmt, stem)
        return zip_bytes(rendered, f"{stem}.{FORMATS[fmt]}") if rendered.files else rendered.text.encode("utf-8")
    with col:
        st.download_button(label, content, file_name=f"{stem}.{ext}", mime=mime, key=f"dl_{fmt}",
                           on_click="ignore", width="stretch")

for i, b in enumerate(blocks(report)):
    if isinstance(b, Heading):
        (st.header if b.level == 1 else st.subheader)(b.text)
    elif isinstance(b, Para):
        (st.caption if b.small else st.markdown)(b.text)
    elif isinstance(b, Bullets):
        st.markdown("\n".join(f"- {item}" for item in b.items))
    elif isinstance(b, Table):
        st.markdown(markdown_table(b))
    elif isinstance(b, FigureBlock):
        st.altair_chart(b.figure.chart, key=f"fig_{i}")
        st.caption(b.figure.caption)
