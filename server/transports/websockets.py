"""The WebSockets transport, written against raw ASGI for speed.

JSON goes out in text frames and MessagePack in binary frames; everything pending for a
connection goes out in one frame (several whole messages per frame are allowed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.requests import HTTPConnection

from backplane import HubConnection, HubConnectionHandler, User

from ..auth import authenticate, log_refusal, refusal_text
from .http import SEND_TIMEOUT, LazyHeaders
from .uvicorn_receive import HANDED, handed
from .uvicorn_receive import start as start_pusher
from .uvicorn_send import finish, frame, is_uvicorn_send, make_sink, received_queue

if TYPE_CHECKING:
    from ..registry import ConnectionRecord
    from .base import Admission, Locator, Mover, Spawner

logger = logging.getLogger("hubplane.websockets")

CLOSE_TIMEOUT = 5.0  # ASP.NET Core WebSockets CloseTimeout
TAKEOVER = "a newer WebSocket took over"  # cancel message for a half-open socket's task
Scope = dict[str, Any]


class WebSocketEndpoint:
    """The ASGI app that serves WebSocket upgrades of one hub path."""

    def __init__(
        self,
        admission: Admission,
        locator: Locator,
        handler: HubConnectionHandler,
        path: str,
        disconnect_timeout: float,
        tasks: Spawner,
        mover: Mover | None = None,
    ) -> None:
        self.admission = admission
        self.locator = locator
        self.handler = handler
        self.path = path
        # How long a stateful connection that lost its socket waits for a reconnect.
        self.disconnect_timeout = disconnect_timeout
        # Owns the tear-downs started from reconnect timers (the app cancels them at shutdown).
        self.tasks = tasks
        # With the Redis backplane: takes over stateful connections held by other nodes.
        self.mover = mover

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        token = query.get("id")
        if token is None:  # ASP.NET Core reads query keys case-insensitively
            token = next((v for k, v in query.items() if k.lower() == "id"), None)
        admission = self.admission
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        if admission.draining:
            await reject(scope, send, 503, "Server is shutting down")
            return
        try:
            # Not kept in a local: this frame lives as long as the connection, and the
            # request caches its parsed headers and query (about 1 KB per idle connection).
            user = await authenticate(admission.authenticator, HTTPConnection(scope))
        except Exception as exc:
            log_refusal(exc, "on a WebSocket upgrade")
            await reject(scope, send, 401, "Authentication failed")
            return
        refusal = await self.handler.refuses(user)
        if refusal is not None:
            await reject(scope, send, refusal, refusal_text(refusal))
            return
        locator = self.locator
        registry = locator.registry
        if token:
            record = registry.get(token)
            if (
                (record is None or record.connection is None)
                and self.mover is not None
                and _may_be_stateful(locator, token)
            ):
                # A stateful client coming back to a node that does not hold its connection.
                moved = await self.mover.take_up(
                    token, self.path, user, LazyHeaders(scope["headers"]), query
                )
                if not isinstance(moved, int):
                    await self._accept_moved(*moved, user, receive, send)
                    return
                if moved != 404:
                    await reject(scope, send, moved, "Connection cannot be resumed here")
                    return
            if locator.signer is not None and (record is None or record.connection is None):
                # No sticky sessions: adopt a connection negotiated on another node. One
                # started elsewhere (even a stateful one coming back) cannot move here.
                located = await locator.locate(token, self.path, start=True)
                if isinstance(located, int):
                    await reject(scope, send, located, "No Connection with that ID")
                    return
                record = None if isinstance(located, str) else located
            if record is None or record.hub_path != self.path:
                await reject(scope, send, 404, "No Connection with that ID")
                return
            if record.transport is not None and record.transport != "WebSockets":
                await reject(scope, send, 400, "Cannot change transports mid-connection")
                return
            if record.connection is not None:
                existing = record.connection
                if existing.stateful and not existing.closing:
                    if not _same_user(existing.user, user):
                        existing.handler.stats.resumes["refused"] += 1
                        await reject(scope, send, 403, "The connection belongs to another user")
                        return
                    await self._resume(record, existing, receive, send)
                    return
                await reject(scope, send, 409, "Connection already has a WebSocket")
                return
            if record.user is not None and (user is None or user.id != record.user.id):
                # As in ASP.NET Core, the transport request's identity is the one that counts.
                logger.info("connection %s: the user changed after negotiate", record.connection_id)
        else:
            # skipNegotiation: the connection starts here.
            record = registry.create(self.path, user, 1)
        record.transport = "WebSockets"
        headers = LazyHeaders(scope["headers"])
        connection = HubConnection(
            self.handler,
            record.connection_id,
            transport="WebSockets",
            user=user,
            headers=headers,
            query=query,
        )
        connection.stateful_allowed = record.stateful
        record.connection = connection
        try:
            await send({"type": "websocket.accept"})
        except Exception:
            registry.remove(record.token)
            await connection.transport_closed()
            return
        if record.stateful and self.mover is not None:
            self.mover.remember(record, user)
        await self._run(record, connection, receive, send)

    async def _accept_moved(
        self,
        record: ConnectionRecord,
        connection: HubConnection,
        user: User | None,
        receive: Any,
        send: Any,
    ) -> None:
        """Serve a connection just taken over from another node on this socket."""
        assert self.mover is not None
        self.mover.remember(record, user)
        record.run_task = asyncio.current_task()
        outcome = "after_crash" if record.revived else "other_node"
        await self._serve_resumed(record, connection, receive, send, outcome)

    async def _serve_resumed(
        self,
        record: ConnectionRecord,
        connection: HubConnection,
        receive: Any,
        send: Any,
        outcome: str,
    ) -> None:
        """Accept the socket a resume came on, replay what the client misses, and serve it."""
        try:
            await send({"type": "websocket.accept"})
        except Exception:
            record.run_task = None
            self._await_reconnect(record, connection)
            return
        logger.info("%s: resumed on a new WebSocket", connection.log_name)
        _count_resume(connection, outcome)
        connection.resume()
        await self._run(record, connection, receive, send)

    async def _run(
        self, record: ConnectionRecord, connection: HubConnection, receive: Any, send: Any
    ) -> None:
        """Serve one WebSocket of a connection; keep the connection if it may come back."""
        registry = self.locator.registry
        task = record.run_task = asyncio.current_task()
        assert task is not None
        record.drop = functools.partial(drop_socket, send, task)
        detached = False
        try:
            mover = self.mover
            on_closing = (
                functools.partial(mover.closing, record)
                if mover is not None and record.stateful
                else None
            )
            detached = await run_websocket(connection, receive, send, on_closing)
        finally:
            record.run_task = None
            record.drop = None
            if detached:
                self._await_reconnect(record, connection)
            else:
                registry.remove(record.token)

    def _await_reconnect(self, record: ConnectionRecord, connection: HubConnection) -> None:
        """A stateful connection lost its socket: wait ``--disconnect-timeout`` for a new one."""
        loop = asyncio.get_running_loop()

        def expire() -> None:
            record.expiry = None
            if connection.detached and record.run_task is None:
                logger.info("%s: no reconnect in time, ending", connection.log_name)
                self.locator.registry.remove(record.token)
                self.tasks.spawn(connection.transport_closed())

        record.expiry = loop.call_later(self.disconnect_timeout, expire)

        def ended() -> None:  # a connection ended by the server while detached ends at once
            loop.call_soon(expire)

        connection.outbound.on_close = ended
        logger.info("%s: transport lost, waiting for a stateful reconnect", connection.log_name)

    async def _resume(
        self, record: ConnectionRecord, connection: HubConnection, receive: Any, send: Any
    ) -> None:
        """A stateful reconnect: take the connection over with this new socket."""
        old = record.run_task
        if old is not None and not old.done():
            # The old socket is half-open (the client saw it die first): take over from it.
            old.cancel(TAKEOVER)
            await asyncio.wait({old}, timeout=CLOSE_TIMEOUT)
        if (
            not connection.detached
            or connection.closing
            or record.run_task is not None
            or record.moving
        ):
            await reject({"extensions": {}}, send, 409, "Connection already has a WebSocket")
            return
        # Taken before any await: a second reconnect racing this one now gets 409.
        record.run_task = asyncio.current_task()
        if record.expiry is not None:
            record.expiry.cancel()
            record.expiry = None
        connection.outbound.on_close = None
        await self._serve_resumed(record, connection, receive, send, "same_node")


def _count_resume(connection: HubConnection, outcome: str) -> None:
    stats = connection.handler.stats
    stats.resumes[outcome] += 1
    buffer = connection.message_buffer
    if buffer is not None:
        stats.replayed += len(buffer.replay)


async def run_websocket(
    connection: HubConnection,
    receive: Any,
    send: Any,
    on_closing: Callable[[], None] | None = None,
) -> bool:
    """Pump frames in and out until either side ends the connection.

    Returns True when a stateful connection lost its socket without a close handshake (or
    was taken over by a newer socket): the connection stays, detached, for a reconnect.
    """
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    state: dict[str, Any] = {"client_gone": False}
    outbound = connection.outbound
    # Always (re)set: a resumed connection must not keep the sink of its detached state.
    direct = is_uvicorn_send(send)
    outbound.sink = make_sink(connection, send, state) if direct else None

    def start_writer() -> None:
        # The writer task exists only while it has work: a write that had to wait, the
        # end of the connection, or a server whose send cannot be stepped by hand. An idle
        # connection then costs no task (about a kilobyte each).
        if state.get("writer") is None:
            state["writer"] = loop.create_task(_writer(connection, send, state))

    state["start_writer"] = start_writer
    state["drop"] = functools.partial(drop_socket, send, main)
    state["send_failed"] = functools.partial(_send_failed, connection, state)

    def _give_up() -> None:
        # The connection is ending but the socket did not finish in time: abandon it.
        if not state["client_gone"] and not main.done():
            state["close_timeout"] = True
            main.cancel()

    def _closing() -> None:
        if on_closing is not None:
            on_closing()  # before the Close can reach the client (see Mover.closing)
        state["timer"] = loop.call_later(CLOSE_TIMEOUT + SEND_TIMEOUT, _give_up)
        start_writer()  # it flushes what is left and sends the close frame

    outbound.on_close = _closing
    state["give_up"] = _give_up
    if not direct:
        start_writer()
    error: Exception | None = None
    dropped = False
    detached = False
    feed = connection.receive_now
    # uvicorn's queue of received frames (a local: an idle connection pays 8 bytes for it),
    # and what feeds the frames uvicorn queues while this task waits (uvicorn_receive.py).
    queued = received_queue(send) if direct else None
    pusher = start_pusher(connection, send) if queued is not None else None
    if pusher is not None:
        queued = pusher
    try:
        while True:
            if pusher is not None and pusher.empty():
                pusher.arm()
            message = await receive()
            mtype = message["type"]
            if mtype == "websocket.receive" or mtype == HANDED:
                rest: Awaitable[None] | None
                if mtype == HANDED:
                    rest = handed(message)
                elif (data := message.get("bytes")) is not None:
                    rest = feed(data, True)
                else:
                    rest = feed(message["text"].encode(), False)
                if rest is not None:
                    await rest
                    rest = None  # an idle connection keeps no finished coroutine
                # The replies of methods that ended without waiting leave now, in one frame,
                # unless more frames wait to be read: theirs then join them.
                if queued is None or queued.empty():
                    outbound.flush()
            elif mtype == "websocket.disconnect":
                dropped = socket_dropped(message)
                break
    except asyncio.CancelledError as exc:
        if exc.args == (TAKEOVER,):
            dropped = True
        elif not state.get("close_timeout"):
            raise
    except Exception as exc:  # the ASGI server failed under us
        error = exc
        dropped = True
        logger.debug("%s: receive failed", connection.log_name, exc_info=True)
    finally:
        if pusher is not None:
            pusher.disarm()
        state["client_gone"] = True
        outbound.sink = None
        outbound.on_close = None
        timer = state.get("timer")
        if timer is not None:
            timer.cancel()
        if dropped and connection.stateful and not connection.closing:
            detached = True
            connection.detach()
            await _stop_writer(state)
            outbound.busy = False
            outbound.sink = _discard  # the replay buffer keeps what matters
        else:
            outbound.close()
            try:
                await connection.transport_closed(error)
            finally:
                await _stop_writer(state)
    return detached


async def _stop_writer(state: dict[str, Any]) -> None:
    writer: asyncio.Task[None] | None = state.pop("writer", None)
    if writer is not None:
        if not writer.done():
            writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
    pending = state.pop("pending", None)
    if pending is not None:
        pending[0].close()


def drop_socket(send: Any, task: asyncio.Task[Any]) -> None:
    """End a WebSocket without a close frame, as a network that failed would: its client
    takes it as a drop and, with stateful reconnect, resumes (a draining node does this)."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None and hasattr(transport, "abort"):
        transport.abort()
    else:  # a server whose socket cannot be reached: stop serving it, as a takeover does
        task.cancel(TAKEOVER)


