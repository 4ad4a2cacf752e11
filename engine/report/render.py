"""The report as a document (headings, paragraphs, lists, tables, figures), written as Markdown, HTML or LaTeX.

``blocks(report)`` says what the report states, once; each writer only spells those blocks in its format, so the
three formats and the Report page carry the same sentences and numbers.

    render(report, "markdown" | "html" | "latex", stem) -> Rendered(text, files)

Figures: Markdown refers to SVG files and LaTeX to PDF files, written beside the document (``files``: relative
path -> bytes, under ``<stem>_figures/``); HTML holds its SVGs inline, so it is one self-contained file.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

from engine.report.build import Figure, Report, StudySection, cell_levels, fmt

if TYPE_CHECKING:
    from engine.stats import FactorImportance

FORMATS = {"markdown": "md", "html": "html", "latex": "tex"}

# LaTeX packages the document needs (also written as a comment at its top).
LATEX_PACKAGES = ("graphicx", "booktabs", "hyperref")


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str
    small: bool = False


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    head: list[str]
    rows: list[list[str]]


@dataclass
class FigureBlock:
    figure: Figure


Block = Union[Heading, Para, Bullets, Table, FigureBlock]


@dataclass
class Rendered:
    text: str
    files: dict[str, bytes] = field(default_factory=dict)   # relative path -> content (figures beside the text)


def winner_sentence(s: StudySection) -> str:
    w = s.winner
    if w is None:
        return f"No finished run has a usable value of {s.metric}: no winner."
    better = f"{s.direction} is better"
    lead = f"Best: {cell_levels(w.cell)} with mean final {s.metric} {fmt(w.cell.mean)}"
    if w.cell.ci_low is not None:
        lead += f" (95% CI {fmt(w.cell.ci_low)} to {fmt(w.cell.ci_high)}, n={w.cell.n})"
    else:
        lead += f" (n={w.cell.n})"
    lead += f"; {better}."
    if w.runner_up is None:
        return lead + (f" {w.note}." if w.note else "")
    text = lead + f" Runner-up: {cell_levels(w.runner_up)} at {fmt(w.runner_up.mean)} (n={w.runner_up.n})."
    if w.margin is not None:
        text += f" Margin: {fmt(w.margin)}"
        if w.margin_low is not None:
            text += f" (95% CI {fmt(w.margin_low)} to {fmt(w.margin_high)}"
            text += f", Holm-corrected p = {fmt(w.p_holm, 3)})" if w.p_holm is not None else ")"
        text += f": {w.verdict}."
    if w.note:
        text += f" {w.note}."
    return text


def importance_table(imp: "FactorImportance") -> Table:
    """One row per term, seed noise last: share of variance, partial eta², p (the report and the Factors page)."""
    head = ["term", "share of variance", "partial eta²", "p"]
    rows = [["seed noise (residual)" if t.term == "residual" else t.term, f"{t.share:.1%}",
             "–" if t.partial_eta_sq is None else f"{t.partial_eta_sq:.3f}", fmt(t.p_value, 3)] for t in imp.terms]
    return Table(head, rows)


def importance_blocks(s: StudySection) -> list[Block]:
    imp = s.importance
    if imp is None or not imp.terms:
        return [Para(f"Which factors matter: cannot be computed ({s.importance_note or 'no factorial design'}).")]
    out: list[Block] = [Para(f"Which factors matter ({s.importance.n} runs; method: type II factorial ANOVA "
                             "(statsmodels), eta-squared; seed noise is the residual):"), importance_table(imp)]
    extra = [f"{d['term']}: {d['reason']}" for d in imp.dropped] + list(imp.notes)
    if extra:
        out.append(Bullets(extra))
    return out


def section_blocks(s: StudySection) -> list[Block]:
    out: list[Block] = [Heading(2, s.study), Para(f"Question: {s.question}")]
    a = s.analysis
    if a is not None:
        out.append(Para(f"Metric: final {s.metric} ({s.direction} is better), {a.n_runs} finished runs, cells by "
                        f"{', '.join(a.by)}."))
    if a is None:  # nothing could be analysed: the notes say why
        return out + [Bullets(s.notes)]
    out.append(Para(winner_sentence(s)))
    if s.notes:
        out.append(Bullets(s.notes))
    out += importance_blocks(s)
    if s.reference is not None:
        head = ["reference setting", f"reference ({s.reference['unit'].iloc[0]})", "measured [95% CI]", "n",
                "diverged"]
        rows = [[r.setting, fmt(r.reference), f"{fmt(r.mean)} [{fmt(_none(r.ci_low))}, {fmt(_none(r.ci_high))}]",
                 str(int(r.n)), str(int(r.n_diverged))] for r in s.reference.itertuples()]
        out += [Para("The reference study beside this store:"), Table(head, rows)]
    out += [FigureBlock(f) for f in s.figures]
    return out


def _none(x):
    return None if x is None or x != x else x


def blocks(report: Report) -> list[Block]:
    out: list[Block] = [Heading(1, report.title),
                        Para(f"Generated {report.generated} from the run store {report.store}.", small=True),
                        Para(f"Intervals: {report.interval}. Diverged runs: {report.rule}. Margins: "
                             f"{report.margin_method}. Factor importance: {report.importance_method}.", small=True)]
    if not report.sections:
        out.append(Para("The store holds no study yet."))
    for s in report.sections:
        out += section_blocks(s)
    return out


# --- the writers ------------------------------------------------------------------------------------------------------

def _figure_path(stem: str, figure: Figure, ext: str) -> str:
    return f"{stem}_figures/{figure.name}.{ext}"


def markdown_table(table: Table) -> str:
    """A GitHub-flavoured Markdown table (the Markdown report and the Report page)."""
    lines = ["| " + " | ".join(table.head) + " |", "|" + "---|" * len(table.head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in table.rows]
    return "\n".join(lines)


def to_markdown(report: Report, stem: str = "report", with_files: bool = True) -> Rendered:
    lines, files = [], {}
    for b in blocks(report):
        if isinstance(b, Heading):
            lines += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            lines += [f"_{b.text}_" if b.small else b.text, ""]
        elif isinstance(b, Bullets):
            lines += [f"- {i}" for i in b.items] + [""]
        elif isinstance(b, Table):
            lines += [markdown_table(b), ""]
        elif isinstance(b, FigureBlock):
            path = _figure_path(stem, b.figure, "svg")
            if with_files:
                files[path] = b.figure.svg().encode("utf-8")
            lines += [f"![{b.figure.title}]({path})", "", f"*{b.figure.caption}*", ""]
    return Rendered("\n".join(lines), files)


HTML_STYLE = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{border-bottom:1px solid #ccc;padding:3px 10px;text-align:left}
th{border-bottom:2px solid #444}figure{margin:1em 0}figcaption{font-size:.9em;color:#555}.small{font-size:.85em;
color:#555}"""


