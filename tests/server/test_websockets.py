"""The WebSocket transport on a real uvicorn in process: stateful resume, with and without an
ASGI middleware in between, and a newer socket taking over from an older one."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest
import websockets

from backplane import Hub
from server.app import create_app
from server.settings import Settings
from tests.waiting import until

from .util import serve_app

RS = "\x1e"


class EchoHub(Hub):
    async def echo(self, x: Any) -> Any:
        return x


class Passthrough:
    """A do-nothing ASGI middleware: the WebSocket ``send`` is no longer uvicorn's own."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


async def frames(ws: Any, count: int, timeout: float = 3.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        try:
            data = await asyncio.wait_for(ws.recv(), max(0.05, deadline - time.monotonic()))
        except TimeoutError:
            break
        out += [m for m in (orjson.loads(p) for p in data.split(RS) if p) if m.get("type") != 6]
    return out


@pytest.mark.parametrize("middleware", [False, True])
async def test_stateful_resume_with_and_without_middleware(middleware: bool) -> None:
    app = create_app({"/hub": EchoHub}, Settings())
    if middleware:
        app.add_middleware(Passthrough)
    async with serve_app(app) as host, httpx.AsyncClient(trust_env=False) as http:
        negotiated = (
            await http.post(
                f"http://{host}/hub/negotiate?negotiateVersion=1&useStatefulReconnect=true"
            )
        ).json()
        assert negotiated["useStatefulReconnect"] is True
        token = negotiated["connectionToken"]
        url = f"ws://{host}/hub?id={token}"
        ws = await websockets.connect(url, ping_interval=None)
        await ws.send(orjson.dumps({"protocol": "json", "version": 2}).decode() + RS)
        assert await ws.recv() == "{}" + RS
        await ws.send(
            orjson.dumps(
                {"type": 1, "invocationId": "1", "target": "echo", "arguments": ["a"]}
            ).decode()
            + RS
        )
        assert [m.get("result") for m in await frames(ws, 1)] == ["a"]
        record = app.state.hubplane.registry.get(token)
        assert record is not None
        ws.transport.abort()  # a drop without a close frame
        # The server has seen the drop: the connection waits for a reconnect (a resume, not
        # the takeover of a socket it still serves, which the third socket below is).
        await until(lambda: record.expiry is not None, 5.0, "the server to see the drop")
        ws2 = await websockets.connect(url, ping_interval=None)
        await ws2.send(orjson.dumps({"type": 9, "sequenceId": 2}).decode() + RS)
        await ws2.send(
            orjson.dumps(
                {"type": 1, "invocationId": "2", "target": "echo", "arguments": ["b"]}
            ).decode()
            + RS
        )
        got = await frames(ws2, 3)
        # Sequence first (the unacknowledged completion 1 replayed), then the new answer.
        assert got[0] == {"type": 9, "sequenceId": 1}
        assert [m.get("result") for m in got if m.get("type") == 3] == ["a", "b"]
        # A newer socket for the same token takes over (the older one may be half-open).
        ws3 = await websockets.connect(url, ping_interval=None)
        await ws3.send(orjson.dumps({"type": 9, "sequenceId": 3}).decode() + RS)
        await ws3.send(
            orjson.dumps(
                {"type": 1, "invocationId": "3", "target": "echo", "arguments": ["c"]}
            ).decode()
            + RS
        )
        got = await frames(ws3, 4)
        assert got[0]["type"] == 9
        assert [m.get("result") for m in got if m.get("type") == 3][-1] == "c"
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws2.recv(), 3)
        await ws3.close()
