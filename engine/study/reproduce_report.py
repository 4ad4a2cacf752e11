"""The reproduction report in markdown: the reference's lines beside the values measured here, the findings with
their verdicts (engine/study/findings.py), and each study's runs and training time. Built from the store alone."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.stats import summarize
from engine.study.finding_spec import Answer
from engine.study.findings import (INCONCLUSIVE, NOT_REPRODUCED, NOT_RUN, REPRODUCED, VERDICTS, FindingResult,
                                   StudyData, sample)

INTRO = (
    "Reference: `../shared/reference/reference-study.txt` and `reference-results.csv`. Every measured value below is "
    "read from the run store: mean over seeds with its 95% t interval and n (completed runs); accuracies in percent. "
    "Each study file (`studies/*.toml`) declares the reference lines it answers (`[[answers]]`) and the study's "
    "findings (`[[findings]]`); a finding's verdict follows from the interval and n (engine/stats), never from two "
    "means alone: *reproduced* (the interval is on the claimed side), *not reproduced* (on the other side), "
    "*inconclusive* (it straddles, or too few seeds for an interval), *not run* (no finished run in the store). "
    "Data: 2-D `circles` points, MNIST, coloured MNIST built from it, scikit-learn's diabetes data (standardised; "
    "regression MSE in standardised units) and a synthetic heteroscedastic 1-D set.")
QUICK_NOTE = (
    "Quick mode: each file's `[quick]` table: fewer epochs, seeds and cells, and MNIST is the 5,000-image sample "
    "(3,500 training images, with larger learning rates where the sample needs them): values fall short of the "
    "full runs, and with one seed a comparison is inconclusive by construction.")
FULL_NOTE = ("Full mode: the studies as declared (MNIST exercises on the full 60,000 + 10,000 images). A line or "
             "finding whose runs are not in the store says *not run*: it was not trained, not guessed.")


@dataclass(frozen=True)
class AnswerRow:
    reference: dict[str, str]
    study: str | None
    answer: Answer | None
    measured: str          # "mean [lo, hi] (n=k)", or "not run"
    cells: str
    note: str


def _fmt_value(v: float | None, scale: float) -> str:
    if v is None:
        return "-"
    x = v * scale
    return f"{x:.2f}" if scale == 100 else f"{x:.4g}"


def answer_rows(studies: dict[str, StudyData], reference: list[dict[str, str]]) -> list[AnswerRow]:
    by_line = {a.line: (name, a) for name, d in studies.items() for a in d.spec.answers}
    rows = []
    for ref in reference:
        name, answer = by_line.get(ref["setting"], (None, None))
        if answer is None:
            rows.append(AnswerRow(ref, None, None, "not run", "-", "no study answers this line"))
            continue
        data = studies[name]
        s = sample(studies, name, answer.cells, answer.metric, answer.metric.goal)
        counts = data.status_counts(data.cells(answer.cells)) if not answer.cells.study else {}
        notes = [f"{v} {k}" for k, v in sorted(counts.items()) if k != "completed"]
        if answer.metric.text != data.spec.metric:
            notes.append(f"metric {answer.metric.text}")
        if answer.note:
            notes.append(answer.note)
        if not s.n:
            measured = "not run"
        else:
            g = summarize(list(s.values))
            ci = (f" [{_fmt_value(g.ci_low, answer.scale)}, {_fmt_value(g.ci_high, answer.scale)}]"
                  if g.ci_low is not None else "")
            measured = f"{_fmt_value(g.mean, answer.scale)}{ci} (n={s.n})"
        rows.append(AnswerRow(ref, name, answer, measured, f"{name}: {answer.cells.describe()}", "; ".join(notes)))
    return rows


def verdict_counts(results: list[FindingResult]) -> dict[str, int]:
    return {v: sum(r.verdict == v for r in results) for v in VERDICTS}


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(studies: dict[str, StudyData], reference: list[dict[str, str]], results: list[FindingResult],
           quick: bool, header: str = "", durations: dict[str, str] | None = None) -> str:
    """The markdown report. ``durations``: study name -> its training time as the store recorded it."""
    rows = answer_rows(studies, reference)
    counts = verdict_counts(results)
    measured = sum(r.measured != "not run" for r in rows)
    lines = ["# Ablation Lab: the reference study, reproduced" + (" (quick)" if quick else ""), ""]
    if header:
        lines += [header, ""]
    lines += [INTRO, "", QUICK_NOTE if quick else FULL_NOTE, "",
              f"## Results: {len(rows)} reference lines, {measured} measured, {len(rows) - measured} not run", "",
              "| ex | question | setting (reference) | metric | split | reference | measured here | study: cells | "
              "note |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = r.reference
        lines.append(f"| {ref['exercise']} | {ref['question']} | {_cell(ref['setting'])} | {ref['metric']} | "
                     f"{ref['split']} | {ref['value']} | {r.measured} | {_cell(r.cells)} | {_cell(r.note)} |")
    lines += ["", f"## Findings: {len(results)} ({counts[REPRODUCED]} reproduced, {counts[NOT_REPRODUCED]} not "
                  f"reproduced, {counts[INCONCLUSIVE]} inconclusive, {counts[NOT_RUN]} not run)", "",
              "| study | finding | kind | verdict | numbers (from the store) |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.study} | {_cell(r.finding.text)} | {r.finding.kind} | {r.verdict} | {_cell(r.numbers)} |")
    lines += ["", "## Studies", "", "Training time: each finished run's wall time over the size of the stack it trained in, "
              "summed: the time of one training process (several processes run side by side).", "",
              "| study | file | cells | runs | completed | diverged | not run | training time |",
              "|---|---|---|---|---|---|---|---|"]
    for name, data in studies.items():
        spec = data.spec
        c = data.status_counts(list(spec.runs))
        done = c.get("completed", 0) + c.get("diverged", 0)
        lines.append(f"| {spec.study_name} | `{_rel(spec.path)}` | {len(spec.cell_labels())} | {len(spec.runs)} | "
                     f"{c.get('completed', 0)} | {c.get('diverged', 0)} | {len(spec.runs) - done} | "
                     f"{(durations or {}).get(name, '-')} |")
    return "\n".join(lines) + "\n"


def _rel(path: Path) -> str:
    repo = Path(__file__).resolve().parents[2]
    try:
        return str(Path(path).resolve().relative_to(repo))
    except ValueError:
        return str(path)
