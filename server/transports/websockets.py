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

CLOSE_TIMEOUT = 5.0  # ASP.NET Core WebSockets CloseTimeout
SEND_TIMEOUT = 10.0  # ASP.NET Core TransportSendTimeout
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
        if token is None:  # ASP.NET Core reads query keys case-insensitively
            token = next((v for k, v in query.items() if k.lower() == "id"), None)
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
        refusal = await self.handler.refuses(user)
        if refusal is not None:
            await reject(scope, send, refusal, "Unauthorized" if refusal == 401 else "Forbidden")
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
            if record.user is not None and (user is None or user.id != record.user.id):
                # As in ASP.NET Core, the transport request's identity is the one that counts.
                logger.info("connection %s: the user changed after negotiate", record.connection_id)
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
        try:
            await run_websocket(connection, receive, send)
        finally:
            registry.remove(record.token)


async def run_websocket(connection: HubConnection, receive: Any, send: Any) -> None:
    """Pump frames in and out until either side ends the connection."""
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    state: dict[str, Any] = {"client_gone": False}
    outbound = connection.outbound
    if _is_uvicorn_send(send):
        outbound.sink = _make_sink(connection, send, state)

    def _give_up() -> None:
        # The connection is ending but the socket did not finish in time: abandon it.
        if not state["client_gone"] and not main.done():
            state["close_timeout"] = True
            main.cancel()

    def _closing() -> None:
        state["timer"] = loop.call_later(CLOSE_TIMEOUT + SEND_TIMEOUT, _give_up)

    outbound.on_close = _closing
    state["give_up"] = _give_up
    writer = loop.create_task(_writer(connection, send, state))
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
        logger.debug("%s: receive failed", connection.log_name, exc_info=True)
    finally:
        state["client_gone"] = True
        outbound.sink = None
        outbound.on_close = None
        timer = state.get("timer")
        if timer is not None:
            timer.cancel()
        outbound.close()
        try:
            await connection.transport_closed(error)
        finally:
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
        except (Exception, asyncio.CancelledError):
            # The client is gone; the reader sees the disconnect and tears down.
            outbound.sink = None
            logger.debug("%s: send failed", connection.log_name, exc_info=True)
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


async def _writer(connection: HubConnection, send: Any, state: dict[str, Any]) -> None:
    outbound = connection.outbound
    try:
        while True:
            await outbound.ready()
            pending = state.pop("pending", None)
            if pending is not None:
                try:
                    async with asyncio.timeout(SEND_TIMEOUT):
                        await _finish(*pending)
                finally:
                    outbound.resume()
                continue
            data = outbound.take()
            if data:
                outbound.busy = True  # later writes queue behind this one
                try:
                    async with asyncio.timeout(SEND_TIMEOUT):
                        await send(_frame(connection, data))
                finally:
                    outbound.resume()
                continue
            if outbound.closed:
                break
    except TimeoutError:
        # One write blocked for too long (ASP.NET Core: TransportSendTimeout): drop the client.
        logger.info("%s: send timed out, aborting", connection.log_name)
        state["give_up"]()
        return
    except Exception:
        # The client went away mid-write; the reader sees the disconnect.
        logger.debug("%s: send failed", connection.log_name, exc_info=True)
        return
    if state["client_gone"]:
        return
    # The server ends the connection: close cleanly; the timer started when the connection
    # began closing abandons a client that does not answer the close.
    with contextlib.suppress(Exception):
        await send({"type": "websocket.close", "code": 1000})


def _is_uvicorn_send(send: Any) -> bool:
    """True when ``send`` is uvicorn's own WebSocket send, which may be stepped by hand."""
    owner = getattr(send, "__self__", None)
    return type(owner).__module__.startswith("uvicorn.protocols.websockets")


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
