"""Regression tests for review findings: stateful resume behind middleware, racing
reconnects, failing policies, ended tokens, CORS request headers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest
import websockets

from backplane import Hub, User, authorize
from server.app import create_app
from server.settings import Settings

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
        url = f"ws://{host}/hub?id={negotiated['connectionToken']}"
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
        ws.transport.abort()  # a drop without a close frame
        await asyncio.sleep(0.3)
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


class PolicyHub(Hub):
    @authorize(policy=lambda user: user.claims["plan"] == "pro")
    async def export(self) -> str:
        return "data"


async def test_a_failing_policy_refuses_instead_of_hanging() -> None:
    app = create_app({"/hub": PolicyHub}, Settings(), authenticate=lambda r: User("ann"))
    async with serve_app(app) as host:
        ws = await websockets.connect(f"ws://{host}/hub", ping_interval=None)
        await ws.send(orjson.dumps({"protocol": "json", "version": 1}).decode() + RS)
        assert await ws.recv() == "{}" + RS
        await ws.send(
            orjson.dumps(
                {"type": 1, "invocationId": "1", "target": "Export", "arguments": []}
            ).decode()
            + RS
        )
        (reply,) = await frames(ws, 1)
        assert reply["error"] == "Failed to invoke 'Export' because user is unauthorized"
        await ws.close()


async def test_an_ended_connection_token_starts_nothing_again() -> None:
    app = create_app({"/hub": EchoHub}, Settings(token_secret="secret"))
    async with serve_app(app) as host, httpx.AsyncClient(trust_env=False) as http:
        base = f"http://{host}/hub"
        token = (await http.post(f"{base}/negotiate?negotiateVersion=1")).json()["connectionToken"]
        assert token.startswith("h1.")
        assert (await http.get(base, params={"id": token})).status_code == 200
        hello = b'{"protocol":"json","version":1}\x1e'
        assert (await http.post(base, params={"id": token}, content=hello)).status_code == 200
        assert (await http.delete(base, params={"id": token})).status_code == 202
        await asyncio.sleep(0.1)
        # Replayed within its freshness window: refused, not a second connection.
        assert (await http.get(base, params={"id": token})).status_code == 404


async def test_cors_preflight_allows_the_requested_headers() -> None:
    app = create_app({"/hub": EchoHub}, Settings(cors_origins=("https://app.example",)))
    async with serve_app(app) as host, httpx.AsyncClient(trust_env=False) as http:
        r = await http.options(
            f"http://{host}/hub/negotiate",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-custom-header, authorization",
            },
        )
        assert r.status_code in (200, 204)
        assert "x-custom-header" in r.headers["access-control-allow-headers"]
