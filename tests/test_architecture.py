"""The shape of the house holds (DESIGN.md, "The house, next"): read from the imports.

An AST walk of every module of ``backplane/`` and ``server/``: imports at module level,
inside functions (they run, later) and under ``if TYPE_CHECKING:`` (the coupling a reader
sees), each counted where the rule says so.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("backplane", "server")
MAX_LINES = 600
# The hub programming model: the only place a cycle may remain (typing only), small.
HUB_MODEL = {
    "backplane.authorization",
    "backplane.clients",
    "backplane.connection",
    "backplane.dispatch",
    "backplane.dispatcher",
    "backplane.filters",
    "backplane.handler",
    "backplane.hub",
    "backplane.lifetime.base",
    "backplane.lifetime.memory",
    "backplane.presence",
}
MAX_CYCLE_FILES = 3


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


def _imports(module: str, path: Path) -> Iterator[tuple[str, bool]]:
    """(imported module, under TYPE_CHECKING) for each import in ``path``."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]

    def walk(nodes: list[ast.stmt], typing_only: bool) -> Iterator[tuple[str, bool]]:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from walk(node.body, True)
                yield from walk(node.orelse, typing_only)
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name, typing_only
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - node.level + 1]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                for alias in node.names:
                    candidate = f"{target}.{alias.name}"
                    yield (candidate if candidate in MODULES else target), typing_only
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    yield from walk([child], typing_only)

    yield from walk(ast.parse(path.read_text(encoding="utf-8")).body, False)


def _graph(with_typing: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        graph[module] = {
            target
            for target, typing_only in _imports(module, path)
            if target in MODULES and target != module and (with_typing or not typing_only)
        }
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_at_run_time() -> None:
    assert _cycles(_graph(with_typing=False)) == []


def test_typing_cycles_only_inside_the_hub_model_and_small() -> None:
    cycles = _cycles(_graph(with_typing=True))
    in_cycles = set().union(*cycles) if cycles else set()
    assert in_cycles <= HUB_MODEL, f"cycles outside the hub model: {cycles}"
    assert len(in_cycles) <= MAX_CYCLE_FILES, f"cycles over {MAX_CYCLE_FILES} files: {cycles}"


def test_no_file_over_600_lines() -> None:
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines (two ideas in one room?): {long}"


def test_backplane_never_imports_server() -> None:
    for module, path in MODULES.items():
        if module.startswith("backplane"):
            for target, _ in _imports(module, path):
                assert not (target == "server" or target.startswith("server.")), (module, target)


def test_the_protocol_layer_imports_no_asyncio() -> None:
    for module, path in MODULES.items():
        if module.startswith("backplane.protocol"):
            for target, _ in _imports(module, path):
                assert target.split(".")[0] != "asyncio", f"{module} imports {target}"


def test_the_walk_sees_the_imports() -> None:
    """The checks above would pass vacuously if the walk found nothing."""
    graph = _graph(with_typing=True)
    assert "backplane.protocol" in graph["backplane.connection"] or any(
        t.startswith("backplane.protocol") for t in graph["backplane.connection"]
    )
    assert "backplane.lifetime.base" in graph["backplane.clients"]
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [{"a", "b"}]
