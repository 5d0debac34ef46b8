"""The package layering: no import circle anywhere, and nothing below `cli/` imports `cli`.

Imports are read from the source with `ast` (module-level and function-level alike, since a lazy
import is still a dependency), so the test needs no heavy package to run and sees every edge.
The floors, bottom up: volumes (errors, ids, geometry, I/O) < ffn, synapses, db < server < demo < cli.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("volumes", "ffn", "synapses", "db", "server", "demo", "cli")
# What each package may import from the project (besides itself).
ALLOWED = {
    "volumes": set(),
    "ffn": {"volumes"},
    "synapses": {"volumes", "db"},
    "db": {"volumes"},
    "server": {"volumes", "db"},
    "demo": {"volumes", "ffn", "synapses", "db", "server"},
    "cli": {"volumes", "ffn", "synapses", "db", "server", "demo"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in (REPO / package).rglob("*.py")
            if "migrations" not in path.parts}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports (`from a import b` counts as a.b when a.b is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                     for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            # a package's __init__ is imported by its submodules implicitly; only real edges count
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_walk_sees_the_known_edges():
    graph = import_graph()
    assert "volumes.errors" in graph["db.store"] | graph["db.users"]
    assert {"demo.commands", "db.commands", "server.commands"} <= graph["cli.main"]
    assert "server.api" in graph["server.app"] and "server.services" in graph["server.viewers"]


def test_there_is_no_import_circle():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()) or [])


def test_the_walk_finds_a_circle_when_there_is_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_the_floors_below_it(package):
    wrong = sorted(f"{module} imports {target}" for module, targets in import_graph().items()
                   if module.split(".")[0] == package for target in targets
                   if target.split(".")[0] not in ALLOWED[package] | {package})
    assert not wrong, wrong
