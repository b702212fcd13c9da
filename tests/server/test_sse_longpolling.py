"""SSE, long polling and query-string tokens over raw HTTP against a real uvicorn.

Each test runs the app in process (``serve_app``) and speaks the transport protocol by hand
with httpx, so status codes, headers and byte layouts are checked exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgpack
import orjson
import pytest
import websockets
from starlette.requests import HTTPConnection

from backplane import Hub, User
from server import Settings, create_app
from server.auth import bearer_token
from server.transports import longpolling
from server.transports.sse import format_event
from tests.waiting import until

from .util import serve_app

RS = b"\x1e"
HANDSHAKE = b'{"protocol":"json","version":1}\x1e'
EVENTS: list[tuple[str, str]] = []


class Echo(Hub):
    async def on_connected(self) -> None:
        EVENTS.append(("connected", self.context.connection_id))

    async def on_disconnected(self, exception: Exception | None) -> None:
        EVENTS.append(("disconnected", self.context.connection_id))

    async def echo(self, value: Any) -> Any:
        return value

    async def whoami(self) -> str | None:
        return self.context.user_identifier

    async def transport(self) -> str:
        return self.context.transport

    async def abort_me(self) -> None:
        self.context.abort()


async def by_header(request: HTTPConnection) -> User | str | None:
    """Reads the Authorization header only: query tokens must arrive here as that header."""
    auth = request.headers.get("authorization", "")
    return auth.removeprefix("Bearer ") or None


def invocation(invocation_id: str, target: str, *args: Any) -> bytes:
    body = {"type": 1, "invocationId": invocation_id, "target": target, "arguments": list(args)}
    return orjson.dumps(body) + RS


def messages(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(part) for part in data.split(RS) if part]


async def negotiate(http: httpx.AsyncClient, path: str = "/hubs/echo") -> dict[str, Any]:
    r = await http.post(f"{path}/negotiate?negotiateVersion=1")
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


async def poll_until(http: httpx.AsyncClient, url: str, wanted: int) -> list[dict[str, Any]]:
    """Poll until ``wanted`` messages (pings excluded) have arrived; at most 10 polls."""
    got: list[dict[str, Any]] = []
    for _ in range(10):
        r = await http.get(url)
        assert r.status_code == 200, r.status_code
        assert r.content == b"" or r.content.endswith(RS), "a poll carried a partial message"
        got += messages(r.content)
        if len(got) >= wanted:
            return got
    raise AssertionError(f"only {got} after 10 polls")


@pytest.fixture
def app_factory() -> Callable[..., Any]:
    EVENTS.clear()

    def make(**settings: Any) -> Any:
        auth = settings.pop("authenticate", None)
        return create_app({"/hubs/echo": Echo}, settings=Settings(**settings), authenticate=auth)

    return make


# --------------------------------------------------------------------------- negotiate


async def test_negotiate_lists_transports_in_order(app_factory: Any) -> None:
    async with serve_app(app_factory()) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        assert (await negotiate(h))["availableTransports"] == [
            {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
            {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
            {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
        ]
    app = app_factory(transports=("longpolling", "ServerSentEvents"), protocols=("json",))
    async with serve_app(app) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        assert (await negotiate(h))["availableTransports"] == [
            {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
            {"transport": "LongPolling", "transferFormats": ["Text"]},
        ]
    # SSE cannot carry MessagePack: not offered when JSON is not served.
    app = app_factory(protocols=("messagepack",))
    async with serve_app(app) as host, httpx.AsyncClient(base_url=f"http://{host}") as h:
        listed = [t["transport"] for t in (await negotiate(h))["availableTransports"]]
        assert listed == ["WebSockets", "LongPolling"]


# --------------------------------------------------------------------------- long polling


async def test_long_polling_round_trip(app_factory: Any) -> None:
    async with (
        serve_app(app_factory()) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
    ):
        n = await negotiate(http)
        url = f"/hubs/echo?id={n['connectionToken']}"
        started = time.monotonic()
        r = await http.get(url + "&_=1")
        # The first poll answers at once with nothing: the client then sends its handshake.
        assert time.monotonic() - started < 1.0
        assert (r.status_code, r.content) == (200, b"")
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["content-length"] == "0"
        assert r.headers["cache-control"] == "no-cache, no-store"
        assert r.headers["pragma"] == "no-cache"
        assert r.headers["expires"] == "Thu, 01 Jan 1970 00:00:00 GMT"
        # Handshake and two invocations in one POST body.
        body = HANDSHAKE + invocation("1", "Echo", "a") + invocation("2", "Transport")
        r = await http.post(url, content=body, headers={"content-type": "text/plain"})
        assert (r.status_code, r.text) == (200, "")
        r = await http.get(url + "&_=2")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["content-length"] == str(len(r.content))
        assert r.content.startswith(b"{}\x1e")  # the handshake reply, no pings
        got = messages(r.content[3:])
        got += await poll_until(http, url, 2 - len(got)) if len(got) < 2 else []
        assert got == [
            {"type": 3, "invocationId": "1", "result": "a"},
            {"type": 3, "invocationId": "2", "result": "LongPolling"},
        ]
        assert EVENTS == [("connected", n["connectionId"])]
        # DELETE ends the connection: 202, then the token is gone.
        r = await http.delete(url)
        assert r.status_code == 202
        await until(lambda: ("disconnected", n["connectionId"]) in EVENTS)
        assert (await http.get(url)).status_code == 404
        assert (await http.post(url, content=invocation("3", "Echo", 1))).status_code == 404


async def test_long_polling_timeout_supersede_and_delete(
    app_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        serve_app(app_factory()) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
    ):
        n = await negotiate(http)
        url = f"/hubs/echo?id={n['connectionToken']}"
        assert (await http.get(url)).status_code == 200
        await http.post(url, content=HANDSHAKE)
        assert (await http.get(url)).content == b"{}\x1e"
        # Nothing to send: the poll ends with 200 and no body after the poll timeout.
        monkeypatch.setattr(longpolling, "POLL_TIMEOUT", 0.3)
        started = time.monotonic()
        r = await http.get(url)
        assert (r.status_code, r.content) == (200, b"")
        assert 0.25 < time.monotonic() - started < 3
        # A second poll while one waits: the first answers 204, the second carries the data.
        monkeypatch.setattr(longpolling, "POLL_TIMEOUT", 5.0)
        first = asyncio.create_task(http.get(url))
        await asyncio.sleep(0.2)
        second = asyncio.create_task(http.get(url))
        r1 = await asyncio.wait_for(first, 5)
        assert r1.status_code == 204
        await http.post(url, content=invocation("1", "Echo", 5))
        r2 = await asyncio.wait_for(second, 5)
        assert (r2.status_code, messages(r2.content)) == (
            200,
            [{"type": 3, "invocationId": "1", "result": 5}],
        )
        # DELETE while a poll waits: the poll answers 204 and DELETE 202.
        pending = asyncio.create_task(http.get(url))
        await asyncio.sleep(0.2)
        assert (await http.delete(url)).status_code == 202
        assert (await asyncio.wait_for(pending, 5)).status_code == 204
        await until(lambda: ("disconnected", n["connectionId"]) in EVENTS)


async def test_long_polling_server_close_then_204(app_factory: Any) -> None:
    async with (
        serve_app(app_factory()) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
    ):
        n = await negotiate(http)
        url = f"/hubs/echo?id={n['connectionToken']}"
        await http.get(url)
        await http.post(url, content=HANDSHAKE + invocation("1", "AbortMe"))
        got = await poll_until(http, url, 1)
        assert {"type": 7} in got  # the Close message arrives in a 200 body first
        for _ in range(3):
            r = await http.get(url)
            if r.status_code == 204:
                break
            assert r.status_code == 200
        assert r.status_code == 204  # then 204: the connection is over
        await until(lambda: ("disconnected", n["connectionId"]) in EVENTS)
        assert (await http.get(url)).status_code == 404


async def test_long_polling_without_polls_expires(app_factory: Any) -> None:
    app = app_factory(disconnect_timeout=0.3)
    async with (
        serve_app(app) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
    ):
        n = await negotiate(http)
        url = f"/hubs/echo?id={n['connectionToken']}"
        await http.get(url)
        await http.post(url, content=HANDSHAKE)
        await until(lambda: ("connected", n["connectionId"]) in EVENTS)
        # No poll for longer than the disconnect timeout: the connection is disposed.
        await until(lambda: ("disconnected", n["connectionId"]) in EVENTS, timeout=5)
        assert (await http.get(url)).status_code == 404
        # Negotiated but never connected: also gone after the timeout (the registry's sweep).
        n2 = await negotiate(http)
        url2 = f"/hubs/echo?id={n2['connectionToken']}"
        await until(lambda: app.state.hubplane.registry.get(n2["connectionToken"]) is None)
        assert (await http.get(url2)).status_code == 404


async def test_long_polling_messagepack(app_factory: Any) -> None:
    async with (
        serve_app(app_factory()) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
    ):
        n = await negotiate(http)
        url = f"/hubs/echo?id={n['connectionToken']}"
        await http.get(url)
        payload = msgpack.packb([1, {}, "7", "Echo", [[b"\x00\xff", 1.5]]])
        frame = bytes([len(payload)]) + payload
        r = await http.post(
            url,
            content=b'{"protocol":"messagepack","version":1}\x1e' + frame,
            headers={"content-type": "application/octet-stream"},
        )
        assert r.status_code == 200
        data = b""
        for _ in range(5):
            data += (await http.get(url)).content
            if len(data) > 3:
                break
        assert data.startswith(b"{}\x1e")
        rest = data[3:]
        size = rest[0]
        assert size < 0x80 and len(rest) == size + 1  # one whole length-prefixed message
        assert msgpack.unpackb(rest[1:]) == [3, {}, "7", 3, [b"\x00\xff", 1.5]]
        await http.delete(url)


# --------------------------------------------------------------------------- SSE


class SseReader:
    """Reads an event stream chunk by chunk with a bound on every wait."""

    def __init__(self, response: httpx.Response) -> None:
        self.chunks: AsyncIterator[bytes] = response.aiter_raw()
        self.buffer = b""
        self.ended = False

    async def raw(self, count: int, timeout: float = 5.0) -> bytes:
        while len(self.buffer) < count:
            self.buffer += await asyncio.wait_for(anext(self.chunks), timeout)
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    async def event(self, timeout: float = 5.0) -> bytes:
        """The next event's payload (its ``data:`` lines joined with LF), pings skipped."""
        while True:
            while b"\r\n\r\n" not in self.buffer:
                try:
                    self.buffer += await asyncio.wait_for(anext(self.chunks), timeout)
                except StopAsyncIteration:
                    self.ended = True
                    raise
            raw, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            lines = raw.split(b"\r\n")
            assert all(line.startswith(b"data: ") for line in lines), raw
            payload = b"\n".join(line[len(b"data: ") :] for line in lines)
            assert payload.endswith(RS), "an event carried a partial message"
            if payload != b'{"type":6}\x1e':
                return payload

    async def after_handshake(self) -> bytes:
        """The messages after the handshake reply, which may share its event: a method the
        same request invoked can answer in the turn the handshake was read."""
        first = await self.event()
        assert first.startswith(b"{}\x1e"), first
        return first[3:] or await self.event()

    async def end(self, timeout: float = 5.0) -> None:
        """Wait for the server to finish the stream (skipping what is left)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                await asyncio.wait_for(anext(self.chunks), deadline - time.monotonic())
            except StopAsyncIteration:
                return


def test_sse_event_format() -> None:
    assert format_event(b'{"type":6}\x1e') == b'data: {"type":6}\x1e\r\n\r\n'
    assert format_event(b"a\nb\r\nc") == b"data: a\r\ndata: b\r\ndata: c\r\n\r\n"
    assert format_event(b"x\n") == b"data: x\r\ndata: \r\n\r\n"


async def test_sse_stream(app_factory: Any) -> None:
    async with (
        serve_app(app_factory(keepalive_interval=0.2)) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
    ):
        n = await negotiate(http)
        url = f"/hubs/echo?id={n['connectionToken']}"
        sse_headers = {"accept": "text/event-stream"}
        async with http.stream("GET", url, headers=sse_headers) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"] == "text/event-stream"
            assert stream.headers["cache-control"] == "no-cache,no-store"
            assert stream.headers["pragma"] == "no-cache"
            assert stream.headers["content-encoding"] == "identity"
            reader = SseReader(stream)
            assert await reader.raw(3) == b":\r\n"  # the opening comment, flushed at once
            r = await http.post(url, content=HANDSHAKE + invocation("1", "Transport"))
            assert r.status_code == 200
            assert messages(await reader.after_handshake()) == [
                {"type": 3, "invocationId": "1", "result": "ServerSentEvents"}
            ]
            # Pings flow on SSE (every 0.2 s here).
            await asyncio.wait_for(_until_ping(reader), 5)
            # One stream per connection; DELETE is for long polling only; no switching.
            r = await http.get(url, headers=sse_headers)
            assert r.status_code == 409
            r = await http.delete(url)
            assert (r.status_code, r.text) == (
                400,
                "Cannot terminate this connection using the DELETE endpoint.",
            )
            r = await http.get(url)
            assert (r.status_code, r.text) == (400, "Cannot change transports mid-connection")
        # The client dropped the stream: the connection ends and its token is gone.
        await until(lambda: ("disconnected", n["connectionId"]) in EVENTS)
        r = await http.post(url, content=invocation("2", "Echo", 1))
        assert r.status_code == 404


async def _until_ping(reader: SseReader) -> None:
    while True:
        while b"\r\n\r\n" not in reader.buffer:
            reader.buffer += await anext(reader.chunks)
        raw, reader.buffer = reader.buffer.split(b"\r\n\r\n", 1)
        if raw == b'data: {"type":6}\x1e':
            return


async def test_sse_server_close_and_messagepack_refused(app_factory: Any) -> None:
    app = app_factory()
    async with (
        serve_app(app) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
    ):
        sse_headers = {"accept": "text/event-stream"}
        # The server ends the connection: Close message, then the stream finishes.
        n = await negotiate(http)
        url = f"/hubs/echo?id={n['connectionToken']}"
        async with http.stream("GET", url, headers=sse_headers) as stream:
            reader = SseReader(stream)
            await reader.raw(3)
            await http.post(url, content=HANDSHAKE + invocation("1", "AbortMe"))
            assert {"type": 7} in messages(await reader.after_handshake())
            await reader.end()
        await until(lambda: ("disconnected", n["connectionId"]) in EVENTS)
        # MessagePack over SSE: a handshake error, then the stream ends.
        n = await negotiate(http)
        url = f"/hubs/echo?id={n['connectionToken']}"
        async with http.stream("GET", url, headers=sse_headers) as stream:
            reader = SseReader(stream)
            await reader.raw(3)
            await http.post(url, content=b'{"protocol":"messagepack","version":1}\x1e')
            assert orjson.loads((await reader.event())[:-1]) == {
                "error": "Cannot use the 'messagepack' protocol on the current transport. "
                "The transport does not support 'Binary' transfer format."
            }
            await reader.end()
        await until(lambda: app.state.hubplane.registry.get(n["connectionToken"]) is None)


# --------------------------------------------------------------------------- status codes


async def test_status_codes_and_bad_input(app_factory: Any) -> None:
    app = app_factory(transports=("ServerSentEvents", "LongPolling"), max_message_size=1024)
    async with (
        serve_app(app) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
    ):
        for method in ("GET", "POST", "DELETE"):
            r = await http.request(method, "/hubs/echo")
            assert (r.status_code, r.text) == (400, "Connection ID required")
            r = await http.request(method, "/hubs/echo/?id=nope")
            assert (r.status_code, r.text) == (404, "No Connection with that ID")
        assert (await http.put("/hubs/echo?id=x")).status_code == 405
        n = await negotiate(http)
        url = f"/hubs/echo?id={n['connectionToken']}"
        # A POST before the transport started has nowhere to go.
        assert (await http.post(url, content=HANDSHAKE)).status_code == 400
        # WebSockets are not offered: the upgrade is refused like the reference (404).
        with pytest.raises(websockets.InvalidStatus) as err:
            await websockets.connect(f"ws://{host}{url}")
        assert err.value.response.status_code == 404
        assert (await http.get(url)).status_code == 200  # long polling starts
        # A message over --max-message-size ends the connection with an error Close...
        r = await http.post(url, content=HANDSHAKE + invocation("1", "Echo", "x" * 2000))
        assert r.status_code == 200
        got = await poll_until(http, url, 1)
        assert got[-1] == {
            "type": 7,
            "error": "Connection closed with an error.",
            "allowReconnect": True,
        }
        assert (await http.get(url)).status_code == 204
        # ...and a huge body without a separator is cut off at the limit, not buffered.
        n = await negotiate(http)
        url = f"/hubs/echo?id={n['connectionToken']}"
        await http.get(url)
        await http.post(url, content=HANDSHAKE)
        r = await http.post(url, content=b"[" * (4 * 1024 * 1024))
        assert r.status_code in (200, 404)
        got = await poll_until(http, url, 1)
        assert got[-1]["type"] == 7
        # The server still serves new connections.
        n = await negotiate(http)
        url = f"/hubs/echo?id={n['connectionToken']}"
        await http.get(url)
        await http.post(url, content=HANDSHAKE + invocation("1", "Echo", "ok"))
        assert (await poll_until(http, url, 1))[-1]["result"] == "ok"


async def test_disabled_transports_refused(app_factory: Any) -> None:
    app = app_factory(transports=("WebSockets",))
    async with (
        serve_app(app) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
    ):
        n = await negotiate(http)
        assert [t["transport"] for t in n["availableTransports"]] == ["WebSockets"]
        url = f"/hubs/echo?id={n['connectionToken']}"
        r = await http.get(url, headers={"accept": "text/event-stream"})
        assert (r.status_code, r.text) == (
            404,
            "ServerSentEvents transport not supported by this end point type",
        )
        r = await http.get(url)
        assert (r.status_code, r.text) == (
            404,
            "LongPolling transport not supported by this end point type",
        )


# --------------------------------------------------------------------------- browsers


async def test_access_token_query_reaches_authenticator(app_factory: Any) -> None:
    app = app_factory(authenticate=by_header)
    async with (
        serve_app(app) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
    ):
        # SSE as browsers open it: the token in the query string only.
        n = await negotiate(http)
        url = f"/hubs/echo?id={n['connectionToken']}"
        async with http.stream(
            "GET", url + "&access_token=ann", headers={"accept": "text/event-stream"}
        ) as stream:
            reader = SseReader(stream)
            await reader.raw(3)
            await http.post(url, content=HANDSHAKE + invocation("1", "Whoami"))
            assert messages(await reader.after_handshake())[0]["result"] == "ann"
        # A browser WebSocket: also the query string.
        ws = await websockets.connect(f"ws://{host}/hubs/echo?access_token=bob")
        await ws.send(HANDSHAKE.decode() + invocation("1", "Whoami").decode())
        frames = ""
        while "Whoami" not in frames and '"result"' not in frames:
            frames += str(await asyncio.wait_for(ws.recv(), 5))
        assert '"result":"bob"' in frames
        await ws.close()
        # The header wins over the query parameter.
        n = await negotiate(http)
        url = f"/hubs/echo?id={n['connectionToken']}"
        await http.get(url + "&access_token=query", headers={"authorization": "Bearer header"})
        await http.post(url, content=HANDSHAKE + invocation("1", "Whoami"))
        got = await poll_until(http, url, 1)
        assert got[-1]["result"] == "header"
        await http.delete(url)


def test_bearer_token_helper() -> None:
    def conn(query: str, headers: list[tuple[bytes, bytes]]) -> HTTPConnection:
        scope = {"type": "http", "query_string": query.encode(), "headers": headers}
        return HTTPConnection(scope)

    assert bearer_token(conn("access_token=q", [])) == "q"
    assert bearer_token(conn("ACCESS_TOKEN=q", [])) == "q"
    assert bearer_token(conn("access_token=q", [(b"authorization", b"Bearer h")])) == "h"
    assert bearer_token(conn("", [(b"authorization", b"Basic abc")])) is None
    assert bearer_token(conn("", [])) is None
