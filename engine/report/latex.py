"""Text made safe for LaTeX: the report (engine/report/render.py) and the Tables page's downloads (ui/downloads.py)
escape through this one function."""
from __future__ import annotations

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
# Symbols the numbers and labels use, spelled so that pdflatex needs no extra package.
_SYMBOLS = {"±": r"$\pm$", "–": "--", "Δ": r"$\Delta$", "×": r"$\times$", "²": r"$^2$", "≥": r"$\geq$",
            "≤": r"$\leq$"}


def escape(text: str) -> str:
    out = "".join(_SPECIAL.get(ch, ch) for ch in str(text))
    for symbol, latex in _SYMBOLS.items():
        out = out.replace(symbol, latex)
    return out
