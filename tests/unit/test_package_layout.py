"""The shape of the package: modules small enough to read, no module-level import cycle,
and public names that no module shadows."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "convertkit"
MAX_MODULE_LINES = 800


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def test_no_module_is_over_800_lines() -> None:
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}

    assert not long, f"split these by what they hold: {long}"


def _top_level_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The convertkit modules ``name`` imports when it is imported (not inside functions
    or under TYPE_CHECKING), each with the packages above it, which load first."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {module for module in found if module in known and module != name}


def test_no_module_level_import_cycle() -> None:
    modules = _modules()
    graph = {name: _top_level_imports(name, path, set(modules))
             for name, path in modules.items()}
    # A package's __init__ runs before its submodules: an edge from a submodule up to its
    # own package is how Python imports, not a cycle.
    for name, edges in graph.items():
        edges -= {p for p in edges if name.startswith(p + ".")}

    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)

    assert not cycles, "module-level import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_public_names_survive_importing_every_module() -> None:
    """`convertkit.check` (the function) was once replaced by the package
    convertkit/check/ as soon as any of its modules was imported."""
    modules = sorted(name for name in _modules() if name != "convertkit.__main__")
    probe = ("import importlib, inspect, convertkit\n"
             "before = {n: getattr(convertkit, n) for n in convertkit.__all__}\n"
             f"for m in {modules!r}: importlib.import_module(m)\n"
             "changed = [n for n, v in before.items() if getattr(convertkit, n) is not v]\n"
             "print(changed, inspect.isfunction(convertkit.check))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, cwd=PACKAGE.parent)

    assert done.stdout.strip() == "[] True"
