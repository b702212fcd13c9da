"""Reading uvicorn's WebSocket frames as its websockets-sansio protocol parses them, in its
``data_received``, without waking the transport's task.

uvicorn queues every frame it parses (``protocol.queue``) and wakes the app's task, which
takes it from ``receive``: a future, a task step and a loop turn per frame. While the
transport's task waits in ``receive`` with nothing queued, :class:`Pusher` (armed) takes
each frame as uvicorn queues it and feeds it to the connection at once
(``HubConnection.receive_now``): a hub method that ends without waiting has its
Completion written before ``data_received`` returns. What cannot be done without waiting
(the handshake, a full invocation queue, streams, stateful reconnect's messages) goes to the
task in the queue, in order, and the pusher stands down until the task has read everything
queued and waits again. Other events (the disconnect) always go through the queue.

uvicorn pauses reading once a frame is queued and resumes it when ``receive`` takes the
last one. While armed, nothing is queued: ``read_paused`` is set so that uvicorn leaves the
socket alone; a hand-over pauses reading itself, and ``receive`` resumes it as usual.

tests/contracts/test_uvicorn_contract.py checks what this relies on against a real uvicorn.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from .uvicorn_send import sansio_protocol

if TYPE_CHECKING:
    from backplane import HubConnection

#: The type of the message that hands what a frame left to do over to the transport's task.
HANDED = "hubplane.handed"


class Pusher:
    """Feeds frames to a connection from uvicorn's ``data_received`` (see the module)."""

    __slots__ = ("connection", "protocol", "queue", "armed", "context")

    def __init__(self, connection: HubConnection, protocol: Any, queue: asyncio.Queue[Any]):
        self.connection = connection
        self.protocol = protocol
        self.queue = queue
        self.armed = False
        self.context: contextvars.Context | None = None
        queue.put_nowait = self.put  # type: ignore[method-assign]  # see the module

    def arm(self) -> None:
        """The task is about to wait in ``receive`` with nothing queued: take frames now.
        (What runs here runs in a copy of the task's context, as it would in the task.)"""
        if not self.armed:
            self.armed = True
            self.context = contextvars.copy_context()
            self.protocol.read_paused = True

    def disarm(self) -> None:
        """The task stops reading: every event goes to the queue again, as uvicorn's own;
        what was handed over and not taken is dropped."""
        if self.armed:
            self.armed = False
            self.protocol.read_paused = False
        self.context = None
        queue = self.queue
        queue.__dict__.pop("put_nowait", None)
        kept = [m for m in queue._queue if m["type"] != HANDED]  # type: ignore[attr-defined]
        for message in queue._queue:  # type: ignore[attr-defined]
            if message["type"] == HANDED:
                close = getattr(message["rest"], "close", None)
                if close is not None:
                    close()
        queue._queue.clear()  # type: ignore[attr-defined]
        queue._queue.extend(kept)  # type: ignore[attr-defined]

    def put(self, item: Any) -> None:
        """uvicorn's ``queue.put_nowait``."""
        message = item
        if not self.armed or message["type"] != "websocket.receive":
            self.armed = False  # the task wakes up for it
            asyncio.Queue.put_nowait(self.queue, message)
            return
        data = message.get("bytes")
        binary = data is not None
        if not binary:
            data = message["text"].encode()
        connection = self.connection
        context = self.context
        assert context is not None
        try:
            rest = context.run(connection.receive_now, data, binary)
        except Exception as exc:  # as if the task had raised it: it ends the socket
            rest = _reraise(exc)
        if rest is None:
            connection.outbound.flush()
            return
        self.armed = False
        self.protocol.transport.pause_reading()
        asyncio.Queue.put_nowait(self.queue, {"type": HANDED, "rest": rest})


async def _reraise(exc: Exception) -> None:
    raise exc


def start(connection: HubConnection, send: Any) -> Pusher | None:
    """A pusher for a connection served by uvicorn's websockets-sansio protocol (else None)."""
    protocol = sansio_protocol(send)
    queue = getattr(protocol, "queue", None)
    if not isinstance(queue, asyncio.Queue) or not hasattr(protocol, "read_paused"):
        return None
    return Pusher(connection, protocol, queue)


def handed(message: dict[str, Any]) -> Awaitable[None]:
    """What a frame fed by the pusher left to do (a ``HANDED`` message's)."""
    rest: Awaitable[None] = message["rest"]
    return rest
