"""The package's one-way layers, checked on the source: no upward import, no cycle.

Every `import` in every module counts, including those inside functions (a
function-level import hides a cycle from Python, not from this test).
"""

from __future__ import annotations

import ast
from pathlib import Path

from audiolstm import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "audiolstm"

#: Lowest first; a module may import its own layer and the ones before it.
#: `config` composes every layer's schema and choices, so it sits above `models`;
#: `cli` (the entry points) is the top.
LAYERS = [
    {"audiolstm", "audiolstm.errors", "audiolstm.atomic", "audiolstm.runinfo"},
    {"audiolstm.data"},
    {"audiolstm.evaluation"},
    {"audiolstm.models"},
    {"audiolstm.config"},
    {"audiolstm.generation"},
    {"audiolstm.training"},
    {"audiolstm.analysis"},
    {"audiolstm.cli"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `name` imports (resolved to the longest known module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def layer_of(name: str) -> int:
    best = -1
    for i, members in enumerate(LAYERS):
        for m in members:
            if name == m or (m != "audiolstm" and name.startswith(m + ".")):
                best = i
    assert best >= 0, f"{name} belongs to no layer: add it to LAYERS"
    return best


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imported(m, p, set(mods)) for m, p in mods.items()}


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer_of(name)


def test_no_upward_import() -> None:
    upward = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
              for m, targets in graph().items() for t in sorted(targets)
              if layer_of(t) > layer_of(m)]
    assert not upward, "\n".join(upward)


def test_no_import_cycle() -> None:
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(g[u]):
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_function_level_and_relative_imports(tmp_path) -> None:
    """The walk must not be fooled by an import hidden in a function or written relative."""
    pkg = tmp_path / "audiolstm" / "models"
    pkg.mkdir(parents=True)
    (tmp_path / "audiolstm" / "generation").mkdir()
    f = pkg / "x.py"
    f.write_text("def f():\n    from ..generation import pipeline\n    import audiolstm.errors\n")
    known = {"audiolstm.generation.pipeline", "audiolstm.generation", "audiolstm.errors",
             "audiolstm.models.x"}
    assert imported("audiolstm.models.x", f, known) == {
        "audiolstm.generation.pipeline", "audiolstm.generation", "audiolstm.errors"}
    assert layer_of("audiolstm.generation.pipeline") > layer_of("audiolstm.models.x")
