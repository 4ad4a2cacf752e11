"""Studies: a factorial sweep declared in TOML (``spec``), planned against the store (``plan``), run as stacked
models in parallel worker processes (``executor``) or on Ray (``ray_executor``), and the reference study's report
(``reproduce``). engine/cli/study.py adds ``study plan|run`` and ``reproduce`` to ``python -m engine``."""
from engine.study.spec import Cell, StudyError, StudySpec, load_study

__all__ = ["Cell", "StudyError", "StudySpec", "load_study"]
