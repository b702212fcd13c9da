"""Writing to uvicorn's WebSocket without a task switch, and without the ASGI ``send`` where
its websockets-sansio protocol can be written to directly.

The outbound buffer hands its bytes to a *sink* at the end of the loop turn they were
written in (``backplane.outbound``). The sink here writes them at once:

- on uvicorn's websockets-sansio protocol (what ``hubplane serve`` runs) while the socket is
  open and writable, straight to the protocol's websockets state machine and its transport:
  what uvicorn's ``send`` does for a ``websocket.send``, without the message dict, the
  bytes-to-text-to-bytes round trip of a text frame, and the coroutine;
- else by running uvicorn's ASGI ``send`` coroutine one step: it completes without
  suspending unless the socket's write buffer is over its high-water mark. When it does
  suspend, the transport's writer task finishes it (:func:`finish`) and later writes queue
  behind it, so the order of messages is kept.

tests/contracts/test_uvicorn_contract.py checks what this relies on against a real uvicorn.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backplane import HubConnection


SANSIO = "uvicorn.protocols.websockets.websockets_sansio_impl"
#: What the direct write reads of uvicorn's websockets-sansio protocol object.
SANSIO_ATTRIBUTES = (
    "conn",
    "transport",
    "writable",
    "disconnected",
    "close_sent",
    "handshake_complete",
    "initial_response",
)


def is_uvicorn_send(send: Any) -> bool:
    """True when ``send`` is uvicorn's own WebSocket send, which may be stepped by hand."""
    owner = getattr(send, "__self__", None)
    return type(owner).__module__.startswith("uvicorn.protocols.websockets")


def sansio_protocol(send: Any) -> Any | None:
    """uvicorn's websockets-sansio protocol object behind ``send``, if that is what it is."""
    protocol: Any = getattr(send, "__self__", None)
    if type(protocol).__module__ != SANSIO or not all(
        hasattr(protocol, name) for name in SANSIO_ATTRIBUTES
    ):
        return None
    return protocol


def write_direct(protocol: Any, data: bytes, binary: bool) -> bool:
    """Write one frame straight to a websockets-sansio ``protocol`` (see
    :func:`sansio_protocol`); False, having written nothing, when it cannot now.

    It writes only while the handshake is done, no close was sent or received and the
    transport is not paused (over its high-water mark); otherwise the caller goes through
    ``send``, which waits or raises as uvicorn decides. (Plain functions, not a closure per
    connection: an idle connection pays nothing for them.)
    """
    if (
        protocol.disconnected
        or protocol.close_sent
        or not protocol.handshake_complete
        or protocol.initial_response is not None
        or not protocol.writable.is_set()
    ):
        return False
    machine = protocol.conn
    if binary:
        machine.send_binary(data)
    else:
        machine.send_text(data)
    protocol.transport.write(b"".join(machine.data_to_send()))
    return True


def received_queue(send: Any) -> asyncio.Queue[Any] | None:
    """The queue of received messages of uvicorn's websockets-sansio protocol behind
    ``send`` (not empty: ``receive`` returns at once), else None."""
    protocol = sansio_protocol(send)
    queue = getattr(protocol, "queue", None)
    return queue if isinstance(queue, asyncio.Queue) else None


def frame(connection: HubConnection, data: bytes) -> dict[str, Any]:
    """The ASGI ``websocket.send`` message for ``data`` in the connection's frame type."""
    protocol = connection.protocol
    if protocol is not None and protocol.is_binary:
        return {"type": "websocket.send", "bytes": data}
    return {"type": "websocket.send", "text": data.decode()}


def make_sink(
    connection: HubConnection, send: Any, state: dict[str, Any]
) -> Callable[[bytes], None]:
    """The outbound buffer's sink for a connection served by uvicorn (see the module's
    docstring); ``state["pending"]``, ``state["start_writer"]`` and ``state["send_failed"]``
    (a write raised: what it carried is lost, so the transport drops the socket) are the
    transport's."""
    outbound = connection.outbound
    direct = sansio_protocol(send)

    def sink(data: bytes) -> None:
        if direct is not None:
            protocol = connection.protocol
            try:
                if write_direct(direct, data, protocol is not None and protocol.is_binary):
                    return
            except Exception:
                outbound.sink = None
                state["send_failed"]()
                return
        coro = send(frame(connection, data))
        try:
            yielded = coro.send(None)
        except StopIteration:
            return
        except (Exception, asyncio.CancelledError):
            outbound.sink = None
            state["send_failed"]()
            return
        state["pending"] = (coro, yielded)
        outbound.suspend()
        state["start_writer"]()

    return sink


async def finish(coro: Any, yielded: Any) -> None:
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
