"""Races of the plain-HTTP transports, on a real uvicorn in process.

- A transport that ends while the hub's ``on_connected`` still runs (the handshake arrives in a
  POST, the end in another request): ``on_disconnected`` still runs, once, after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from backplane import Hub
from server import Settings, create_app

from .util import serve_app

HANDSHAKE = b'{"protocol":"json","version":1}\x1e'
EVENTS: list[tuple[str, str]] = []
GATE: dict[str, asyncio.Event] = {}


class SlowStart(Hub):
    async def on_connected(self) -> None:
        EVENTS.append(("connecting", self.context.connection_id))
        await GATE["open"].wait()
        EVENTS.append(("connected", self.context.connection_id))

    async def on_disconnected(self, exception: Exception | None) -> None:
        EVENTS.append(("disconnected", self.context.connection_id))


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def app_and_gate() -> Any:
    EVENTS.clear()
    GATE["open"] = asyncio.Event()
    return create_app({"/hubs/slow": SlowStart}, settings=Settings())


async def ended_during_on_connected(transport: str) -> None:
    app = app_and_gate()
    hubplane = app.state.hubplane
    async with (
        serve_app(app) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
    ):
        n = (await http.post("/hubs/slow/negotiate?negotiateVersion=1")).json()
        token, cid = n["connectionToken"], n["connectionId"]
        url = f"/hubs/slow?id={token}"
        if transport == "sse":
            stream_cm = http.stream("GET", url, headers={"accept": "text/event-stream"})
            stream = await stream_cm.__aenter__()
            assert stream.status_code == 200
        else:
            assert (await http.get(url)).status_code == 200  # the first poll
        post = asyncio.create_task(http.post(url, content=HANDSHAKE))
        await until(lambda: ("connecting", cid) in EVENTS)
        # The transport ends while on_connected waits.
        if transport == "sse":
            await stream_cm.__aexit__(None, None, None)
        else:
            assert (await http.delete(url)).status_code == 202
        await until(lambda: token not in hubplane.http_sessions)
        GATE["open"].set()
        assert (await asyncio.wait_for(post, 5)).status_code == 200
        await until(lambda: ("disconnected", cid) in EVENTS, timeout=3)
        assert EVENTS == [("connecting", cid), ("connected", cid), ("disconnected", cid)]
        # ... and the connection left this node's tables and the hub's presence.
        handler = hubplane.endpoints["/hubs/slow"].handler
        assert cid not in handler.connections
        assert await handler.context.presence.connections() == []


async def test_sse_ended_during_on_connected_runs_on_disconnected_once() -> None:
    await ended_during_on_connected("sse")


async def test_long_polling_deleted_during_on_connected_runs_on_disconnected_once() -> None:
    await ended_during_on_connected("longpolling")
