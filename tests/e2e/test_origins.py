"""Cross-site WebSocket hijacking: which upgrades a ``hubplane serve`` process refuses.

Raw upgrades over loopback, so every header (Host, Origin, Cookie, X-Forwarded-*) is the
test's. The browser's view of the same rule is in test_browser.py.
"""

from __future__ import annotations

import base64
import os
import socket
import time
from typing import Any

import httpx
import jwt
import pytest

pytestmark = pytest.mark.e2e

HUBS = {"/hubs/demo": "server.demo:DemoHub"}
KEY = "origins-rest-access-key-0123456789abcdef"


def upgrade(port: int, headers: dict[str, str], host: str | None = None) -> int:
    """The status a WebSocket upgrade of the demo hub gets (101 when accepted)."""
    lines = [
        "GET /hubs/demo HTTP/1.1",
        f"Host: {host or f'127.0.0.1:{port}'}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_cookies_with_another_origin_are_refused(hubplane_server: Any) -> None:
    server = hubplane_server(HUBS)
    port = server.port
    own = f"http://127.0.0.1:{port}"
    cookie = {"Cookie": "session=s3cret"}
    assert upgrade(port, {"Origin": "https://evil.example", **cookie}) == 403
    assert upgrade(port, {"Origin": f"http://127.0.0.1:{port + 1}", **cookie}) == 403
    assert upgrade(port, {"Origin": "null", **cookie}) == 403
    assert upgrade(port, {"Origin": own, **cookie}) == 101
    assert upgrade(port, {"Origin": own.upper(), **cookie}) == 101
    assert upgrade(port, {"Origin": "http://app.example", **cookie}, host="app.example") == 101
    assert upgrade(port, {"Origin": "https://app.example", **cookie}, host="app.example") == 101
    assert upgrade(port, {"Origin": "https://app.example:8443", **cookie}, "app.example") == 403
    # Token clients (no cookies) and non-browser clients (no Origin) are not concerned.
    assert upgrade(port, {"Origin": "https://evil.example"}) == 101
    assert upgrade(port, cookie) == 101
    # X-Forwarded-Host counts only from the proxies of --forwarded-allow-ips (none here).
    forwarded = {"X-Forwarded-Host": "public.example", "X-Forwarded-For": "203.0.113.7"}
    assert upgrade(port, {"Origin": "https://public.example", **cookie, **forwarded}) == 403


def test_forwarded_allow_ips_serves_websockets_and_the_rest_api(hubplane_server: Any) -> None:
    server = hubplane_server(
        HUBS, extra_args=["--forwarded-allow-ips", "127.0.0.1", "--rest-access-key", KEY]
    )
    port = server.port
    cookie = {"Cookie": "session=s3cret"}
    # uvicorn trusts the proxy too and replaces the client by X-Forwarded-For's: the proxy's
    # own address is what counts.
    forwarded = {"X-Forwarded-Host": "public.example", "X-Forwarded-For": "203.0.113.7"}
    assert upgrade(port, {"Origin": "https://public.example", **cookie, **forwarded}) == 101
    assert upgrade(port, {"Origin": "https://evil.example", **cookie, **forwarded}) == 403
    assert upgrade(port, {"Origin": "https://public.example", **cookie}) == 403
    aud = "https://public.example/api/hubs/demo/:send"
    token = jwt.encode({"aud": aud, "exp": time.time() + 60}, KEY, algorithm="HS256")
    with httpx.Client(base_url=server.url, trust_env=False) as http:
        r = http.post(
            "/api/hubs/demo/:send?api-version=2022-06-01",
            json={"target": "Receive", "arguments": []},
            headers={"authorization": f"Bearer {token}", "x-forwarded-proto": "https", **forwarded},
        )
        assert r.status_code == 202, r.text


def test_cors_origins_keep_their_rule(hubplane_server: Any) -> None:
    server = hubplane_server(HUBS, extra_args=["--cors-origins", "https://app.example"])
    port = server.port
    assert upgrade(port, {"Origin": "https://app.example", "Cookie": "a=b"}) == 101
    assert upgrade(port, {"Origin": "https://evil.example"}) == 403
    assert upgrade(port, {"Cookie": "a=b"}) == 101
