"""Downloads of the table on screen, each in the form its use needs: CSV, Parquet, Excel, Markdown and LaTeX.

Markdown and LaTeX are for reading and pasting into a report: they carry the formatted cells as on screen. CSV,
Parquet and Excel are for computing: given the cells' numbers (``numbers``: one row per cell, the factor levels,
mean, spread bounds, n, ... as columns, the long table) they carry those, with Excel adding the formatted table as a
second sheet; without them they carry the formatted table.

Every format carries the same cells (the same text, the same rounding, so the spread's name and the marks travel
inside each cell); only the marking of the best cell follows each format's idiom: bold in Markdown (``**``), Excel
(a bold font) and LaTeX (``\\textbf``); the CSV and Parquet carry the plain table. ``notes`` (what the ± and the
marks mean, the correction, the diverged runs) become a footnote in Markdown and LaTeX and a second sheet in
Excel. The LaTeX is a booktabs ``tabular`` that pastes straight into the study's report.
"""
from __future__ import annotations

import io

import pandas as pd
import streamlit as st

from engine.report.latex import escape

FORMATS = {  # label -> (extension, mime)
    "CSV": ("csv", "text/csv"),
    "Parquet": ("parquet", "application/vnd.apache.parquet"),
    "Excel": ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    "Markdown": ("md", "text/markdown"),
    "LaTeX": ("tex", "application/x-tex"),
}


def _flat(table: pd.DataFrame) -> pd.DataFrame:
    """The index becomes the first column, named after the row factor (what the screen shows at the left)."""
    name = table.index.name or ""
    out = table.reset_index()
    out.columns = [name] + [str(c) for c in table.columns]
    return out


def to_csv(table: pd.DataFrame) -> bytes:
    return _flat(table).to_csv(index=False).encode("utf-8")


