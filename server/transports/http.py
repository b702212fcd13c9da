"""What Server-Sent Events and long polling share: the session of a connection and its POSTs.

Both transports carry server-to-client bytes in GET responses and client-to-server bytes in
``POST {hub}?id=TOKEN`` bodies. A body holds one or more whole hub messages (the JS client
batches); it is fed to the connection chunk by chunk as it arrives, so the message size limit
applies while reading and a huge body is never held in memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response

from backplane import HubConnection
from backplane.lifetime.base import DISCONNECTED
from backplane.waiters import wake

if TYPE_CHECKING:
    from ..registry import ConnectionRecord
    from .base import SessionStore

logger = logging.getLogger("hubplane.http")

SEND_TIMEOUT = 10.0  # ASP.NET Core TransportSendTimeout: one blocked write ends the connection


class HttpSession:
    """One SSE or long-polling connection: its record and live connection."""

    __slots__ = ("record", "connection", "post_lock", "ended", "handshaking")

    def __init__(self, record: ConnectionRecord, connection: HubConnection) -> None:
        self.record = record
        self.connection = connection
        # POSTs of one connection are fed one at a time, in order (the JS client sends one at
        # a time; another client must not interleave two bodies' bytes).
        self.post_lock = asyncio.Lock()
        self.ended = False
        # Set while bytes that may complete the handshake are fed: the handshake runs the
        # hub's on_connected, and the tear-down waits for it (see close_connection).
        self.handshaking: asyncio.Future[None] | None = None


async def wait_disconnect(receive: Any) -> None:
    """Return when the client has gone away (the body, if any, is already read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class LazyHeaders(Mapping[str, str]):
    """A transport request's headers, decoded only if hub code looks at them.

    The raw list lives in the ASGI scope anyway; a decoded copy per connection would cost a
    kilobyte or two that most connections never use.
    """

    __slots__ = ("_raw", "_decoded")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._decoded: dict[str, str] | None = None

    def _dict(self) -> dict[str, str]:
        decoded = self._decoded
        if decoded is None:
            decoded = self._decoded = {
                k.decode("latin-1"): v.decode("latin-1") for k, v in self._raw
            }
        return decoded

    def __getitem__(self, key: str) -> str:
        return self._dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())


def request_headers(request: Request) -> LazyHeaders:
    """The request's headers as the hub context shows them (lower-case names)."""
    return LazyHeaders(request.scope["headers"])


async def receive_post(request: Request, session: HttpSession) -> Response:
    """``POST {hub}?id=TOKEN``: feed the body to the connection; 200 once it is accepted."""
    connection = session.connection
    async with session.post_lock:
        if session.ended or connection.closing:
            return PlainTextResponse("No Connection with that ID", status_code=404)
        try:
            async for chunk in request.stream():
                if chunk:
                    await feed(session, chunk)
                    if connection.closing or session.ended:
                        # The client sent Close, bad input or the transport ended the
                        # connection: the rest of the body has nowhere to go.
                        break
        except ClientDisconnect:
            logger.debug("%s: the client went away during a POST", connection.log_name)
            return PlainTextResponse("", status_code=400)
    return PlainTextResponse("")


async def feed(session: HttpSession, chunk: bytes) -> None:
    """Feed ``chunk`` to the connection, noting when it may run the handshake."""
    connection = session.connection
    if connection.protocol is not None:
        await connection.receive(chunk, None)
        return
    session.handshaking = asyncio.get_running_loop().create_future()
    try:
        await connection.receive(chunk, None)
    finally:
        session.handshaking = wake(session.handshaking)


async def close_connection(session: HttpSession, error: Exception | None = None) -> None:
    """Tear the connection down (``on_disconnected`` runs), after a handshake being fed.

    The GET that ends an SSE or long-polling connection is not the request that feeds its
    handshake: torn down while the hub's ``on_connected`` still ran, the connection would
    never run ``on_disconnected`` (nor leave the lifetime manager's tables, had those not
    been written yet). So the tear-down waits for the handshake's ``on_connected`` to end.
    """
    handshaking = session.handshaking
    if handshaking is not None:
        # A client result on_connected awaits can no longer come: fail it now, not at its
        # timeout (the tear-down would fail it too, but only after on_connected).
        session.connection.fail_results(DISCONNECTED)
        await asyncio.shield(handshaking)
    await session.connection.transport_closed(error)


def forget(store: SessionStore, session: HttpSession) -> bool:
    """Forget the connection: its token answers 404 from now on. False if already done."""
    if session.ended:
        return False
    session.ended = True
    store.discard(session.record.token)
    session.connection.outbound.close()
    return True


async def end_session(store: SessionStore, session: HttpSession, error: Exception | None) -> None:
    """Forget the connection and tear it down (``on_disconnected`` runs), once."""
    if forget(store, session):
        await close_connection(session, error)
