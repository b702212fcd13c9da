"""CORS with credentials for the origins of ``--cors-origins`` (HTTP requests only).

The SignalR clients send credentials (cookies) by default, so the exact origin is echoed with
``Access-Control-Allow-Credentials: true``; ``*`` is never used. A request whose origin is not
listed gets no CORS header at all, so the browser refuses the answer. Preflights (``OPTIONS``
with ``Access-Control-Request-Method``) are answered here with 204 and never reach the app.

Starlette's ``CORSMiddleware`` is not used: as app middleware it would also wrap the hub
WebSockets (which skip the middleware stack for speed), and it adds
``Access-Control-Allow-Credentials`` to answers for origins it does not allow.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

ALLOWED_METHODS = b"GET, POST, DELETE, OPTIONS"
# What the SignalR clients send: X-Requested-With, the client's user agent, bearer tokens,
# and the Content-Type of POST bodies.
ALLOWED_HEADERS = b"X-Requested-With, X-SignalR-User-Agent, Authorization, Content-Type"
MAX_AGE = b"600"  # seconds a browser may reuse a preflight (a poll and a POST each need one)


def allowed_headers(scope: Any) -> bytes:
    """The SignalR headers, and whatever else the preflight asks for (clients may add headers
    of their own through the client's ``headers`` option)."""
    for name, value in scope.get("headers", ()):
        if name == b"access-control-request-headers" and value:
            return ALLOWED_HEADERS + b", " + bytes(value)
    return ALLOWED_HEADERS


def origin_allowed(origin: str, origins: frozenset[str]) -> bool:
    """True when ``origin`` (as the browser sent it) is one of ``origins`` (lower case)."""
    return origin.lower() in origins


class CorsLayer:
    """An ASGI wrapper adding CORS headers for the listed origins."""

    def __init__(self, app: Any, origins: Iterable[str]) -> None:
        self.app = app
        self.origins = frozenset(o.lower() for o in origins)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = None
        preflight = False
        for key, value in scope["headers"]:
            if key == b"origin":
                origin = value
            elif key == b"access-control-request-method":
                preflight = True
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = origin_allowed(origin.decode("latin-1"), self.origins)
        if preflight and scope["method"] == "OPTIONS":
            headers = []
            if allowed:
                headers = [
                    (b"vary", b"Origin"),
                    (b"access-control-allow-origin", origin),
                    (b"access-control-allow-credentials", b"true"),
                    (b"access-control-allow-methods", ALLOWED_METHODS),
                    (b"access-control-allow-headers", allowed_headers(scope)),
                    (b"access-control-max-age", MAX_AGE),
                ]
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        if not allowed:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if not k.lower().startswith(b"access-control-allow-")
                ]
                headers += [
                    (b"access-control-allow-origin", origin),
                    (b"access-control-allow-credentials", b"true"),
                    (b"vary", b"Origin"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cors)
