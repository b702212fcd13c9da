"""The Server-Sent Events transport: a never-ending ``text/event-stream`` response.

Text only (JSON): a MessagePack handshake is refused by the connection because it is created
with ``supports_binary=False``. The response starts with a comment line, so clients whose
``EventSource`` fires ``open`` only on the first bytes start at once; then everything pending
for the connection goes out as one event (whole messages, one ``data:`` line per line of the
payload). The client ends the connection by dropping the request; the server ends it by
finishing the response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from backplane import HubConnection

from .http import SEND_TIMEOUT, HttpSession, end_session, wait_disconnect

if TYPE_CHECKING:
    from .base import SessionStore

logger = logging.getLogger("hubplane.sse")

HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache,no-store"),
    (b"pragma", b"no-cache"),
    # Never compressed or buffered: each event must reach the client when it is written.
    (b"content-encoding", b"identity"),
    (b"x-accel-buffering", b"no"),
]
OPENING = b":\r\n"


def format_event(data: bytes) -> bytes:
    """One SSE event carrying ``data``: a ``data:`` line per LF-separated line, then a blank.

    A CR before an LF is dropped; ``EventSource`` joins the lines with LF again.
    """
    lines = data.split(b"\n")
    out = bytearray()
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        out += b"data: "
        out += line
        out += b"\r\n"
    out += b"\r\n"
    return bytes(out)


class ServerSentEventsStream:
    """The ASGI response of one SSE request; it runs for the life of the connection."""

    def __init__(self, store: SessionStore, session: HttpSession) -> None:
        self.store = store
        self.session = session

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        session = self.session
        connection = session.connection
        error: Exception | None = None
        writer: asyncio.Task[None] | None = None
        watcher: asyncio.Task[None] | None = None
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            await send({"type": "http.response.body", "body": OPENING, "more_body": True})
            loop = asyncio.get_running_loop()
            writer = loop.create_task(_write(connection, send))
            watcher = loop.create_task(wait_disconnect(receive))
            await asyncio.wait({writer, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if writer.done() and not writer.cancelled():
                error = _error_of(writer)
        except Exception as exc:  # the ASGI server failed under us
            error = exc
            logger.debug("%s: SSE stream failed", connection.log_name, exc_info=True)
        finally:
            connection.outbound.close()
            for task in (watcher, writer):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            await end_session(self.store, session, error)


def _error_of(task: asyncio.Task[None]) -> Exception | None:
    exc = task.exception()
    return exc if isinstance(exc, Exception) else None


async def _write(connection: HubConnection, send: Any) -> None:
    """Write each batch of pending bytes as one event until the connection closes."""
    outbound = connection.outbound
    try:
        while True:
            await outbound.ready()
            data = outbound.take()
            if data:
                async with asyncio.timeout(SEND_TIMEOUT):
                    event = format_event(data)
                    await send({"type": "http.response.body", "body": event, "more_body": True})
                continue
            if outbound.closed:
                break
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except TimeoutError:
        logger.info("%s: send timed out, aborting", connection.log_name)
        raise
