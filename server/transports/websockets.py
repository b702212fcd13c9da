"""The WebSockets transport, written against raw ASGI for speed.

JSON goes out in text frames and MessagePack in binary frames; everything pending for a
connection goes out in one frame (several whole messages per frame are allowed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.requests import HTTPConnection

from backplane import HubConnection, HubConnectionHandler

from ..auth import authenticate

if TYPE_CHECKING:
    from ..app import Hubplane

logger = logging.getLogger("hubplane.websockets")

CLOSE_TIMEOUT = 5.0
Scope = dict[str, Any]


class WebSocketEndpoint:
    """The ASGI app that serves WebSocket upgrades of one hub path."""

    def __init__(self, hubplane: Hubplane, handler: HubConnectionHandler, path: str) -> None:
        self.hubplane = hubplane
        self.handler = handler
        self.path = path

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        token = query.get("id")
        hubplane = self.hubplane
        request = HTTPConnection(scope)
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        if hubplane.draining:
            await reject(scope, send, 503, "Server is shutting down")
            return
        try:
            user = await authenticate(hubplane.authenticator, request)
        except Exception:
            logger.exception("authenticator failed on a WebSocket upgrade")
            await reject(scope, send, 401, "Authentication failed")
            return
        registry = hubplane.registry
        if token:
            record = registry.get(token)
            if record is None or record.hub_path != self.path:
                await reject(scope, send, 404, "No Connection with that ID")
                return
            if record.transport is not None and record.transport != "WebSockets":
                await reject(scope, send, 400, "Cannot change transports mid-connection")
                return
            if record.connection is not None:
                await reject(scope, send, 409, "Connection already has a WebSocket")
                return
            if user is None:
                user = record.user
            elif record.user is not None and record.user.id != user.id:
                await reject(scope, send, 403, "The user of this connection changed")
                return
        else:
            # skipNegotiation: the connection starts here.
            record = registry.create(self.path, user, 1)
        record.transport = "WebSockets"
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        connection = HubConnection(
            self.handler,
            record.connection_id,
            transport="WebSockets",
            user=user,
            headers=headers,
            query=query,
        )
        record.connection = connection
        try:
            await send({"type": "websocket.accept"})
        except Exception:
            registry.remove(record.token)
            await connection.transport_closed()
            return
        await run_websocket(connection, receive, send)
        registry.remove(record.token)


async def run_websocket(connection: HubConnection, receive: Any, send: Any) -> None:
    """Pump frames in and out until either side ends the connection."""
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    state: dict[str, Any] = {"client_gone": False}
    connection.outbound.sink = _make_sink(connection, send, state)
    writer = loop.create_task(_writer(connection, send, state, main))
    error: Exception | None = None
    feed = connection.receive
    try:
        while True:
            message = await receive()
            mtype = message["type"]
            if mtype == "websocket.receive":
                data = message.get("bytes")
                if data is not None:
                    await feed(data, True)
                else:
                    await feed(message["text"].encode(), False)
            elif mtype == "websocket.disconnect":
                break
    except asyncio.CancelledError:
        if not state.get("close_timeout"):
            raise
    except Exception as exc:  # the ASGI server failed under us
        error = exc
        logger.debug("connection %s: receive failed", connection.connection_id, exc_info=True)
    finally:
        state["client_gone"] = True
        connection.outbound.sink = None
        timer = state.get("timer")
        if timer is not None:
            timer.cancel()
        connection.outbound.close()
        await connection.transport_closed(error)
        if not writer.done():
            writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
        pending = state.pop("pending", None)
        if pending is not None:
            pending[0].close()


def _frame(connection: HubConnection, data: bytes) -> dict[str, Any]:
    protocol = connection.protocol
    if protocol is not None and protocol.is_binary:
        return {"type": "websocket.send", "bytes": data}
    return {"type": "websocket.send", "text": data.decode()}


def _make_sink(connection: HubConnection, send: Any, state: dict[str, Any]) -> Any:
    """Write without a task switch: run the ASGI ``send`` coroutine one step.

    uvicorn's send completes without suspending unless the socket's write buffer is over
    its high-water mark. When it does suspend, the writer task finishes it and later
    writes queue behind it, so the order of messages is kept.
    """
    outbound = connection.outbound

    def sink(data: bytes) -> None:
        coro = send(_frame(connection, data))
        try:
            yielded = coro.send(None)
        except StopIteration:
            return
        except Exception:
            # The client is gone; the reader sees the disconnect and tears down.
            outbound.sink = None
            logger.debug("connection %s: send failed", connection.connection_id, exc_info=True)
            return
        state["pending"] = (coro, yielded)
        outbound.suspend()

    return sink


async def _finish(coro: Any, yielded: Any) -> None:
    """Drive a coroutine that suspended inside the sink to its end."""
    loop = asyncio.get_running_loop()
    while True:
        if yielded is None:
            await asyncio.sleep(0)
        elif not yielded.done():
            done: asyncio.Future[None] = loop.create_future()
            yielded.add_done_callback(functools.partial(_settle, done))
            await done
        try:
            yielded = coro.send(None)
        except StopIteration:
            return


def _settle(waiter: asyncio.Future[None], _done: Any) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _writer(
    connection: HubConnection, send: Any, state: dict[str, Any], main: asyncio.Task[Any]
) -> None:
    outbound = connection.outbound
    try:
        while True:
            await outbound.ready()
            pending = state.pop("pending", None)
            if pending is not None:
                try:
                    await _finish(*pending)
                finally:
                    outbound.resume()
                continue
            data = outbound.take()
            if data:
                outbound.busy = True  # later writes queue behind this one
                try:
                    await send(_frame(connection, data))
                finally:
                    outbound.resume()
                continue
            if outbound.closed:
                break
    except Exception:
        # The client went away mid-write; the reader sees the disconnect.
        logger.debug("connection %s: send failed", connection.connection_id, exc_info=True)
        return
    if state["client_gone"]:
        return
    # The server ends the connection: close cleanly, then give the client a bounded time
    # to answer the close before the read side is abandoned.
    with contextlib.suppress(Exception):
        await send({"type": "websocket.close", "code": 1000})

    def _give_up() -> None:
        if not main.done():
            state["close_timeout"] = True
            main.cancel()

    state["timer"] = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, _give_up)


async def reject(scope: Scope, send: Any, status: int, text: str) -> None:
    """Refuse an upgrade with an HTTP status where the server supports it, else close."""
    body = text.encode()
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})
