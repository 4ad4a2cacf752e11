"""engine/report: every format builds, its numbers are engine.analysis's, the edge cases (one seed, identical runs,
diverged and running runs) are said in words, the reference study's numbers sit beside the measured ones, and
`python -m engine report` writes the document with its figures."""
from __future__ import annotations

import subprocess
import sys
import zipfile
import io
from pathlib import Path

import pytest

from engine import analysis
from engine.report import build_report, render, write, zip_bytes
from engine.report.build import fmt

pytest_plugins = ["tests.insight_fixtures"]

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def report(insight_store):
    return build_report(insight_store.store(), ["lrgrid", "oneseed", "same"])


def section(report, name):
    return next(s for s in report.sections if s.study == name)


def test_every_format_builds_with_its_figures(report):
    md = render(report, "markdown", "rep")
    svgs = [p for p in md.files if p.endswith(".svg")]
    assert svgs and all(p.startswith("rep_figures/") for p in svgs)
    assert all(md.files[p].startswith(b"<svg") for p in svgs)
    assert all(f"]({p})" in md.text for p in svgs)  # every figure file is referred to

    html = render(report, "html")
    assert html.files == {} and html.text.count("<svg") == len(svgs)  # self-contained: the same figures, inline
    assert "<img" not in html.text and 'src="' not in html.text

    tex = render(report, "latex", "rep")
    pdfs = [p for p in tex.files if p.endswith(".pdf")]
    assert len(pdfs) == len(svgs) and all(tex.files[p].startswith(b"%PDF") for p in pdfs)
    assert tex.text.startswith("% ") and "graphicx, booktabs, hyperref" in tex.text.splitlines()[1]
    assert all(f"\\includegraphics[width=0.9\\linewidth]{{{p}}}" in tex.text for p in pdfs)
    assert r"\begin{document}" in tex.text and tex.text.rstrip().endswith(r"\end{document}")
    # what LaTeX would choke on is escaped: no bare underscore or percent outside commands
    body = tex.text.split(r"\begin{document}")[1]
    assert "val\\_accuracy" in body and " val_accuracy" not in body

    for text in (md.text, html.text, tex.text):
        for name in ("lrgrid", "oneseed", "same"):
            assert name in text
        assert "95% confidence interval" in text.replace(r"95\%", "95%")
        assert "left out of the mean" in text


def test_the_winner_and_its_margin_are_engine_analysis_numbers(report, insight_store):
    from tests.insight_fixtures import accuracy
    s = section(report, "lrgrid")
    direct = analysis.analyze(insight_store.store(), "lrgrid", "val_accuracy", ["activation", "lr"])
    assert s.analysis.by == ("activation", "lr")
    best = next(c for c in direct.cells if c.label == direct.best)
    assert best.key == {"activation": "relu", "lr": 0.01}
    assert s.winner.cell.mean == best.mean == pytest.approx(accuracy("relu", 0.01, 1))
    assert (s.winner.cell.ci_low, s.winner.cell.ci_high) == (best.ci_low, best.ci_high)
    # the margin over the runner-up (tanh/0.01) is the baseline comparison's difference, turned around
    vs = analysis.analyze(insight_store.store(), "lrgrid", "val_accuracy", ["activation", "lr"],
                          baseline=best.key)
    runner = next(c for c in vs.cells if c.key == {"activation": "tanh", "lr": 0.01})
    assert s.winner.runner_up.key == runner.key
    assert s.winner.margin == -runner.vs_baseline == pytest.approx(0.02)
    assert (s.winner.margin_low, s.winner.margin_high) == (-runner.vs_baseline_ci_high, -runner.vs_baseline_ci_low)
    assert s.winner.p_holm == runner.vs_baseline_p_holm is not None
    text = render(report, "markdown", with_files=False).text
    assert (f"mean final val_accuracy {fmt(best.mean)} (95% CI {fmt(best.ci_low)} to {fmt(best.ci_high)}, n=3)"
            in text)
    assert f"Margin: {fmt(s.winner.margin)} (95% CI {fmt(s.winner.margin_low)} to {fmt(s.winner.margin_high)}" in text
    # importance: the study's ANOVA, lr first
    imp = analysis.study_importance(insight_store.store(), "lrgrid")
    assert [t.term for t in s.importance.terms] == [t.term for t in imp.terms]
    assert s.importance.terms[0].term == "lr"
    assert f"| lr | {imp.terms[0].share:.1%} |" in text


def test_diverged_and_running_runs_are_counted_and_said(report):
    s = section(report, "lrgrid")
    cells = {tuple(c.key.values()): c for c in s.analysis.cells}
    assert cells[("relu", 1.0)].n == 0 and cells[("relu", 1.0)].n_diverged == 3
    assert cells[("tanh", 0.1)].n == 2 and cells[("tanh", 0.1)].n_diverged == 1  # the NaN final value
    assert s.analysis.unfinished == {"running": 1}
    notes = " ".join(s.notes)
    assert "7 of 24 finished runs diverged" in notes and "1 running" in notes


