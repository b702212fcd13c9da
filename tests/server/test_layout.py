"""The shape of ``server/`` beyond tests/test_architecture.py's rules for both packages: no
transport names the app (they depend on server/transports/base.py's Protocols), and the
background tasks have an owner that cancels them."""

from __future__ import annotations

import asyncio

from server.tasks import BackgroundTasks
from tests.test_architecture import _graph


def test_transports_do_not_name_the_app() -> None:
    graph = _graph(with_typing=True)
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
    assert graph["server.transports.websockets"], "the walk found no import at all"


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
