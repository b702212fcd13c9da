"""The Starlette app in process on a real uvicorn: negotiate, statuses, HubContext, mounting."""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import httpx
import orjson
import pytest
import websockets
from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from backplane import Hub, User
from server import Hubplane, Settings, create_app

from .util import recv_json, serve_app, ws_json_client


class Echo(Hub):
    async def echo(self, value: Any) -> Any:
        return value

    async def whoami(self) -> str | None:
        return self.context.user_identifier

    async def join(self, group: str) -> None:
        await self.groups.add(self.context.connection_id, group)


async def by_query(request: HTTPConnection) -> User | str | None:
    return request.query_params.get("user")


async def test_negotiate_shapes_and_statuses() -> None:
    app = create_app({"/hubs/echo": Echo}, settings=Settings())
    async with serve_app(app) as host, httpx.AsyncClient(base_url=f"http://{host}") as http:
        r = await http.post("/hubs/echo/negotiate?negotiateVersion=1")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        body = r.json()
        assert list(body) == [
            "negotiateVersion",
            "connectionId",
            "connectionToken",
            "availableTransports",
        ]
        assert body["negotiateVersion"] == 1
        for key in ("connectionId", "connectionToken"):
            assert len(body[key]) >= 22
            assert set(body[key]) <= set(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            )
        assert body["connectionId"] != body["connectionToken"]
        assert body["availableTransports"][0] == {
            "transport": "WebSockets",
            "transferFormats": ["Text", "Binary"],
        }
        v0 = (await http.post("/hubs/echo/negotiate")).json()
        assert v0["negotiateVersion"] == 0 and "connectionToken" not in v0
        assert (await http.post("/hubs/echo/negotiate?negotiateVersion=7")).json()[
            "negotiateVersion"
        ] == 1
        assert "error" in (await http.post("/hubs/echo/negotiate?negotiateVersion=x")).json()
        # Trailing slash, case-insensitive query keys, unknown parameters kept and ignored.
        r = await http.post("/hubs/echo/negotiate?NegotiateVersion=1&foo=bar")
        assert r.json()["negotiateVersion"] == 1
        assert (await http.get("/hubs/echo/negotiate")).status_code == 405
        assert (await http.post("/hubs/nothere/negotiate")).status_code == 404
        r = await http.get("/hubs/echo")
        assert (r.status_code, r.text) == (400, "Connection ID required")
        r = await http.get("/hubs/echo?id=unknown")
        assert (r.status_code, r.text) == (404, "No Connection with that ID")
        r = await http.post("/hubs/echo/?id=unknown")
        assert r.status_code == 404
        r = await http.put("/hubs/echo?id=x")
        assert r.status_code == 405


async def test_websocket_with_token_v0_and_skip_negotiation() -> None:
    app = create_app({"/hubs/echo": Echo})
    async with serve_app(app) as host, httpx.AsyncClient(base_url=f"http://{host}") as http:
        token = (await http.post("/hubs/echo/negotiate?negotiateVersion=1")).json()[
            "connectionToken"
        ]
        ws = await ws_json_client(f"ws://{host}/hubs/echo?id={token}")
        await ws.send(
            '{"type":1,"invocationId":"1","target":"echo","arguments":[{"a":[1,"b"]}]}\x1e'
        )
        assert await recv_json(ws) == [{"type": 3, "invocationId": "1", "result": {"a": [1, "b"]}}]
        # A second socket for the same token is refused while the first is live.
        with pytest.raises(websockets.InvalidStatus) as err:
            await websockets.connect(f"ws://{host}/hubs/echo?id={token}")
        assert err.value.response.status_code == 409
        # POST and DELETE on a WebSocket connection.
        r = await http.post(f"/hubs/echo?id={token}", content=b"x")
        assert (r.status_code, r.text) == (
            405,
            "POST requests are not allowed for WebSocket connections.",
        )
        r = await http.delete(f"/hubs/echo?id={token}")
        assert r.status_code == 400
        await ws.close()
        v0 = (await http.post("/hubs/echo/negotiate")).json()["connectionId"]
        ws0 = await ws_json_client(f"ws://{host}/hubs/echo/?id={v0}")
        await ws0.close()
        ws_skip = await ws_json_client(f"ws://{host}/hubs/echo")
        await ws_skip.send('{"type":1,"invocationId":"1","target":"Echo","arguments":[1]}\x1e')
        assert await recv_json(ws_skip) == [{"type": 3, "invocationId": "1", "result": 1}]
        await ws_skip.close()
        with pytest.raises(websockets.InvalidStatus) as err:
            await websockets.connect(f"ws://{host}/hubs/echo?id=nope")
        assert err.value.response.status_code == 404
        # The used token is gone once its socket closed.
        await asyncio.sleep(0.1)
        with pytest.raises(websockets.InvalidStatus) as err:
            await websockets.connect(f"ws://{host}/hubs/echo?id={token}")
        assert err.value.response.status_code == 404


