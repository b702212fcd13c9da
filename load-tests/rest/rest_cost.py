"""What one REST ``:send`` costs inside a node, without HTTP: the app called in process.

The app (``create_app`` with ``--rest-access-key``) is called directly with an ASGI scope, a
body and a ``send`` that keeps what it is given, so the figure is hubplane's own work per call
(reading the call, the token, routing, the body, the lifetime layer's publish) without uvicorn
and sockets. Once with the in-memory backplane, once with a private redis-server.

    .venv/bin/python load-tests/rest/rest_cost.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "load-tests" / "peers"), str(ROOT / "load-tests" / "redis")]

import jwt  # noqa: E402
from common import start_redis  # noqa: E402
from hubplane_hub import BenchHub  # noqa: E402

from server.app import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402

KEY = "load-test-rest-access-key-0123456789abcdef"


async def measure(redis_url: str | None, calls: int, fresh: bool) -> float:
    """Microseconds per call."""
    settings = Settings(rest_access_key=KEY, redis_url=redis_url, log_level="warning")
    app = create_app({"/hubs/bench": BenchHub}, settings=settings.validate())
    hubplane = app.state.hubplane
    await hubplane.startup()
    aud = "http://127.0.0.1/api/hubs/bench/:send"
    count = calls if fresh else 1
    tokens = [
        jwt.encode({"aud": aud, "exp": int(time.time()) + 600, "n": n}, KEY, "HS256")
        for n in range(count)
    ]
    body = b'{"target":"Msg","arguments":["hello",1]}'

    def scope(token: str) -> dict[str, Any]:
        return {
            "type": "http",
            "method": "POST",
            "path": "/api/hubs/bench/:send",
            "raw_path": b"/api/hubs/bench/:send",
            "query_string": b"api-version=2022-06-01",
            "root_path": "",
            "scheme": "http",
            "client": ("127.0.0.1", 40000),
            "headers": [
                (b"host", b"127.0.0.1:8000"),
                (b"authorization", b"Bearer " + token.encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }

    scopes = [scope(t) for t in tokens]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    for i in range(min(1000, calls)):  # warm-up
        await app(dict(scopes[i % count]), receive, send)
    statuses.clear()
    started = time.perf_counter()
    for i in range(calls):
        await app(dict(scopes[i % count]), receive, send)
    elapsed = time.perf_counter() - started
    await hubplane.shutdown()
    assert statuses == [202] * calls, set(statuses)
    return elapsed / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    redis, url = start_redis()
    try:
        for backplane, redis_url in (("memory", None), ("redis", url)):
            for fresh in (False, True):
                cost = asyncio.run(measure(redis_url, args.calls, fresh))
                token = "a fresh token per call" if fresh else "one token"
                print(f"{backplane:7} {token:23} {cost:6.1f} µs per :send", flush=True)
    finally:
        redis.terminate()
        redis.wait(10)


if __name__ == "__main__":
    main()
