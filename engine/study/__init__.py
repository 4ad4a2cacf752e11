"""Studies: a factorial sweep declared in TOML, planned against the store, trained through engine.train's driver.

    spec.py           the study file, validated and expanded into cells (factors.py: factor values and ranges;
                      where.py: StudyError and the line of a key)
    builder.py        the Launch page's study builder: its choices written as a study file
    plan.py           which runs are cached and which are missing, and a time estimate
    schedule.py       stack costs, longest-first order, makespan, how many training processes
    executor.py       run_study: train the missing runs (pool.py: training processes; ray_executor.py: Ray tasks)
                      and the end-of-study report
    results.py        a study's runs as the store has them, the table of cells
    reproduce.py      the reference study (studies/ex*.toml) and its report

engine/cli/study.py adds ``study plan|run`` and ``reproduce`` to ``python -m engine``.
"""
from engine.study.spec import Cell, StudyError, StudySpec, load_study

__all__ = ["Cell", "StudyError", "StudySpec", "load_study"]