async def test_hub_context_on_startup_and_authenticator() -> None:
    started: list[Hubplane] = []
    stop = asyncio.Event()

    async def ticker(hubplane: Hubplane) -> None:
        started.append(hubplane)
        ctx = hubplane.hub_context(Echo)
        assert hubplane.hub_context("/hubs/echo/") is ctx

        async def run() -> None:
            n = 0
            while not stop.is_set() and n < 500:
                await ctx.clients.group("ticks").send("Tick", n)
                await ctx.clients.user("carol").send("ForCarol", n)
                n += 1
                await asyncio.sleep(0.01)

        asyncio.get_running_loop().create_task(run())

    app = create_app({"/hubs/echo": Echo}, on_startup=[ticker], authenticate=by_query)
    async with serve_app(app) as host:
        assert started and started[0] is app.state.hubplane
        ws = await ws_json_client(f"ws://{host}/hubs/echo?user=carol")
        await ws.send('{"type":1,"invocationId":"1","target":"whoami","arguments":[]}\x1e')
        seen: set[str] = set()
        for _ in range(20):
            for m in await recv_json(ws):
                seen.add(m.get("target") or f"completion:{m.get('result')}")
            if {"completion:carol", "ForCarol"} <= seen:
                break
        assert {"completion:carol", "ForCarol"} <= seen
        await ws.send('{"type":1,"invocationId":"2","target":"join","arguments":["ticks"]}\x1e')
        for _ in range(20):
            if any(m.get("target") == "Tick" for m in await recv_json(ws)):
                break
        else:
            pytest.fail("no Tick after joining the group")
        stop.set()
        await ws.close()


async def test_mounted_in_a_parent_app_with_lifespan() -> None:
    hub_app = create_app({"/chat": Echo})
    hubplane: Hubplane = hub_app.state.hubplane

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("home")

    parent = Starlette(
        routes=[Route("/", home), Mount("/rt", app=hub_app)], lifespan=hubplane.lifespan
    )
    async with serve_app(parent) as host, httpx.AsyncClient(base_url=f"http://{host}") as http:
        assert (await http.get("/")).text == "home"
        token = (await http.post("/rt/chat/negotiate?negotiateVersion=1")).json()["connectionToken"]
        ws = await ws_json_client(f"ws://{host}/rt/chat?id={token}")
        await ws.send('{"type":1,"invocationId":"1","target":"echo","arguments":["mounted"]}\x1e')
        assert await recv_json(ws) == [{"type": 3, "invocationId": "1", "result": "mounted"}]
        # The lifespan started the timers: pings arrive at the keep-alive interval.
        await ws.close()
    assert hubplane.draining  # shutdown ran


async def test_server_shutdown_closes_clients_with_allow_reconnect() -> None:
    app = create_app({"/hubs/echo": Echo})
    frames: list[Any] = []
    async with serve_app(app) as host:
        ws = await ws_json_client(f"ws://{host}/hubs/echo")
        reader = asyncio.create_task(_drain(ws, frames))
    await asyncio.wait_for(reader, 10)
    msgs = [orjson.loads(p) for f in frames for p in f.encode().split(b"\x1e") if p]
    assert {"type": 7, "allowReconnect": True} in msgs


async def _drain(ws: Any, frames: list[Any]) -> None:
    try:
        async for frame in ws:
            frames.append(frame)
    except websockets.ConnectionClosed:
        pass


class Flooder(Hub):
    async def flood(self, count: int, size: int) -> None:
        payload = "x" * size
        for _ in range(count):
            await self.clients.caller.send("Data", payload)

    async def echo(self, value: Any) -> Any:
        return value


def _client_frame(payload: bytes) -> bytes:
    """A masked WebSocket text frame, as a client must send it."""
    mask = os.urandom(4)
    header = bytes([0x81])
    n = len(payload)
    if n < 126:
        header += bytes([0x80 | n])
    else:
        header += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _stalled_client(host: str, path: str, frames: list[bytes]) -> asyncio.StreamWriter:
    """Open a WebSocket with a raw socket, send frames, and never read again."""
    hostname, port = host.split(":")
    reader, writer = await asyncio.open_connection(hostname, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert response.startswith(b"HTTP/1.1 101"), response
    for frame in frames:
        writer.write(_client_frame(frame))
    await writer.drain()
    return writer


async def test_a_client_that_stops_reading_is_dropped_and_others_carry_on() -> None:
    settings = Settings(max_buffer_size=256 * 1024)
    app = create_app({"/hubs/flood": Flooder}, settings=settings)
    handler = app.state.hubplane.endpoints["/hubs/flood"].handler
    async with serve_app(app) as host:
        stalled = await _stalled_client(
            host,
            "/hubs/flood",
            [
                b'{"protocol":"json","version":1}\x1e',
                b'{"type":1,"target":"flood","arguments":[4000,16000]}\x1e',
            ],
        )
        for _ in range(200):
            if handler.stats.slow_clients:
                break
            await asyncio.sleep(0.05)
        assert handler.stats.slow_clients == 1
        healthy = await ws_json_client(f"ws://{host}/hubs/flood")
        await healthy.send('{"type":1,"invocationId":"1","target":"echo","arguments":[5]}\x1e')
        assert await recv_json(healthy) == [{"type": 3, "invocationId": "1", "result": 5}]
        await healthy.close()
        stalled.close()
        for _ in range(100):
            if len(handler.connections) == 0:
                break
            await asyncio.sleep(0.1)
        assert len(handler.connections) == 0
