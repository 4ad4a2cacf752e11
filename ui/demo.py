"""The Overview's "run the quick demo study" button: the studies module's quick mode on a demo study file when the
project ships one, else a tiny built-in grid trained with ``engine.train.run_configs``."""
from __future__ import annotations

from pathlib import Path

from engine.config import RunConfig

STUDIES_DIR = Path(__file__).resolve().parent.parent / "studies"
DEMO_STUDY = "demo"


def demo_study_file() -> Path | None:
    """studies/demo*.toml, else studies/*quick*.toml, else None."""
    if not STUDIES_DIR.is_dir():
        return None
    for pattern in ("demo*.toml", "*quick*.toml"):
        found = sorted(STUDIES_DIR.glob(pattern))
        if found:
            return found[0]
    return None


def builtin_configs() -> list[RunConfig]:
    """3 activations x 2 optimizers x 2 seeds on the moons data, 5 epochs: about 10 s on a laptop CPU."""
    return [RunConfig(task="points", dataset="moons", activation=a, optimizer=o, lr=0.01 if o == "adam" else 0.1,
                      epochs=5, seed=s)
            for a in ("relu", "tanh", "sigmoid") for o in ("adam", "sgd") for s in (0, 1)]


def describe() -> str:
    path = demo_study_file()
    if path is not None:
        return f"the quick version of `{path.relative_to(STUDIES_DIR.parent)}`"
    return "a built-in grid: 3 activations x 2 optimizers x 2 seeds on the moons data, 5 epochs each"


def run_demo(store) -> str:
    """Train the demo into ``store``; returns a one-line summary. Cached runs are not trained again."""
    path = demo_study_file()
    if path is not None:
        from engine.study.executor import run_study
        from engine.study.spec import load_study
        spec = load_study(path, quick=True)
        result = run_study(spec, store, workers=1, show_progress=False)
        statuses = list(result.statuses().values())
        name = spec.study_name
    else:
        from engine.train import run_configs
        configs = builtin_configs()
        outcomes = run_configs(configs, store)
        store.add_to_study(DEMO_STUDY, [c.run_id for c in configs])
        statuses = [o.status for o in outcomes]
        name = DEMO_STUDY
    done = sum(s in ("completed", "diverged") for s in statuses)
    return f"study {name}: {done} of {len(statuses)} runs finished"
