"""The package's layout rules: no import cycles between its modules, no module over ~500 lines.

Imports are read with ``ast`` from every module, at any depth (an import inside a function
still ties two modules together: the grader <-> model cycle ran through ``model.main``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "resnet_course"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _imported(node: ast.AST, module: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """The package's modules that one import statement names."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules}
    if not isinstance(node, ast.ImportFrom):
        return set()
    base = node.module or ""
    if node.level:  # relative: from the module's package, one level up per extra dot
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    found = set()
    for alias in node.names:
        child = f"{base}.{alias.name}"
        if child in modules:
            found.add(child)  # `from resnet_course import datasets`: the submodule itself
        elif base in modules:
            found.add(base)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (itself and its own parents left out)."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges = set()
        for node in ast.walk(tree):
            edges |= _imported(node, module, path.name == "__init__.py", modules)
        # Importing a submodule runs its parent packages' __init__ first; that is not a
        # dependency the module chose, so parents are left out.
        graph[module] = {m for m in edges if m != module and not module.startswith(m + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_function_level_and_relative_imports_count():
    modules = {"p": Path("p/__init__.py"), "p.a": Path("p/a.py"), "p.b": Path("p/b.py")}
    inner = ast.parse("def f():\n    from p import b\n")
    assert set().union(*(_imported(n, "p.a", False, modules) for n in ast.walk(inner))) == {"p.b"}
    relative = ast.parse("from .b import thing\n")
    assert set().union(*(_imported(n, "p.a", False, modules) for n in ast.walk(relative))) == {"p.b"}


@pytest.mark.parametrize("module", sorted(_modules()))
def test_module_size(module):
    lines = len(_modules()[module].read_text().splitlines())
    assert lines <= MAX_LINES, (
        f"{module} has {lines} lines (limit {MAX_LINES}): split it by concept into a subpackage"
    )


def test_contributing_lists_every_module():
    """CONTRIBUTING.md's layout table has one row per module, and no row for a module that is gone."""
    text = (ROOT.parent / "CONTRIBUTING.md").read_text()
    listed = set()
    for line in text.splitlines():
        if line.startswith("| `") and line.count("`") >= 2:
            cell = line.split("`")[1]
            if cell.endswith(".py"):
                listed.add(cell)
    actual = {path.relative_to(ROOT).as_posix() for path in ROOT.rglob("*.py")}
    assert not actual - listed, f"modules missing from CONTRIBUTING.md's layout: {sorted(actual - listed)}"
    assert not listed - actual, f"CONTRIBUTING.md lists modules that don't exist: {sorted(listed - actual)}"
