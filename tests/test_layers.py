"""The architecture as tests: the layers and which may import which (docs/architecture.md draws the same picture),
no import circles, the store read through its one door, and the engine free of Streamlit.

Imports are read from the source (every ``import``, at module level or inside a function; not those under
``if TYPE_CHECKING:``, which never run), so a lazy import inside a function counts like any other.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("engine", "ui", "pages", "dashboard.py")

# The layers, lowest first. A module may import modules of its own layer and of the layers before it, never of a
# layer after it. A name stands for a module and everything below it.
LAYERS = (
    ("engine", "engine.errors", "engine.config", "engine.metrics",            # what a run is, and leaf helpers
     "engine.faults", "engine.stop"),
    ("engine.store",),                                                        # runs on disk (no torch)
    ("engine.queries", "engine.sql_console"),                                 # SQL over the store's views
    ("engine.analysis",),                                                     # a selection -> statistics
    ("engine.tasks", "engine.models", "engine.optim", "engine.objectives"),   # data and math (torch)
    ("engine.sinks", "engine.train", "engine.inspect"),                       # the training loop and its driver
    ("engine.study",),                                                        # studies: plan, run, report
    ("engine.report",),                                                       # findings as a document, figures
    ("engine.jobs",),                                                         # the job queue and its supervisor
    ("engine.cli", "engine.__main__"),                                        # python -m engine
    ("ui",),                                                                  # the dashboard's shared pieces
    ("pages", "dashboard"),                                                   # the dashboard's pages and router
)
# Packages that the rest of the code reaches only through their __init__ (their one door).
DOORS = ("engine.store",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {}
    for source in SOURCES:
        root = REPO / source
        for path in ([root] if root.is_file() else sorted(root.rglob("*.py"))):
            found[module_name(path)] = path
    return found


def _runs(node: ast.AST) -> list[ast.AST]:
    """The statements under ``node`` that can run: everything but the body of ``if TYPE_CHECKING:``."""
    out = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            out.extend(child.orelse)
            continue
        out.append(child)
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that module ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    todo = [ast.parse(path.read_text(), str(path))]
    while todo:
        node = todo.pop()
        todo.extend(_runs(node))
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from engine import queries` imports the module engine.queries; `from engine.store import RunStore`
            # imports the package engine.store.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def layer_of(name: str) -> int:
    matches = [(len(entry), i) for i, layer in enumerate(LAYERS) for entry in layer
               if name == entry or name.startswith(entry + ".")]
    if not matches:
        raise AssertionError(f"{name} is in no layer: add it to LAYERS in tests/test_layers.py")
    return max(matches)[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
                  for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_is_in_a_layer():
    for name in modules():
        layer_of(name)


def test_no_lower_layer_imports_a_higher_one():
    assert upward_imports(import_graph()) == []


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_the_store_is_reached_through_its_door():
    graph = import_graph()
    through_back = sorted(f"{a} imports {b}" for a, targets in graph.items() for b in targets for door in DOORS
                          if b.startswith(door + ".") and not (a == door or a.startswith(door + ".")))
    assert through_back == []


@pytest.mark.parametrize("wrong", [
    {"engine.config": {"engine.train"}},          # the foundation reaching up into training
    {"engine.store.views": {"engine.queries"}},   # the store reaching up into the queries over it
    {"engine.study.plan": {"ui.state"}},          # the engine reaching into the dashboard
])
def test_the_checks_catch_a_wrong_import(wrong):
    graph = import_graph()
    for a, targets in wrong.items():
        graph[a] = graph[a] | targets
    assert upward_imports(graph)
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


def test_engine_does_not_import_streamlit():
    code = ("import sys, engine.train, engine.cli, engine.store, engine.queries, engine.study.executor, engine.jobs; "
            "sys.exit(1 if 'streamlit' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=REPO).returncode == 0
