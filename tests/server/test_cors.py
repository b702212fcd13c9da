"""CORS (``server/cors.py``) on a real uvicorn in process: what a preflight allows.

(The full browser walk, origins listed and not, credentials and WebSocket origins, is
``test_cors_with_credentials`` in ``test_sse_longpolling.py``.)
"""

from __future__ import annotations

import httpx

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