def to_parquet(table: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    _flat(table).to_parquet(buf, index=False)
    return buf.getvalue()


def to_excel(table: pd.DataFrame, best: tuple[str, str] | None = None, notes: list[str] | None = None) -> bytes:
    from openpyxl.styles import Font

    flat = _flat(table)
    buf = io.BytesIO()
    with pd.ExcelWriter(buf, engine="openpyxl") as xl:
        flat.to_excel(xl, index=False, sheet_name="table")
        ws = xl.sheets["table"]
        if best is not None:
            r = list(table.index).index(best[0]) + 2            # +1 header, +1 for 1-based rows
            c = list(table.columns).index(best[1]) + 2           # +1 index column, +1 for 1-based columns
            ws.cell(row=r, column=c).font = Font(bold=True)
        for col in ws.columns:
            ws.column_dimensions[col[0].column_letter].width = max(10, max(len(str(v.value or "")) for v in col) + 2)
        if notes:
            pd.DataFrame({"notes": notes}).to_excel(xl, index=False, sheet_name="notes")
    return buf.getvalue()


def to_markdown(table: pd.DataFrame, best: tuple[str, str] | None = None, notes: list[str] | None = None) -> bytes:
    shown = table.copy()
    if best is not None:
        shown.loc[best[0], best[1]] = f"**{shown.loc[best[0], best[1]]}**"
    text = _flat(shown).to_markdown(index=False, disable_numparse=True) + "\n"
    if notes:
        text += "\nNotes:\n\n" + "".join(f"- {n}\n" for n in notes)
    return text.encode("utf-8")


latex_escape = escape  # one escaping for the tables here and the report (engine/report/latex.py)


def to_latex(table: pd.DataFrame, best: tuple[str, str] | None = None, caption: str | None = None,
             notes: list[str] | None = None) -> bytes:
    flat = _flat(table)
    header = [latex_escape(c) for c in flat.columns]
    lines = []
    if caption:
        lines.append(f"% {caption}")
    lines.append(r"% needs \usepackage{booktabs} (\toprule, \midrule, \bottomrule) in the preamble")
    lines += [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule"]
    if table.columns.name:
        lines.append(r" & \multicolumn{" + str(len(header) - 1) + r"}{c}{" + latex_escape(table.columns.name)
                     + r"} \\")
        lines.append(r"\cmidrule(lr){2-" + str(len(header)) + "}")
    lines.append(" & ".join(header) + r" \\")
    lines.append(r"\midrule")
    for idx, row in zip(table.index, flat.itertuples(index=False)):
        cells = []
        for col, value in zip(flat.columns, row):
            text = latex_escape(value)
            if best is not None and col == best[1] and str(idx) == best[0] and col != flat.columns[0]:
                text = r"\textbf{" + text + "}"
            cells.append(text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if notes:  # a footnote under the tabular, in the small print of a table note
        lines += [r"\par\smallskip", r"{\footnotesize"] + [latex_escape(n) + r"\\" for n in notes] + ["}"]
    return ("\n".join(lines) + "\n").encode("utf-8")


def table_bytes(table: pd.DataFrame, fmt: str, best: tuple[str, str] | None = None,
                caption: str | None = None, notes: list[str] | None = None) -> bytes:
    ext = FORMATS[fmt][0] if fmt in FORMATS else fmt
    if ext == "csv":
        return to_csv(table)
    if ext == "parquet":
        return to_parquet(table)
    if ext == "xlsx":
        return to_excel(table, best, notes)
    if ext == "md":
        return to_markdown(table, best, notes)
    if ext == "tex":
        return to_latex(table, best, caption, notes)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def numbers_bytes(numbers: pd.DataFrame, fmt: str, table: pd.DataFrame | None = None,
                  best: tuple[str, str] | None = None, notes: list[str] | None = None) -> bytes:
    """CSV, Parquet or Excel of the cells' numbers (one row per cell, numbers as numbers); Excel adds the formatted
    ``table`` and the notes as sheets."""
    ext = FORMATS[fmt][0] if fmt in FORMATS else fmt
    if ext == "csv":
        return numbers.to_csv(index=False).encode("utf-8")
    if ext == "parquet":
        buf = io.BytesIO()
        numbers.to_parquet(buf, index=False)
        return buf.getvalue()
    if ext == "xlsx":
        buf = io.BytesIO()
        with pd.ExcelWriter(buf, engine="openpyxl") as xl:
            numbers.to_excel(xl, index=False, sheet_name="cells")
            if table is not None:
                _flat(table).to_excel(xl, index=False, sheet_name="table")
            if notes:
                pd.DataFrame({"notes": notes}).to_excel(xl, index=False, sheet_name="notes")
        return buf.getvalue()
    raise ValueError(f"numbers download in {fmt!r}: use CSV, Parquet or Excel")


def buttons(table: pd.DataFrame, stem: str, key: str, best: tuple[str, str] | None = None,
            caption: str | None = None, formats: tuple[str, ...] = tuple(FORMATS),
            notes: list[str] | None = None, numbers: pd.DataFrame | None = None) -> None:
    """One download button per format, in a row (``numbers``: see the module's docstring)."""
    cols = st.columns(len(formats))
    for col, fmt in zip(cols, formats):
        ext, mime = FORMATS[fmt]
        numeric = numbers is not None and ext in ("csv", "parquet", "xlsx")
        payload = (numbers_bytes(plain(numbers), fmt, table, best, notes) if numeric
                   else table_bytes(table, fmt, best, caption, notes))
        with col:
            st.download_button(fmt, payload, file_name=f"{stem}.{ext}", mime=mime, key=f"{key}_{ext}",
                               on_click="ignore", width="stretch",
                               help="the cells' numbers, one row per cell" if numeric else "the table as shown")


def plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Nested values (lists, structs) as text, so that every format can hold them."""
    safe = frame.copy()
    for c in safe.columns:
        if safe[c].dtype == object and safe[c].map(lambda v: isinstance(v, (list, dict, tuple))).any():
            safe[c] = safe[c].map(lambda v: v if not isinstance(v, (list, dict, tuple)) else str(v))
    return safe


def frame_buttons(frame: pd.DataFrame, stem: str, key: str) -> None:
    """CSV and Parquet of a plain result frame (the SQL page, the long table of cells)."""
    cols = st.columns(2)
    buf = io.BytesIO()
    safe = plain(frame)
    try:
        safe.to_parquet(buf, index=False)
        parquet = buf.getvalue()
    except Exception:  # a column pyarrow cannot type: CSV still works
        parquet = None
    with cols[0]:
        st.download_button("CSV", safe.to_csv(index=False).encode("utf-8"), file_name=f"{stem}.csv",
                           mime="text/csv", key=f"{key}_csv", on_click="ignore", width="stretch")
    with cols[1]:
        st.download_button("Parquet", parquet or b"", file_name=f"{stem}.parquet",
                           mime="application/vnd.apache.parquet", key=f"{key}_parquet", on_click="ignore",
                           disabled=parquet is None, width="stretch")
