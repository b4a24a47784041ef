"""The house rules of docs/architecture.md, checked: imports run downhill only, and no circles.

Every module of the package has a floor; a module may import from its own floor or below, never above. A new
module must be given a floor here (and in docs/architecture.md) before the suite passes.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

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


def test_the_usual_import_loads_only_what_it_needs() -> None:
    """`from amili_async import AsyncAmiliClient, CreditorPayment, ApiCodeJwtAuth` loads the client, the models
    and the credentials; the pipeline, the bulk runner, the blocking facade and the heavy dependencies come
    with the first client or the first call (issue 12: the import costs at most 1.3x `import httpx`)."""
    code = (
        "import sys, httpx; before = set(sys.modules); "
        "from amili_async import AsyncAmiliClient, CreditorPayment, ApiCodeJwtAuth; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    added = set(done.stdout.split())
    assert "amili_async.client" in added and "amili_async.models.actions" in added  # it did import
    deferred = {
        "anyio",
        "asyncio",
        "cattrs",
        "jwt",
        "cryptography",
        "aiohttp",
        "tenacity",
        "amili_async._pipeline",
        "amili_async._tokens",
        "amili_async._telemetry",
        "amili_async.bulk",
        "amili_async.sync",
        "amili_async.resources",
        "amili_async.models.receipts",
        "amili_async.ratelimit",
    }
    assert not (added & deferred), f"imported too early: {sorted(added & deferred)}"


def test_every_public_name_still_resolves() -> None:
    code = (
        "import amili_async, amili_async.models as m, amili_async.auth as a; "
        "print([n for n in amili_async.__all__ if not hasattr(amili_async, n)], "
        "[n for n in m.__all__ if not hasattr(m, n)], [n for n in a.__all__ if not hasattr(a, n)])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[] [] []"
