"""One REST call as plain values (path segments, query, headers, body), read from ASGI with
the API's limits, and the reply sent back.

Raw ASGI rather than Starlette's Request: the path is split before it is percent-decoded, so
a user id or a group name may hold ``/`` (sent as ``%2F``), and a publish costs little.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote, unquote_plus

from .errors import RestError

#: The largest body taken (413 beyond), as Azure SignalR Service's 1 MB.
MAX_BODY = 1024 * 1024
#: The most header bytes taken (431 beyond).
MAX_HEADERS = 16 * 1024

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Reply:
    """What a handler answers: a status, a body and its content type."""

    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers


class RestRequest:
    """A REST call: method, the raw path and its decoded segments, query, headers, body."""

    __slots__ = ("scope", "method", "raw_path", "path", "segments", "_query", "headers", "body")

    def __init__(self, scope: MutableMapping[str, Any]) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        raw = scope.get("raw_path") or scope["path"].encode()
        self.raw_path: bytes = raw.split(b"?", 1)[0]
        path = self.raw_path
        # The server's root path, not the mount's (Starlette keeps the former apart).
        root = str(scope.get("app_root_path", scope.get("root_path", ""))).encode()
        if root and path.startswith(root):
            path = path[len(root) :]
        try:
            #: The whole path as the caller sent it, percent-decoded (a token's audience).
            self.path = unquote(self.raw_path.decode("ascii"), errors="strict")
            self.segments = [
                unquote(s, errors="strict") if "%" in s else s
                for s in path.decode("ascii").split("/")
            ]
        except (UnicodeDecodeError, UnicodeEncodeError):
            raise RestError(400, "the path is not valid percent-encoded UTF-8") from None
        if self.segments and self.segments[0] == "":
            del self.segments[0]
        size = 0
        headers: dict[str, str] = {}
        for key, value in scope["headers"]:
            size += len(key) + len(value) + 4
            name = key.decode("latin-1")
            if name not in headers:
                headers[name] = value.decode("latin-1")
        if size > MAX_HEADERS:
            raise RestError(431, f"the request headers exceed {MAX_HEADERS} bytes")
        self.headers = headers
        self._query: dict[str, list[str]] | None = None
        self.body = b""

    async def read_body(self, receive: Receive) -> None:
        """Take the body, at most ``MAX_BODY`` bytes (413 beyond, before reading on)."""
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            raise RestError(413, f"the body exceeds {MAX_BODY} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise RestError(400, "the client went away")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > MAX_BODY:
                    raise RestError(413, f"the body exceeds {MAX_BODY} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _parsed_query(self) -> dict[str, list[str]]:
        query = self._query
        if query is None:
            query = {}
            text = self.scope.get("query_string", b"").decode("latin-1")
            for pair in text.split("&"):
                if not pair:
                    continue
                key, _, value = pair.partition("=")
                if "%" in pair or "+" in pair:
                    key = unquote_plus(key, errors="replace")
                    value = unquote_plus(value, errors="replace")
                query.setdefault(key.lower(), []).append(value)
            self._query = query
        return query

    def query(self, name: str) -> str | None:
        """The first value of a query parameter, its name matched case-insensitively."""
        values = self._parsed_query().get(name.lower())
        return values[0] if values else None

    def query_all(self, name: str) -> list[str]:
        """Every value of a query parameter (``excluded=a&excluded=b``), blanks left out."""
        return [v for v in self._parsed_query().get(name.lower(), ()) if v]

    @property
    def content_type(self) -> str:
        """The media type of the body, lower case, without parameters ("" when none)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def send_reply(send: Send, reply: Reply, head: bool = False) -> None:
    """Write ``reply`` (without its body to a HEAD request)."""
    headers = [(b"content-length", str(len(reply.body)).encode())]
    if reply.content_type:
        headers.append((b"content-type", reply.content_type.encode()))
    for name, value in (reply.headers or {}).items():
        headers.append((name.encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else reply.body})
