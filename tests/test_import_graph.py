"""The import graph of slimkit, read from the source: no cycles, and the layers point one way.

Every ``.py`` file under ``slimkit/`` is a node (a package is its ``__init__``); every ``import``
of a slimkit module is an arrow, marked *lazy* when it sits inside a function (it runs on first
use, not on import). Imports under ``if TYPE_CHECKING:`` never run and are left out. An import of
``a.b.c`` is an arrow to ``a.b.c`` only, not to the packages ``a`` and ``a.b`` that Python also
runs on the way (every module would otherwise reach ``slimkit/__init__``); the one place where that
matters, the presentation leaves the catalogue may use, checks its package ``__init__`` itself.
Modules imported by name at run time (``slimkit.__getattr__``'s table, plugin entry points) are
not arrows: no source line names them as an import.

The rules:

* no cycle among modules, counting lazy imports too: a lazy import still means the two modules
  know each other, and deferring one half of a cycle only moves the failure from import time to
  the first call;
* the catalogue (``slimkit.core.catalogue``) depends on nothing above it: its only arrows out go
  to :data:`CATALOGUE_MAY_USE`, leaf modules that import nothing of slimkit but each other (the
  error types, and the presentation leaves its notebook reprs call: they render duck-typed
  objects and know nothing of the catalogue);
* core (``slimkit.core`` except the CLI face ``slimkit.core.cli``) never imports the plugins or
  the faces (``slimkit.jupyter_ext``, ``slimkit.core.cli``).

Failure messages name ``file:line`` and the arrow.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "slimkit"
CATALOGUE = "slimkit.core.catalogue"
CATALOGUE_MAY_USE = frozenset({"slimkit.core.errors", "slimkit.core.failures", "slimkit.core.present.format",
                               "slimkit.core.present.html"})
FACES_AND_PLUGINS = ("slimkit.plugins", "slimkit.jupyter_ext", "slimkit.core.cli")


@dataclass(frozen=True)
class Arrow:
    """``source`` imports ``target`` at ``file:line``; ``lazy`` when inside a function."""

    source: str
    target: str
    file: str
    line: int
    lazy: bool

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.source} -> {self.target}" + (" (lazy)" if self.lazy else "")


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file under ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    """Collects ``(target, line, lazy)`` of a module's imports, skipping ``if TYPE_CHECKING:``."""

    def __init__(self, module: str, is_package: bool, known: set[str]) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.known = known
        self.depth = 0
        self.found: list[tuple[str, int, bool]] = []

    def _resolve(self, name: str) -> str | None:
        """The longest known slimkit module ``name`` starts with."""
        parts = name.split(".")
        while parts:
            candidate = ".".join(parts)
            if candidate in self.known:
                return candidate
            parts.pop()
        return None

    def _add(self, name: str, line: int) -> None:
        target = self._resolve(name)
        if target is not None:
            self.found.append((target, line, self.depth > 0))

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".")[: len(self.package.split(".")) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            full = f"{base}.{alias.name}"
            self._add(full if full in self.known else base, node.lineno)


def arrows(files: dict[str, Path] | None = None) -> list[Arrow]:
    """Every arrow between slimkit modules (a module importing itself is left out)."""
    files = files if files is not None else modules()
    known = set(files)
    out = []
    for module, path in files.items():
        visitor = _Imports(module, path.name == "__init__.py", known)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        rel = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        found = dict.fromkeys(visitor.found)  # one arrow per statement and target, in order
        out += [Arrow(module, target, rel, line, lazy) for target, line, lazy in found if target != module]
    return out


def cycles(graph: list[Arrow], *, lazy: bool) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted; ``lazy``: count
    lazy arrows too."""
    edges: dict[str, set[str]] = {}
    for a in graph:
        if lazy or not a.lazy:
            edges.setdefault(a.source, set()).add(a.target)
            edges.setdefault(a.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # recursion depth is bounded by the number of modules (~150)
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def _describe(graph: list[Arrow], component: list[str], *, lazy: bool) -> str:
    members = set(component)
    inside = [str(a) for a in graph if a.source in members and a.target in members and (lazy or not a.lazy)]
    return f"cycle among {', '.join(component)}:\n    " + "\n    ".join(inside)


def catalogue_upward(graph: list[Arrow]) -> list[Arrow]:
    """Arrows from the catalogue to slimkit modules outside it other than :data:`CATALOGUE_MAY_USE`."""
    return [a for a in graph if within(a.source, CATALOGUE) and not within(a.target, CATALOGUE)
            and a.target not in CATALOGUE_MAY_USE]


def non_leaves(graph: list[Arrow]) -> list[Arrow]:
    """Arrows out of :data:`CATALOGUE_MAY_USE` (or the packages below ``slimkit.core`` that Python
    runs to import them) to anything of slimkit but each other."""
    packages = {m.rpartition(".")[0] for m in CATALOGUE_MAY_USE} - {"slimkit", "slimkit.core"}
    return [a for a in graph if a.source in CATALOGUE_MAY_USE | packages and a.target not in CATALOGUE_MAY_USE]


def core_into_faces(graph: list[Arrow]) -> list[Arrow]:
    """Arrows from core (not the CLI) into the plugins or a face."""
    return [a for a in graph if within(a.source, "slimkit.core") and not within(a.source, "slimkit.core.cli")
            and any(within(a.target, face) for face in FACES_AND_PLUGINS)]


@pytest.fixture(scope="module")
def graph() -> list[Arrow]:
    return arrows()


def test_the_graph_sees_every_kind_of_import(tmp_path):
    pkg = tmp_path / "slimkit"
    (pkg / "core").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "__init__.py").write_text("from . import a\n")
    (pkg / "core" / "a.py").write_text("from typing import TYPE_CHECKING\nimport slimkit.core.b as b\n"
                                       "if TYPE_CHECKING:\n    from slimkit.core import c\n")
    (pkg / "core" / "b.py").write_text("from .a import thing\ndef f():\n    from slimkit.core import c\n")
    (pkg / "core" / "c.py").write_text("from slimkit.core.b import f\nclass C:\n    def g(self):\n        import os\n")
    found = {(a.source, a.target, a.line, a.lazy) for a in arrows(modules(pkg))}
    assert found == {("slimkit.core", "slimkit.core.a", 1, False), ("slimkit.core.a", "slimkit.core.b", 2, False),
                     ("slimkit.core.b", "slimkit.core.a", 1, False), ("slimkit.core.b", "slimkit.core.c", 3, True),
                     ("slimkit.core.c", "slimkit.core.b", 1, False)}
    assert cycles(arrows(modules(pkg)), lazy=False) == [["slimkit.core.a", "slimkit.core.b"]]
    assert cycles(arrows(modules(pkg)), lazy=True) == [["slimkit.core.a", "slimkit.core.b", "slimkit.core.c"]]


@pytest.mark.parametrize("arrow, rule", [
    (Arrow("slimkit.core.catalogue.store", "slimkit.core.model_io", "x.py", 3, True), catalogue_upward),
    (Arrow("slimkit.core.catalogue", "slimkit.core.runner", "x.py", 3, False), catalogue_upward),
    (Arrow("slimkit.core.present.html", "slimkit.core.catalogue.entities", "x.py", 3, True), non_leaves),
    (Arrow("slimkit.core.present", "slimkit.core.present.lineage", "x.py", 3, False), non_leaves),
    (Arrow("slimkit.core.host", "slimkit.plugins.pruning", "x.py", 3, True), core_into_faces),
    (Arrow("slimkit.core.runner", "slimkit.core.cli.render", "x.py", 3, False), core_into_faces),
])
def test_each_rule_catches_what_it_forbids(arrow, rule):
    allowed = [Arrow("slimkit.core.catalogue.entities", "slimkit.core.present.html", "y.py", 1, False),
               Arrow("slimkit.core.present.html", "slimkit.core.present.format", "y.py", 1, False),
               Arrow("slimkit.core.cli.run", "slimkit.core.catalogue", "y.py", 1, False),
               Arrow("slimkit.core.cli", "slimkit.plugins", "y.py", 1, True)]
    assert rule(allowed) == [] and rule([*allowed, arrow]) == [arrow]
    assert str(arrow).startswith("x.py:3: ")


def test_no_import_cycles(graph):
    found = cycles(graph, lazy=True)
    assert not found, "\n".join(_describe(graph, c, lazy=True) for c in found)


def test_the_catalogue_depends_on_nothing_above_it(graph):
    bad = catalogue_upward(graph)
    assert not bad, "the catalogue imports from above it:\n" + "\n".join(map(str, bad))


def test_what_the_catalogue_may_use_are_leaves(graph):
    """The modules the catalogue may import, and the packages Python runs to import them, import
    nothing of slimkit but each other: otherwise the catalogue would reach above itself through them."""
    bad = non_leaves(graph)
    assert not bad, "a module the catalogue may use is not a leaf:\n" + "\n".join(map(str, bad))


def test_core_never_imports_plugins_or_faces(graph):
    bad = core_into_faces(graph)
    assert not bad, "core imports a plugin or a face:\n" + "\n".join(map(str, bad))