def _may_be_stateful(locator: Locator, token: str) -> bool:
    """False for a signed token that says its connection is not stateful (no Redis look-up)."""
    signer = locator.signer
    if signer is None:
        return True
    claims = signer.verify(token)
    return claims is not None and claims.stateful


def _same_user(owner: User | None, user: User | None) -> bool:
    """True when a resume comes from the connection's own user (or both are anonymous)."""
    return (owner.id if owner is not None else None) == (user.id if user is not None else None)


def socket_dropped(message: dict[str, Any]) -> bool:
    """True when a ``websocket.disconnect`` tells of a socket that died without a close frame
    (a dropped network): uvicorn says so with 1006, or (sansio, wsproto) with a message that
    has no close reason."""
    return message.get("code") == 1006 or "reason" not in message


def _discard(data: bytes) -> None:
    """The sink of a detached connection: writes are dropped (they are in the replay)."""


def _send_failed(connection: HubConnection, state: dict[str, Any]) -> None:
    """A write to the socket raised: the messages it carried (already taken from the
    outbound buffer) did not reach the client. The loss is never silent: the write is
    counted and the socket dropped, so a stateful client resumes and gets them again from
    its replay, and a plain connection ends (its client sees the drop) instead of going on
    with a gap in what it was sent."""
    if state["client_gone"]:
        return  # the reader already saw the disconnect and is tearing down
    connection.handler.stats.send_failures += 1
    logger.info(
        "%s: a write to the socket failed, dropping it",
        connection.log_name,
        exc_info=logger.isEnabledFor(logging.DEBUG),
    )
    state["drop"]()


async def _writer(connection: HubConnection, send: Any, state: dict[str, Any]) -> None:
    outbound = connection.outbound
    try:
        while True:
            await outbound.ready()
            pending = state.pop("pending", None)
            if pending is not None:
                try:
                    async with asyncio.timeout(SEND_TIMEOUT):
                        await finish(*pending)
                finally:
                    outbound.resume()
                continue
            data = outbound.take()
            if data:
                outbound.busy = True  # later writes queue behind this one
                try:
                    async with asyncio.timeout(SEND_TIMEOUT):
                        await send(frame(connection, data))
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
        _send_failed(connection, state)
        return
    if state["client_gone"]:
        return
    # The server ends the connection: close cleanly; the timer started when the connection
    # began closing abandons a client that does not answer the close.
    with contextlib.suppress(Exception):
        await send({"type": "websocket.close", "code": 1000})


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
