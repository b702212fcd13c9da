"""``--admin-port``: /metrics, the admin API and the dashboard on a listener of their own."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import get_free_port
from tests.server.util import ws_json_client

pytestmark = pytest.mark.e2e

HUBS = {"/hubs/demo": "server.demo:DemoHub"}
TOKEN = "admin-listener-token"


async def test_operator_routes_move_to_the_admin_listener(hubplane_server: Any) -> None:
    admin_port = get_free_port()
    server = hubplane_server(
        HUBS,
        extra_args=["--admin-token", TOKEN, "--dashboard", "--admin-port", str(admin_port)],
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    admin_url = f"http://127.0.0.1:{admin_port}"
    sockets = [await ws_json_client(server.ws_url()) for _ in range(3)]
    try:
        async with (
            httpx.AsyncClient(base_url=server.url, trust_env=False) as main,
            httpx.AsyncClient(base_url=admin_url, trust_env=False) as admin,
        ):
            # The hubs' listener serves none of them (the hubs and health, as before).
            for path in ("/metrics", "/_hubplane/hubs", "/_hubplane/dashboard"):
                assert (await main.get(path, headers=auth)).status_code == 404, path
            assert (await main.get("/healthz")).status_code == 200
            # The admin listener serves them (and health), and no hub.
            metrics = await admin.get("/metrics")
            assert metrics.status_code == 200 and "hubplane_connections" in metrics.text
            assert (await admin.get("/_hubplane/hubs")).status_code == 401
            hubs = (await admin.get("/_hubplane/hubs", headers=auth)).json()
            assert hubs == {"hubs": [{"path": "/hubs/demo", "connections": 3}]}
            page = await admin.get("/_hubplane/dashboard")
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            assert (await admin.get("/readyz")).status_code == 200
            assert (await admin.post("/hubs/demo/negotiate?negotiateVersion=1")).status_code == 404
            # Connections in pages, with a cursor to the next.
            first = (await admin.get("/_hubplane/connections?limit=2", headers=auth)).json()
            assert first["count"] == 3 and len(first["connections"]) == 2 and first["next"]
            rest = (
                await admin.get(
                    "/_hubplane/connections",
                    params={"limit": "2", "cursor": first["next"]},
                    headers=auth,
                )
            ).json()
            assert len(rest["connections"]) == 1 and rest["next"] is None
            assert len(set(first["connections"] + rest["connections"])) == 3
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))
