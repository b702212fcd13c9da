"""The shape of ``server/`` holds: no import cycle (not even through ``TYPE_CHECKING``), no file
over 600 lines, ``backplane`` never names ``server``, no transport names the app, and the
background tasks have an owner that cancels them."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

from server.tasks import BackgroundTasks

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 600


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {
        _module(path): path
        for package in ("server", "backplane")
        for path in (ROOT / package).rglob("*.py")
    }


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module of ours that ``name`` imports, at any depth, ``TYPE_CHECKING`` included."""
    found: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                if f"{source}.{alias.name}" in known:
                    found.add(f"{source}.{alias.name}")
                elif source in known:
                    found.add(source)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A path of imports from ``start`` back to itself, or None."""
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, trail = stack.pop()
        for target in graph.get(node, ()):
            if target == start:
                return [*trail, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*trail, target]))
    return None


def test_no_import_cycle_in_server() -> None:
    graph = _graph()
    cycles = [
        cycle
        for name in sorted(graph)
        if name.startswith("server") and (cycle := _cycle_from(name, graph)) is not None
    ]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_backplane_never_imports_server() -> None:
    graph = _graph()
    wrong = {
        (name, target)
        for name, targets in graph.items()
        if name.startswith("backplane")
        for target in targets
        if target.startswith("server")
    }
    assert not wrong, wrong


def test_transports_do_not_name_the_app() -> None:
    graph = _graph()
    wrong = {
        (name, target)
        for name, targets in graph.items()
        if name.startswith("server.transports")
        for target in targets
        if not target.startswith(("server.transports", "server.auth", "server.httputil"))
        and target.startswith("server")
        and target not in ("server.registry", "server.tokens")
    }
    assert not wrong, wrong


def test_no_server_file_over_the_limit() -> None:
    long = {
        str(path.relative_to(ROOT)): count
        for path in (ROOT / "server").rglob("*.py")
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


async def test_background_tasks_are_held_then_cancelled_on_close() -> None:
    tasks = BackgroundTasks()
    finished: list[str] = []
    stuck = asyncio.Event()

    async def quick() -> None:
        finished.append("quick")

    async def forever() -> None:
        await stuck.wait()

    tasks.spawn(quick())
    hanging = tasks.spawn(forever())
    assert len(tasks) == 2
    await tasks.close(0.2)
    assert finished == ["quick"]  # given the time to finish
    assert hanging.cancelled()  # then cancelled, not left running
    assert len(tasks) == 0