def test_one_seed_and_identical_runs_are_said_not_crashed(report):
    one = section(report, "oneseed")
    assert one.winner.runner_up is None and one.winner.verdict == "not ranked"
    assert any("Only one seed" in n for n in one.notes)
    assert one.importance_note and "cannot compute" in one.importance_note
    same = section(report, "same")
    assert any("identical values" in n for n in same.notes)
    assert same.winner.margin == pytest.approx(0.1) and same.winner.margin_low == same.winner.margin_high
    assert "exact difference" in same.winner.verdict
    text = render(report, "markdown", with_files=False).text
    assert "Only one seed" in text and "cannot be computed" in text


def test_a_study_with_nothing_finished_says_so_and_the_others_still_report(insight_store):
    rep = build_report(insight_store.store(), ["pending", "same"], with_figures=False)
    pending, same = rep.sections
    assert pending.winner is None and pending.analysis.unfinished == {"running": 1}
    assert any("1 running" in n for n in pending.notes)
    for fmt_name in ("markdown", "html", "latex"):
        text = render(rep, fmt_name, with_files=False).text.replace("\\_", "_")  # LaTeX escapes the underscore
        assert "No finished run has a usable value of val_accuracy: no winner." in text
        assert "pending" in text and "same" in text
    # the whole store: every study gets a section, none hides another
    everything = build_report(insight_store.store(), with_figures=False)
    assert [s.study for s in everything.sections] == ["lrgrid", "oneseed", "pending", "same"]
    with pytest.raises(analysis.AnalysisError, match="unknown metric 'val_f1'"):
        build_report(insight_store.store(), ["same"], metric="val_f1")


def test_the_reference_study_sits_beside_the_measured_one(tmp_path):
    """Runs logged for the cells reproduce.py maps to the reference line 'Adam lr=0.01' of ex1-optimizer."""
    from engine.report.build import spec_of
    from engine.store import RunStore
    from tests.insight_fixtures import _log
    spec = spec_of("ex1-optimizer-quick")
    cells = [c for c in spec.runs if c.grid == "main" and c.config.optimizer in ("adam", "sgd")
             and c.config.lr == 0.01]
    store = RunStore(tmp_path, durable=False, compact_threshold=None)
    values = {}
    for c in cells:
        v = (0.99 if c.config.optimizer == "adam" else 0.9) + 0.001 * c.seed
        values.setdefault(c.config.optimizer, []).append(v)
        _log(store, c.config, [v])
    store.add_to_study("ex1-optimizer-quick", [c.run_id for c in cells])
    rep = build_report(store, ["ex1-optimizer-quick"])
    s = rep.sections[0]
    assert s.question == spec.description
    ref = s.reference.set_index("setting")
    line = ref.loc["2 layers tanh 75 hidden, Adam lr=0.01"]
    adam = values["adam"]
    assert line["reference"] == 99.90 and line["n"] == len(adam)
    assert line["mean"] == pytest.approx(100 * sum(adam) / len(adam))
    assert [f.name for f in s.figures][-1] == "ex1-optimizer-quick-reference"
    md = render(rep, "markdown", with_files=False).text
    assert "| 2 layers tanh 75 hidden, Adam lr=0.01 | 99.9000 |" in md


def test_zip_holds_the_document_and_its_figures(report):
    rendered = render(report, "markdown", "rep")
    with zipfile.ZipFile(io.BytesIO(zip_bytes(rendered, "rep.md"))) as z:
        assert sorted(z.namelist()) == sorted(["rep.md", *rendered.files])
        assert z.read("rep.md").decode() == rendered.text


def test_cli_writes_the_document_and_its_figures(insight_store, tmp_path):
    out = tmp_path / "out" / "paper.tex"
    proc = subprocess.run([sys.executable, "-m", "engine", "report", "--store", str(insight_store.root), "--study",
                           "lrgrid", "--study", "same", "--format", "latex", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    pdfs = sorted(p.name for p in (tmp_path / "out" / "paper_figures").iterdir())
    assert "lrgrid-effect.pdf" in pdfs and "lrgrid-importance.pdf" in pdfs
    text = out.read_text()
    assert "lrgrid" in text and "same" in text and "oneseed" not in text

    bad = subprocess.run([sys.executable, "-m", "engine", "report", "--store", str(insight_store.root), "--study",
                          "nope", "--format", "html", "--out", str(tmp_path / "x.html")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown study 'nope'" in bad.stderr and "lrgrid" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "x.html").exists()


def test_write_lays_out_the_files_beside_the_document(report, tmp_path):
    rendered = render(report, "markdown", "notes")
    written = write(rendered, tmp_path / "notes.md")
    assert written[0] == tmp_path / "notes.md"
    assert {p.relative_to(tmp_path).as_posix() for p in written[1:]} == set(rendered.files)
