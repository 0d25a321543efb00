"""The layers import one way and no module imports itself back through another (see ARCHITECTURE.md).

Read from the source with ``ast``: every import, at the top of a module or
inside a function, counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tables", "kernels_bench", "profiler", "reports")

#: Engines and GPU libraries that the table layer and the search spaces must never import.
HEAVY = ("torch", "onnx", "onnxruntime", "tensorrt", "cuda", "ray", "matplotlib")

#: The search spaces and reference networks: a layer of their own that reports may use.
SPACES = ("profiler.spaces", "profiler.networks")

#: Which project modules each layer may import (prefixes).
ALLOWED: dict[str, tuple[str, ...]] = {
    "tables": ("tables",),
    "spaces": ("tables", *SPACES),
    "kernels_bench": ("tables", "kernels_bench"),
    "profiler": ("tables", "kernels_bench", "profiler"),
    "reports": ("tables", "reports", *SPACES, "kernels_bench.errors"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(name: str) -> str:
    if any(name == s or name.startswith(s + ".") for s in SPACES):
        return "spaces"
    return name.split(".")[0]


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in ast.walk(node):
                if hasattr(inner, "lineno"):
                    lines.add(inner.lineno)
    return lines


def imports_of(path: Path, *, runtime_only: bool = False) -> set[str]:
    """Absolute module names ``path`` imports (``from a import b`` counts ``a`` and, for submodules, ``a.b``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree) if runtime_only else set()
    out: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if (ROOT / Path(*candidate.split("."))).with_suffix(".py").exists() or (
                    ROOT / Path(*candidate.split(".")) / "__init__.py"
                ).exists():
                    out.add(candidate)
    return out


MODULES = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_module_imports_only_its_own_layer_and_the_ones_below(name: str) -> None:
    layer = layer_of(name)
    allowed = ALLOWED[layer]
    project = [m for m in imports_of(MODULES[name]) if m.split(".")[0] in PACKAGES]
    wrong = [m for m in project if not any(m == a or m.startswith(a + ".") for a in allowed)]
    assert not wrong, f"{name} ({layer} layer) imports {wrong}; it may import {allowed}"
    if layer in ("tables", "spaces"):
        heavy = [m for m in imports_of(MODULES[name]) if m.split(".")[0] in HEAVY]
        assert not heavy, f"{name} imports {heavy}: the table layer and the spaces import no engine"


def test_no_module_imports_itself_back_through_others() -> None:
    graph = {
        name: {m for m in imports_of(path, runtime_only=True) if m in MODULES and m != name}
        for name, path in MODULES.items()
    }
    # a package's __init__ importing its own submodules is how packages work, not a circle
    for name in graph:
        graph[name] = {m for m in graph[name] if not (m.startswith(name + ".") and MODULES[name].name == "__init__.py")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_tables_and_the_spaces_import_without_any_engine(fresh_imports) -> None:
    assert fresh_imports["tables"] == [] and fresh_imports["spaces"] == []


def test_the_commands_import_no_engine_until_they_measure(fresh_imports) -> None:
    assert fresh_imports["profiler.build"] == []


def test_no_module_is_much_longer_than_800_lines() -> None:
    long = {name: n for name, p in MODULES.items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > 850}
    assert not long, f"modules over 850 lines (split them by concept): {long}"