def to_html(report: Report) -> Rendered:
    e = html.escape
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{e(report.title)}</title>",
             f"<style>{HTML_STYLE}</style></head><body>"]
    for b in blocks(report):
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            parts.append(f"<p class='small'>{e(b.text)}</p>" if b.small else f"<p>{e(b.text)}</p>")
        elif isinstance(b, Bullets):
            parts.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            parts.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in b.head) + "</tr></thead><tbody>"
                         + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b.rows)
                         + "</tbody></table>")
        elif isinstance(b, FigureBlock):
            parts.append(f"<figure>{b.figure.svg()}<figcaption>{e(b.figure.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return Rendered("\n".join(parts) + "\n")


def to_latex(report: Report, stem: str = "report", with_files: bool = True) -> Rendered:
    from engine.report.latex import escape
    lines = [f"% {report.title}: written by `python -m engine report --format latex`.",
             f"% Needs the LaTeX packages {', '.join(LATEX_PACKAGES)} (\\usepackage{{...}}); figures are the PDF files "
             f"in {stem}_figures/ beside this file.",
             r"\documentclass{article}"] + [fr"\usepackage{{{p}}}" for p in LATEX_PACKAGES] + [r"\begin{document}"]
    files = {}
    for b in blocks(report):
        if isinstance(b, Heading):
            lines.append((r"\section*{" if b.level == 1 else r"\subsection*{") + escape(b.text) + "}")
        elif isinstance(b, Para):
            lines += [(r"{\small " + escape(b.text) + "}") if b.small else escape(b.text), ""]
        elif isinstance(b, Bullets):
            lines += [r"\begin{itemize}"] + [r"\item " + escape(i) for i in b.items] + [r"\end{itemize}"]
        elif isinstance(b, Table):
            lines += [r"\begin{tabular}{" + "l" * len(b.head) + "}", r"\toprule",
                      " & ".join(escape(h) for h in b.head) + r" \\", r"\midrule"]
            lines += [" & ".join(escape(c) for c in r) + r" \\" for r in b.rows]
            lines += [r"\bottomrule", r"\end{tabular}", ""]
        elif isinstance(b, FigureBlock):
            path = _figure_path(stem, b.figure, "pdf")
            if with_files:
                files[path] = b.figure.pdf()
            lines += [r"\begin{figure}[h]", r"\centering", fr"\includegraphics[width=0.9\linewidth]{{{path}}}",
                      r"\caption{" + escape(b.figure.caption) + "}", r"\end{figure}"]
    lines.append(r"\end{document}")
    return Rendered("\n".join(lines) + "\n", files)


def render(report: Report, fmt_name: str, stem: str = "report", with_files: bool = True) -> Rendered:
    if fmt_name == "markdown":
        return to_markdown(report, stem, with_files)
    if fmt_name == "html":
        return to_html(report)
    if fmt_name == "latex":
        return to_latex(report, stem, with_files)
    raise ValueError(f"unknown report format {fmt_name!r}; use one of {', '.join(FORMATS)}")
