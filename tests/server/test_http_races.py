"""Races of the plain-HTTP transports.

- A transport that ends while the hub's ``on_connected`` still runs (the handshake arrives in a
  POST, the end in another request): ``on_disconnected`` still runs, once, after it. On a real
  uvicorn in process.
- A long poll whose response does not reach its client keeps its batch for the next poll. The
  session is driven with ASGI callables that behave as uvicorn does when the client leaves
  during a write that waits for the socket (the write returns without a word), and as an ASGI
  2.4 server may (``send`` raises ``OSError``): neither can be timed reliably over loopback.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from backplane import Hub
from server import Settings, create_app
from tests.waiting import until

from .util import serve_app

HANDSHAKE = b'{"protocol":"json","version":1}\x1e'
EVENTS: list[tuple[str, str]] = []
GATE: dict[str, asyncio.Event] = {}


class SlowStart(Hub):
    async def on_connected(self) -> None:
        EVENTS.append(("connecting", self.context.connection_id))
        await GATE["open"].wait()
        EVENTS.append(("connected", self.context.connection_id))

    async def on_disconnected(self, exception: Exception | None) -> None:
        EVENTS.append(("disconnected", self.context.connection_id))


class AsksOnConnect(Hub):
    async def on_connected(self) -> None:
        EVENTS.append(("connecting", self.context.connection_id))
        try:
            await self.clients.caller.invoke("Name")  # the client never answers
        except Exception as exc:
            EVENTS.append(("asked", type(exc).__name__))
        EVENTS.append(("connected", self.context.connection_id))

    async def on_disconnected(self, exception: Exception | None) -> None:
        EVENTS.append(("disconnected", self.context.connection_id))


def app_and_gate() -> Any:
    EVENTS.clear()
    GATE["open"] = asyncio.Event()
    return create_app({"/hubs/slow": SlowStart}, settings=Settings())


async def ended_during_on_connected(transport: str) -> None:
    app = app_and_gate()
    hubplane = app.state.hubplane
    async with (
        serve_app(app) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
    ):
        n = (await http.post("/hubs/slow/negotiate?negotiateVersion=1")).json()
        token, cid = n["connectionToken"], n["connectionId"]
        url = f"/hubs/slow?id={token}"
        if transport == "sse":
            stream_cm = http.stream("GET", url, headers={"accept": "text/event-stream"})
            stream = await stream_cm.__aenter__()
            assert stream.status_code == 200
        else:
            assert (await http.get(url)).status_code == 200  # the first poll
        post = asyncio.create_task(http.post(url, content=HANDSHAKE))
        await until(lambda: ("connecting", cid) in EVENTS)
        # The transport ends while on_connected waits.
        if transport == "sse":
            await stream_cm.__aexit__(None, None, None)
        else:
            assert (await http.delete(url)).status_code == 202
        await until(lambda: token not in hubplane.http_sessions)
        GATE["open"].set()
        assert (await asyncio.wait_for(post, 5)).status_code == 200
        await until(lambda: ("disconnected", cid) in EVENTS, timeout=3)
        assert EVENTS == [("connecting", cid), ("connected", cid), ("disconnected", cid)]
        # ... and the connection left this node's tables and the hub's presence.
        handler = hubplane.endpoints["/hubs/slow"].handler
        assert cid not in handler.connections
        assert await handler.context.presence.connections() == []


async def test_sse_ended_during_on_connected_runs_on_disconnected_once() -> None:
    await ended_during_on_connected("sse")


async def test_long_polling_deleted_during_on_connected_runs_on_disconnected_once() -> None:
    await ended_during_on_connected("longpolling")


async def test_a_client_result_on_connected_awaits_fails_when_the_transport_ends() -> None:
    EVENTS.clear()
    app = create_app({"/hubs/asks": AsksOnConnect}, settings=Settings())  # results wait 30 s
    async with (
        serve_app(app) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
    ):
        n = (await http.post("/hubs/asks/negotiate?negotiateVersion=1")).json()
        cid = n["connectionId"]
        url = f"/hubs/asks?id={n['connectionToken']}"
        async with http.stream("GET", url, headers={"accept": "text/event-stream"}) as stream:
            assert stream.status_code == 200
            post = asyncio.create_task(http.post(url, content=HANDSHAKE))
            await until(lambda: ("connecting", cid) in EVENTS)
        assert (await asyncio.wait_for(post, 5)).status_code == 200
        await until(lambda: ("disconnected", cid) in EVENTS, timeout=3)
        assert EVENTS == [
            ("connecting", cid),
            ("asked", "ClientDisconnectedError"),
            ("connected", cid),
            ("disconnected", cid),
        ]


# --------------------------------------------------------------------------- a lost poll


class Echo(Hub):
    async def echo(self, value: Any) -> Any:
        return value


class Store:
    """The session store a long-polling session needs (see server/transports/base.py)."""

    disconnect_timeout = 30.0

    def discard(self, token: str) -> None:
        pass

    def cut_off(self) -> bool:
        return False

    def spawn(self, coro: Any) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(coro)


class PollClient:
    """The ASGI side of one poll: ``receive`` reports the client leaving when ``gone`` is set;
    ``send`` records what reached the client."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self.asked = False
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if not self.asked:
            self.asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


class SlowSocketClient(PollClient):
    """uvicorn with a full socket: the response's first write waits; when the client leaves
    meanwhile, the write returns without a word and nothing reaches the client."""

    def __init__(self) -> None:
        super().__init__()
        self.writing = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        self.writing.set()
        await self.gone.wait()
        await asyncio.sleep(0)  # uvicorn resumes the writer after it told the reader


class ClosedSocketClient(PollClient):
    """An ASGI 2.4 server that raises OSError for a response to a client that has left."""

    async def send(self, message: dict[str, Any]) -> None:
        raise OSError("the client has gone away")


async def long_polling_session() -> Any:
    from backplane import HubConnection, HubConnectionHandler
    from server.registry import ConnectionRecord
    from server.transports.longpolling import LongPollingSession

    handler = HubConnectionHandler(Echo)
    connection = HubConnection(handler, "c1", transport="LongPolling", send_pings=False)
    record = ConnectionRecord("c1", "t1", "/hubs/echo", None)
    return LongPollingSession(Store(), record, connection)  # type: ignore[arg-type]


async def test_a_poll_that_does_not_reach_its_client_keeps_its_batch(
    monkeypatch: Any,
) -> None:
    from server.transports import longpolling

    monkeypatch.setattr(longpolling, "POLL_TIMEOUT", 0.5)
    session = await long_polling_session()
    outbound = session.connection.outbound
    # The client leaves while the response waits for the socket.
    outbound.write(b"first\x1e")
    lost = SlowSocketClient()
    poll = asyncio.create_task(session.poll(lost.receive, lost.send))
    await asyncio.wait_for(lost.writing.wait(), 2)
    outbound.write(b"second\x1e")  # queued meanwhile: it must come after the first
    lost.gone.set()
    await asyncio.wait_for(poll, 2)
    # An ASGI server that raises for a closed connection: the batch stays too.
    closed = ClosedSocketClient()
    await asyncio.wait_for(session.poll(closed.receive, closed.send), 2)
    # The next poll carries both, in order.
    client = PollClient()
    await asyncio.wait_for(session.poll(client.receive, client.send), 2)
    assert client.body() == b"first\x1esecond\x1e"
    assert client.sent[0]["status"] == 200
    # Delivered once: the poll after it waits and finds nothing.
    again = PollClient()
    await asyncio.wait_for(session.poll(again.receive, again.send), 2)
    assert again.body() == b""
    session.end()
