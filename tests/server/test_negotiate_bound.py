"""Negotiated connections waiting for their transport are bounded per node: past
``--max-pending-negotiations`` negotiate answers 503 (with Retry-After); a connection that
starts, or a record that expires, makes room. A real uvicorn server in the test's loop."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from backplane import Hub
from server.app import create_app
from server.settings import Settings
from tests.server.util import serve_app, ws_json_client


class Chat(Hub):
    async def hello(self) -> str:
        return "hi"


async def test_negotiate_answers_503_past_the_bound_until_room_is_made() -> None:
    settings = Settings(max_pending_negotiations=5, disconnect_timeout=0.5).validate()
    app = create_app({"/hubs/chat": Chat}, settings=settings)
    hubplane: Any = app.state.hubplane
    async with serve_app(app) as address:
        async with httpx.AsyncClient(base_url=f"http://{address}", trust_env=False) as http:

            async def negotiate() -> httpx.Response:
                return await http.post("/hubs/chat/negotiate?negotiateVersion=1")

            tokens = []
            for _ in range(5):
                answer = await negotiate()
                assert answer.status_code == 200
                tokens.append(answer.json()["connectionToken"])
            refused = await negotiate()
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "1"
            assert len(hubplane.registry.records) == 5
            # One of them starts: it no longer waits, and makes room for one more.
            ws = await ws_json_client(f"ws://{address}/hubs/chat?id={tokens[0]}")
            try:
                assert len(hubplane.registry.pending) == 4
                assert (await negotiate()).status_code == 200
                assert (await negotiate()).status_code == 503
                # The rest expire after --disconnect-timeout (at the ticker's next tick): room.
                for _ in range(60):
                    if not hubplane.registry.pending:
                        break
                    await asyncio.sleep(0.05)
                assert len(hubplane.registry.pending) == 0
                assert (await negotiate()).status_code == 200
            finally:
                await ws.close()
            refusals = hubplane.endpoints["/hubs/chat"].handler.stats.refusals
            assert refusals["negotiations"] == 2
