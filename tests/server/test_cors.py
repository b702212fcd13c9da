"""CORS (``server/cors.py``) on a real uvicorn in process: what a preflight allows.

``test_cors_with_credentials`` walks it as a browser does: origins listed and not,
credentials, and WebSocket origins (browsers apply no CORS to those; the server checks).
"""

from __future__ import annotations

import httpx
import pytest
import websockets

from backplane import Hub
from server.app import create_app
from server.settings import Settings

from .util import serve_app


class EchoHub(Hub):
    async def echo(self, x: object) -> object:
        return x


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


async def test_cors_with_credentials() -> None:
    page = "http://app.example.test:8080"
    app = create_app(
        {"/hubs/echo": EchoHub}, Settings(cors_origins=(page, "https://other.example.test"))
    )
    async with (
        serve_app(app) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
    ):
        preflight = {
            "origin": page,
            "access-control-request-method": "POST",
            "access-control-request-headers": "x-requested-with,x-signalr-user-agent",
        }
        r = await http.options("/hubs/echo/negotiate?negotiateVersion=1", headers=preflight)
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == page
        assert r.headers["access-control-allow-credentials"] == "true"
        assert set(r.headers["access-control-allow-methods"].split(", ")) >= {
            "GET",
            "POST",
            "DELETE",
        }
        allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
        assert allowed >= {
            "x-requested-with",
            "x-signalr-user-agent",
            "authorization",
            "content-type",
        }
        # The actual requests echo the exact origin (never *) with credentials allowed.
        r = await http.post("/hubs/echo/negotiate?negotiateVersion=1", headers={"origin": page})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == page
        assert r.headers["access-control-allow-credentials"] == "true"
        assert "origin" in r.headers["vary"].lower()
        url = f"/hubs/echo?id={r.json()['connectionToken']}"
        r = await http.get(url, headers={"origin": page})
        assert r.headers["access-control-allow-origin"] == page
        r = await http.options(url, headers={**preflight, "access-control-request-method": "GET"})
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == page
        # An origin not listed gets no CORS header at all; requests without Origin neither.
        evil = {"origin": "http://evil.example.test"}
        r = await http.options(
            "/hubs/echo/negotiate", headers={**preflight, "origin": "http://evil.example.test"}
        )
        assert not any(k.startswith("access-control-") for k in r.headers)
        r = await http.post("/hubs/echo/negotiate", headers=evil)
        assert r.status_code == 200
        assert not any(k.startswith("access-control-") for k in r.headers)
        r = await http.post("/hubs/echo/negotiate")
        assert not any(k.startswith("access-control-") for k in r.headers)
        # WebSockets: browsers apply no CORS, so the server checks Origin itself.
        with pytest.raises(websockets.InvalidStatus) as err:
            await websockets.connect(f"ws://{host}/hubs/echo", origin="http://evil.example.test")
        assert err.value.response.status_code == 403
        ws = await websockets.connect(f"ws://{host}/hubs/echo", origin=page)
        await ws.close()
        ws = await websockets.connect(f"ws://{host}/hubs/echo")  # no Origin: not a browser
        await ws.close()
