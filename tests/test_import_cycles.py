"""No import cycles between the project's modules, each cycle named with the lines that make it.

The graph is read from the source (nothing is imported): an edge A → B for every `import` of B
anywhere in A (at module level, or inside a function: a lazy import still makes A depend on B),
except under `if TYPE_CHECKING:`, which never runs (it is how an annotation names a type from a
module that imports this one). `from X import Y` is an edge to X.Y when that is a module, else to X;
importing a submodule does not count as importing its parent package.
"""

from __future__ import annotations

import ast
import pathlib
from collections import deque
from dataclasses import dataclass

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("swarm", "agents", "policies", "observability")


@dataclass(frozen=True)
class Edge:
    target: str
    line: int


def modules(root: pathlib.Path, packages: tuple[str, ...]) -> dict[str, pathlib.Path]:
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(node: ast.AST):
    """Every import statement under `node`, skipping the bodies of `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield from _statements_of(other)
            continue
        yield from _statements(child)


def _statements_of(node: ast.AST):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    yield from _statements(node)


def imports(name: str, path: pathlib.Path, known: dict[str, pathlib.Path]) -> list[Edge]:
    """The project modules `name` imports, with the line of each import."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = []
    for stmt in _statements(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(stmt, ast.Import):
            targets = [alias.name for alias in stmt.names]
        else:
            base = stmt.module or ""
            if stmt.level:
                anchor = package.split(".")[: len(package.split(".")) - (stmt.level - 1)]
                base = ".".join(anchor + ([stmt.module] if stmt.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in stmt.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.append(Edge(target, stmt.lineno))
    return edges


def import_graph(root: pathlib.Path = REPO, packages: tuple[str, ...] = PACKAGES) -> dict[str, list[Edge]]:
    known = modules(root, packages)
    return {name: imports(name, path, known) for name, path in known.items()}


def strongly_connected(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """Tarjan's algorithm; the components with more than one module (the cycles), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for edge in graph[v]:
            w = edge.target
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def name_cycle(graph: dict[str, list[Edge]], component: list[str]) -> str:
    """A shortest cycle through the component's first module, as 'a (line) → b (line) → … → a'."""
    start, members = component[0], set(component)
    previous: dict[str, tuple[str, int]] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for edge in graph[v]:
            if edge.target not in members or edge.target in previous:
                continue
            previous[edge.target] = (v, edge.line)
            if edge.target == start:
                queue.clear()
                break
            queue.append(edge.target)
    hops, v = [], start
    while True:
        u, line = previous[v]
        hops.append(f"{u}:{line}")
        v = u
        if v == start:
            break
    return " → ".join([*reversed(hops), start])


def cycles_touching(package: str, graph: dict[str, list[Edge]]) -> list[str]:
    return [name_cycle(graph, c) for c in strongly_connected(graph)
            if any(m == package or m.startswith(package + ".") for m in c)]


@pytest.mark.parametrize("package", ["swarm", "agents", "policies", "observability"])
def test_no_import_cycle_touches(package):
    cycles = cycles_touching(package, import_graph())
    assert not cycles, "import cycles (module:line of each import):\n  " + "\n  ".join(cycles)


# -- the analysis itself ------------------------------------------------------------------------------
def _write(root: pathlib.Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_lazy_import_closing_a_loop_is_a_named_cycle(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from pkg.b import f\n",
                      "pkg/b.py": "def f():\n    from . import a\n    return a\n"})
    graph = import_graph(tmp_path, ("pkg",))
    assert strongly_connected(graph) == [["pkg.a", "pkg.b"]]
    assert cycles_touching("pkg", graph) == ["pkg.a:1 → pkg.b:2 → pkg.a"]


def test_type_checking_imports_and_parent_packages_are_not_edges(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "from pkg.a import A\n", "pkg/a.py": "from pkg.b import g\nA = 1\n",
                      "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import A\n"
                                  "def g():\n    return 1\n"})
    assert strongly_connected(import_graph(tmp_path, ("pkg",))) == []
