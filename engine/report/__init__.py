"""The report: each study's question, winner with its margin and CI over the runner-up, which factors matter, and
its figures (with the reference study's numbers beside the measured ones where reproduce.py maps them), written as
Markdown, self-contained HTML or LaTeX. No Streamlit: ``python -m engine report`` and the Report page share it.

    report = build_report(store, ["ablation"])           engine/report/build.py: the numbers (engine.analysis's)
    rendered = render(report, "html")                    engine/report/render.py: .text, .files (figures beside)
    write(rendered, "out/report.md")                     the text and its figure files under out/
    figures.slice_chart(...), figures.to_svg(chart)      engine/report/figures.py: the Factors page's charts too
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

from engine.report.build import Figure, Report, StudySection, Winner, build_report, build_section, study_names
from engine.report.render import FORMATS, Rendered, blocks, render

__all__ = ["Figure", "Report", "StudySection", "Winner", "build_report", "build_section", "study_names", "FORMATS",
           "Rendered", "blocks", "render", "write", "zip_bytes"]


def write(rendered: Rendered, out: str | Path) -> list[Path]:
    """Write the document to ``out`` and its figure files beside it; returns every path written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(rendered.text, encoding="utf-8")
    written = [out]
    for rel, content in rendered.files.items():
        path = out.parent / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written.append(path)
    return written


def zip_bytes(rendered: Rendered, name: str) -> bytes:
    """The document (as ``name``) and its figure files in one zip, laid out as ``write`` lays them out."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, rendered.text)
        for rel, content in rendered.files.items():
            z.writestr(rel, content)
    return buf.getvalue()
