"""Reading uvicorn's WebSocket frames as its websockets-sansio protocol parses them, in its
``data_received``, without waking the transport's task.

uvicorn queues every frame it parses (``protocol.queue``) and wakes the app's task, which
takes it from ``receive``: a future, a task step and a loop turn per frame. :class:`Pusher`
replaces that queue; while the transport's task waits in ``receive`` with nothing queued, it
(armed) takes each frame as uvicorn queues it and feeds it to the connection at once
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


class Pusher(asyncio.Queue[Any]):
    """uvicorn's queue of received events, replaced by one that feeds frames to a connection
    from ``data_received`` while armed (see the module). Its own slots, not attributes: an
    idle connection pays 32 bytes for them."""

    __slots__ = ("connection", "protocol", "armed", "context")

    def __init__(self, connection: HubConnection, protocol: Any, queue: asyncio.Queue[Any]):
        super().__init__()
        self.connection = connection
        self.protocol = protocol
        self.armed = False
        self.context: contextvars.Context | None = None
        while not queue.empty():  # what came before the socket was served, in order
            asyncio.Queue.put_nowait(self, queue.get_nowait())
        protocol.queue = self

    def arm(self) -> None:
        """The task is about to wait in ``receive`` with nothing queued: take frames now.
        (What runs here runs in a copy of the task's context, as it would in the task.)"""
        if not self.armed:
            self.armed = True
            self.context = contextvars.copy_context()
            self.protocol.read_paused = True

    def disarm(self) -> None:
        """The task stops reading: every event is queued again, as uvicorn's own queue
        does; what was handed over and not taken is dropped."""
        if self.armed:
            self.armed = False
            self.protocol.read_paused = False
        self.context = None
        kept = []
        while not self.empty():
            message = self.get_nowait()
            if message["type"] != HANDED:
                kept.append(message)
                continue
            close = getattr(message["rest"], "close", None)
            if close is not None:
                close()
        for message in kept:
            asyncio.Queue.put_nowait(self, message)

    def put_nowait(self, item: Any) -> None:
        """Queue ``item`` (uvicorn's events), or feed it to the connection now (armed)."""
        if not self.armed or item["type"] != "websocket.receive":
            self.armed = False  # the task wakes up for it
            asyncio.Queue.put_nowait(self, item)
            return
        data = item.get("bytes")
        binary = data is not None
        if not binary:
            data = item["text"].encode()
        connection = self.connection
        context = self.context
        assert context is not None
        try:
            rest = context.run(connection.receive_now, data, binary)
        except Exception as exc:  # as if the task had raised it: it ends the socket
            rest = _reraise(exc)
        if rest is None:
            # The replies leave at the end of this turn of the loop (the outbound buffer's
            # flush), with those of every frame the same read brought: one write for all.
            return
        self.armed = False
        self.protocol.transport.pause_reading()
        asyncio.Queue.put_nowait(self, {"type": HANDED, "rest": rest})


async def _reraise(exc: Exception) -> None:
    raise exc


def start(connection: HubConnection, send: Any) -> Pusher | None:
    """A pusher for a connection served by uvicorn's websockets-sansio protocol (else None):
    from now on the protocol's queue."""
    protocol = sansio_protocol(send)
    queue = getattr(protocol, "queue", None)
    if not isinstance(queue, asyncio.Queue) or not hasattr(protocol, "read_paused"):
        return None
    return Pusher(connection, protocol, queue)


def handed(message: dict[str, Any]) -> Awaitable[None]:
    """What a frame fed by the pusher left to do (taken from a ``HANDED`` message)."""
    rest: Awaitable[None] = message.pop("rest")
    return rest
