"""Layers point down: domains never import the API, the console or the CLI, and no
module or package imports itself back through another.

Imports are read with ``ast`` (module-level and function-level alike), so a late
import does not hide a cycle. The checks run on the real package and, to prove
they bite, on small planted packages.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import diskvault

SRC = Path(diskvault.__file__).parent
TOP = ("api", "web", "cli")  # may import anything; nothing below imports them
# A domain's endpoints are the API layer's: they import api.deps, and api imports them.
ENDPOINTS = ("endpoints",)
COMPOSITION_ROOT = "api.app"  # builds the app from every domain and the console


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(root: Path) -> dict[str, set[str]]:
    """Module (relative to ``root``, dotted) -> modules of the package it imports."""
    known = modules(root)
    prefix = root.name + "."
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                if not target.startswith(prefix):
                    continue
                short = target[len(prefix) :]
                while short and short not in known:
                    short = short.rpartition(".")[0]
                # A package's own __init__ is not a dependency of its modules.
                if short and short != name and not name.startswith(short + "."):
                    graph[name].add(short)
    return graph


def layer(module: str) -> str:
    """The node a module belongs to in the package-level graph."""
    if module == COMPOSITION_ROOT:
        return "app"
    last = module.rpartition(".")[2]
    if last in ENDPOINTS or last.endswith("_endpoints"):
        return "api"
    return module.split(".")[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in sorted(graph.items()):
        if layer(module) in (*TOP, "app"):
            continue
        for target in sorted(targets):
            if layer(target) in TOP or target == COMPOSITION_ROOT:
                bad.append(f"{module} imports {target}")
    return bad


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph.items():
        for target in targets:
            if layer(module) != layer(target):
                packages[layer(module)].add(layer(target))
    return packages


def test_domains_never_import_the_api_the_console_or_the_cli() -> None:
    assert upward_imports(imports(SRC)) == []


def test_no_module_imports_itself_back() -> None:
    assert cycles(imports(SRC)) == []


def test_no_package_imports_itself_back() -> None:
    assert cycles(package_graph(imports(SRC))) == []


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    root = tmp_path / "diskvault"
    for name, text in {
        "__init__.py": "",
        "api/__init__.py": "",
        "api/deps.py": "from diskvault.images import service\n",
        "images/__init__.py": "",
        "images/endpoints.py": "from diskvault.api.deps import x\n",
        "images/service.py": "def f():\n    from diskvault.api.deps import y\n",
        "images/engine.py": "from diskvault.images import staging\n",
        "images/staging.py": "def g():\n    from diskvault.images.engine import h\n",
        "jobs/__init__.py": "",
        "jobs/runner.py": "from diskvault.images import staging\n",
        "images/tasks.py": "from diskvault.jobs.runner import run\n",
    }.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checks_find_planted_violations(planted: Path) -> None:
    graph = imports(planted)
    assert upward_imports(graph) == ["images.service imports api.deps"]
    assert cycles(graph) == [["api.deps", "images.service"], ["images.engine", "images.staging"]]
    assert cycles(package_graph(graph)) == [["api", "images", "jobs"]]
