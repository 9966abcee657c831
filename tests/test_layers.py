"""The package's layering, checked from the source: data flows down.

* no import cycle inside ``dmamap/`` -- module-level and function-level
  imports alike (only ``if TYPE_CHECKING:`` imports, which never run, are
  left out);
* only the binding layer (``dmamap._binding``) imports the compiled core or
  touches its ``ffi``/``lib`` objects.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "dmamap"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The dmamap modules ``name`` imports when it runs (any depth of the tree)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for n in node.orelse:
                visit(n)
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("dmamap"):
                    out.add(a.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join([*pkg, base] if base else pkg)
            if base.startswith("dmamap"):
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    out.add(sub if sub in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    out.discard(name)
    return {m for m in out if m in known or m == "dmamap._core"}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(path, name, known) for name, path in mods.items()}


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def dfs(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m in graph and m not in state:
                dfs(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            dfs(n)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_only_the_binding_layer_touches_the_compiled_core() -> None:
    offenders = []
    for name, path in _modules().items():
        if name == "dmamap._binding" or name.startswith("dmamap._binding.") or name == "dmamap._build":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("dmamap._core", "dmamap._binding"):
                bad = [a.name for a in node.names if a.name in ("ffi", "lib")]
                if node.module == "dmamap._core" or bad:
                    offenders.append(f"{name}: from {node.module} import {', '.join(a.name for a in node.names)}")
            elif isinstance(node, ast.Import) and any(a.name == "dmamap._core" for a in node.names):
                offenders.append(f"{name}: import dmamap._core")
    assert not offenders, "\n".join(offenders)


def test_the_checks_see_a_cycle_and_a_core_import(tmp_path: Path) -> None:
    """The checks above can fail: the same analysis on two modules importing each other."""
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from dmamap.b import g\n")
    assert _imports(a, "dmamap.a", {"dmamap.a", "dmamap.b"}) == {"dmamap.b"}
    b = tmp_path / "b.py"
    b.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from dmamap.a import f\n")
    assert _imports(b, "dmamap.b", {"dmamap.a", "dmamap.b"}) == set()
