"""No import circle among the product's modules: every import counts, also one
under `if TYPE_CHECKING:` or inside a function (a circle there still ties the
modules together for a reader, and for a refactoring)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The product modules a file imports: `from a import b` is a.b when that is a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                      for alias in node.names}
    return found & modules


def graph(packages: list[str]) -> dict[str, set[str]]:
    files = {module_name(p): p for package in packages for p in (REPO / package).rglob("*.py")}
    return {name: imports(path, set(files)) - {name} for name, path in files.items()}


def cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import circle, as the modules along it, or []."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_graph_sees_a_circle_through_type_checking():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycle(edges) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) == []


def test_no_import_circle():
    edges = graph(["addons", "policy", "process"])
    assert {"addons.glance_gate", "policy.gate", "process.main"} <= set(edges)
    assert cycle(edges) == [], " -> ".join(cycle(edges))
