"""The once-a-second ticker survives a step that raises: keep-alives and timeouts go on. A real
uvicorn server in the test's loop, a real WebSocket client."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from backplane import Hub
from server.app import create_app
from server.registry import ConnectionRecord
from server.settings import Settings
from tests.server.util import serve_app, ws_json_client


class Chat(Hub):
    async def hello(self) -> str:
        return "hi"


async def test_a_step_that_raises_does_not_stop_the_ticker() -> None:
    settings = Settings(keepalive_interval=0.2, disconnect_timeout=0.2).validate()
    app = create_app({"/hubs/chat": Chat}, settings=settings)
    hubplane: Any = app.state.hubplane
    failures: list[str] = []

    def broken_hook(record: ConnectionRecord) -> None:
        failures.append(record.connection_id)
        raise RuntimeError("a removal hook that fails")

    async with serve_app(app) as address:
        hubplane.registry.removed_hooks.append(broken_hook)
        async with httpx.AsyncClient(base_url=f"http://{address}", trust_env=False) as http:
            negotiated = (await http.post("/hubs/chat/negotiate?negotiateVersion=1")).json()
        # A record claimed by this node that never connects: when it expires, the hook raises
        # inside the ticker's expiry step.
        hubplane.registry.get(negotiated["connectionToken"]).owned = True
        deadline = time.monotonic() + 5
        while not failures and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert failures == [negotiated["connectionId"]]
        # The ticker goes on: a new connection gets its keep-alive pings.
        ws = await ws_json_client(f"ws://{address}/hubs/chat")
        try:
            pings = 0
            while pings < 2:
                frame = await asyncio.wait_for(ws.recv(), 2.0)
                pings += frame.count('{"type":6}')
        finally:
            await ws.close()
