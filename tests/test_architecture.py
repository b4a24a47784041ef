"""The house rules of docs/architecture.md, checked: imports run downhill only, and no circles.

Every module of the package has a floor; a module may import from its own floor or below, never above. A new
module must be given a floor here (and in docs/architecture.md) before the suite passes.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "amili_async"

# floor -> module name prefixes (the longest matching prefix wins)
FLOORS: dict[int, tuple[str, ...]] = {
    0: ("_version", "_wire", "_clock", "errors", "_redact", "transports", "_progress"),
    1: ("models", "_shared_login"),
    2: ("serde", "bulk", "ratelimit", "_telemetry", "_otel", "_slots", "_flow", "_tokens"),
    3: ("auth", "retry", "_lookups"),
    4: ("_config", "_pipeline", "_call", "_evidence", "_reconcile"),
    5: ("resources",),
    6: ("client",),
    7: ("sync", "redis", "doctor", "_doctor_checks"),
    8: ("testing",),
    9: ("cli", "__main__", "__init__"),
}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _floor(module: str) -> int:
    best: tuple[int, int] | None = None  # (prefix length, floor)
    for floor, prefixes in FLOORS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), floor)
    if best is None:
        raise AssertionError(f"amili_async.{module} has no floor in tests/test_architecture.py: give it one")
    return best[1]


def _imports(path: pathlib.Path) -> set[str]:
    """Every amili_async module this file imports, at the top or inside a function."""
    module = _module_name(path)
    package = module.split(".") if path.name == "__init__.py" and module != "__init__" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.startswith("amili_async"):
                target = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:  # `from . import serde` names a module, not an attribute
                candidate = [*target, alias.name]
                as_module = PACKAGE.joinpath(*candidate)
                if as_module.with_suffix(".py").exists() or (as_module / "__init__.py").exists():
                    found.add(".".join(candidate))
                elif target:
                    found.add(".".join(target))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("amili_async."):
                    found.add(alias.name.removeprefix("amili_async."))
    found.discard(module)
    found.discard("")
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))
GRAPH = {_module_name(p): _imports(p) for p in SOURCES}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_run_downhill(module: str) -> None:
    if module == "__init__":
        return  # the package's face re-exports from every floor
    floor = _floor(module)
    uphill = sorted(dep for dep in GRAPH[module] if dep != "__init__" and _floor(dep) > floor)
    assert not uphill, f"amili_async.{module} (floor {floor}) imports from above: {uphill}"


def test_no_import_circles() -> None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(GRAPH.get(node, ())):
            if dep not in GRAPH or dep == "__init__":
                continue
            if state.get(dep) == 1:
                circle = [*stack[stack.index(dep) :], dep]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state and module != "__init__":
            visit(module)


def test_no_source_module_over_500_lines() -> None:
    big = {str(p.relative_to(PACKAGE)): n for p in SOURCES if (n := len(p.read_text().splitlines())) > 500}
    assert not big, f"modules over 500 lines (split them by concern): {big}"
    assert len((PACKAGE / "client.py").read_text().splitlines()) < 300
