"""Run an ASGI app on a real uvicorn server inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import orjson
import uvicorn
import websockets

from server.runner import HubplaneServer

RS = b"\x1e"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_app(app: Any) -> AsyncIterator[str]:
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        ws="websockets-sansio",
    )
    server = HubplaneServer(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def ws_json_client(url: str) -> Any:
    """Open a WebSocket and complete the JSON handshake."""
    ws = await websockets.connect(url)
    await ws.send(orjson.dumps({"protocol": "json", "version": 1}).decode() + "\x1e")
    reply = await asyncio.wait_for(ws.recv(), 5)
    assert reply.startswith("{}\x1e"), reply
    return ws


async def recv_json(ws: Any, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The next frame's messages, skipping pings."""
    while True:
        frame = await asyncio.wait_for(ws.recv(), timeout)
        raw = frame.encode() if isinstance(frame, str) else frame
        msgs = [orjson.loads(part) for part in raw.split(RS) if part]
        msgs = [m for m in msgs if m.get("type") != 6]
        if msgs:
            return msgs
