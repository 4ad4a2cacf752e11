"""The Overview's "run the quick demo study" button: the quick version of studies/demo.toml, run by the studies
module like any other study (cached runs are not trained again)."""
from __future__ import annotations

from pathlib import Path

DEMO_FILE = Path(__file__).resolve().parent.parent / "studies" / "demo.toml"


def describe() -> str:
    return f"the quick version of `studies/{DEMO_FILE.name}` (activation x optimizer on the moons points)"


def run_demo(store) -> str:
    """Train the demo into ``store``; returns a one-line summary."""
    from engine.study.executor import run_study
    from engine.study.spec import load_study
    spec = load_study(DEMO_FILE, quick=True)
    statuses = list(run_study(spec, store, workers=1, show_progress=False).statuses().values())
    done = sum(s in ("completed", "diverged") for s in statuses)
    return f"study {spec.study_name}: {done} of {len(statuses)} runs finished"
