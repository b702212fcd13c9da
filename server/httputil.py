"""HTTP helpers every room of the server shares: JSON, paths, query values, refusals.

A leaf module (Starlette and orjson only), so that the app, the admin API, metrics and the
transports can all use it without importing one another.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

# The headers that keep every long-polling answer out of caches.
NO_CACHE = [
    (b"cache-control", b"no-cache, no-store"),
    (b"pragma", b"no-cache"),
    (b"expires", b"Thu, 01 Jan 1970 00:00:00 GMT"),
]


def normalize_path(path: str) -> str:
    """``/hubs/chat/`` -> ``/hubs/chat``; always one leading slash."""
    path = "/" + path.strip("/")
    return path


def query_value(request: Request, name: str) -> str | None:
    """A query parameter, matched case-insensitively as ASP.NET Core does."""
    value = request.query_params.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, val in request.query_params.multi_items():
        if key.lower() == lowered:
            return val
    return None


def scope_header(scope: Any, name: bytes) -> str | None:
    """The first header ``name`` (lower-case bytes) of an ASGI scope, decoded, or None."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def json_response(body: Any, status_code: int = 200) -> Response:
    """A compact JSON response."""
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


def no_cache(response: Response) -> Response:
    """``response`` with the headers that keep every poll answer out of caches."""
    for name, value in NO_CACHE:
        response.headers[name.decode()] = value.decode()
    return response


def refuse(transport: str | None, status: int, text: str) -> Response:
    """A plain-text refusal; polls carry the no-cache headers on every answer."""
    response = PlainTextResponse(text, status_code=status)
    return no_cache(response) if transport == "LongPolling" else response


class AsgiResponse(Response):
    """Hands the request's ``receive`` and ``send`` to a transport that writes its own answer."""

    def __init__(self, app: Callable[[Any, Any, Any], Awaitable[None]]) -> None:
        super().__init__()
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
