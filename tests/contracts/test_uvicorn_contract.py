"""uvicorn's WebSocket send, as server/transports/websockets.py steps it by hand.

The transport writes without a task switch: it calls uvicorn's ASGI ``send`` and runs the
coroutine one step (``_make_sink``). That relies on ``send`` being a bound method of
uvicorn.protocols.websockets.* (``_is_uvicorn_send``), on a small frame completing in that one
step, on a send that must wait (the socket's buffer over its high-water mark) yielding a
Future or None that ``_finish`` can wait on, and on a socket that died without a close frame
being told apart from a clean close (``socket_dropped``); and, for the direct writer
(``uvicorn_send.write_direct``), on the websockets-sansio protocol object's attributes and on
a frame written to its state machine reaching the client whole. The server here is a real uvicorn
with the WebSocket implementation that ``hubplane serve`` picks.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn

from server.cli import _uvicorn_options
from server.settings import Settings
from server.transports import uvicorn_receive, uvicorn_send
from server.transports import websockets as transport
from tests.conftest import LOOPBACK, get_free_port

TIMEOUT = 10.0
BIG = "x" * 65536
MAX_FRAMES = 4096  # 256 MB: far past any socket buffer on loopback


def contract(internal: str, used_by: str) -> str:
    return (
        f"uvicorn {uvicorn.__version__}: {internal} no longer behaves as {used_by} "
        "(server/transports/websockets.py) relies on; see tests/contracts/README.md"
    )


@dataclass
class Seen:
    """What the app saw of one WebSocket, step by step."""

    is_uvicorn_send: bool | None = None
    small_frame_done_in_one_step: bool | None = None
    yielded: Any = "nothing"
    frames_before_suspending: int = 0
    suspended: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    disconnect: dict[str, Any] | None = None
    direct_wrote: list[bool] = field(default_factory=list)
    more_received: list[bool] = field(default_factory=list)
    pushed: list[Any] = field(default_factory=list)
    woken_by: list[str] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class App:
    def __init__(self) -> None:
        self.seen: asyncio.Queue[Seen] = asyncio.Queue()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        assert scope["type"] == "websocket"
        seen = Seen()
        self.seen.put_nowait(seen)
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        seen.is_uvicorn_send = uvicorn_send.is_uvicorn_send(send)
        if scope["path"] == "/fill":
            await self._fill(seen, send)
        if scope["path"] == "/push":
            await self._push(seen, send, receive)
            return
        if scope["path"] == "/direct":
            protocol = uvicorn_send.sansio_protocol(send)
            if protocol is not None:
                seen.direct_wrote.append(uvicorn_send.write_direct(protocol, b"hello", False))
                seen.direct_wrote.append(uvicorn_send.write_direct(protocol, b"\x00\x01", True))
            await send({"type": "websocket.send", "text": "after"})  # in order behind them
            queue = uvicorn_send.received_queue(send)
            if queue is not None:
                seen.more_received.append(not queue.empty())  # nothing sent yet
                while queue.empty():  # the client sends two frames at once
                    await asyncio.sleep(0.01)
                seen.more_received.append(not queue.empty())
                await receive()
                seen.more_received.append(not queue.empty())
                await receive()
                seen.more_received.append(not queue.empty())
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                seen.disconnect = message
                seen.ended.set()
                return

    async def _push(self, seen: Seen, send: Any, receive: Any) -> None:
        """Frames fed from uvicorn's data_received; one handed over to this task."""

        async def later() -> None:
            seen.pushed.append("later ran")

        class Connection:
            outbound = SimpleNamespace(flush=lambda: None)

            def receive_now(self, data: bytes, binary: bool) -> Any:
                seen.pushed.append(data)
                return later() if data == b"later" else None

        pusher = uvicorn_receive.start(Connection(), send)  # type: ignore[arg-type]
        if pusher is None:
            return
        try:
            while True:
                pusher.arm()
                message = await receive()
                seen.woken_by.append(message["type"])
                if message["type"] == uvicorn_receive.HANDED:
                    await uvicorn_receive.handed(message)
                elif message["type"] == "websocket.disconnect":
                    seen.disconnect = message
                    return
        finally:
            pusher.disarm()
            seen.ended.set()

    async def _fill(self, seen: Seen, send: Any) -> None:
        coro = send({"type": "websocket.send", "text": "hello"})
        try:
            coro.send(None)
            seen.small_frame_done_in_one_step = False
            coro.close()
            return
        except StopIteration:
            seen.small_frame_done_in_one_step = True
        for i in range(MAX_FRAMES):
            coro = send({"type": "websocket.send", "text": BIG})
            try:
                yielded = coro.send(None)
            except StopIteration:
                continue
            seen.yielded, seen.frames_before_suspending = yielded, i
            seen.suspended.set()
            await asyncio.wait_for(uvicorn_send.finish(coro, yielded), TIMEOUT)
            seen.finished.set()
            return


@dataclass
class Server:
    port: int
    app: App


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    port = get_free_port()
    options = _uvicorn_options(Settings(host=LOOPBACK, port=port))
    options.pop("loop", None)  # serve() runs on the test's loop
    app = App()
    config = uvicorn.Config(app, **options)
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    try:
        for _ in range(200):
            if srv.started:
                break
            await asyncio.sleep(0.05)
        assert srv.started, "uvicorn did not start"
        yield Server(port, app)
    finally:
        srv.should_exit = True
        await asyncio.wait_for(task, TIMEOUT)


async def _open(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket handshake by hand: the client must be able to stop reading, and to drop
    its socket without a close frame."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def _close_frame(code: int) -> bytes:
    mask = os.urandom(4)
    payload = struct.pack("!H", code)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x88, 0x80 | len(payload)]) + mask + masked


async def _drain(reader: asyncio.StreamReader) -> None:
    while await reader.read(1 << 20):
        pass


async def test_send_is_uvicorns_and_steps_by_hand(server: Server) -> None:
    reader, writer = await _open(server.port, "/fill")
    seen = await asyncio.wait_for(server.app.seen.get(), TIMEOUT)
    drain: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(seen.suspended.wait(), TIMEOUT)
        assert seen.is_uvicorn_send, contract(
            "send as a bound method of uvicorn.protocols.websockets.*", "_is_uvicorn_send"
        )
        assert seen.small_frame_done_in_one_step, contract(
            "send() completing in one step below the high-water mark", "_make_sink"
        )
        assert seen.yielded is None or isinstance(seen.yielded, asyncio.Future), contract(
            f"send() yielding {seen.yielded!r} when it must wait", "_make_sink and _finish"
        )
        # The client reads again: the suspended send finishes.
        drain = asyncio.create_task(_drain(reader))
        await asyncio.wait_for(seen.finished.wait(), TIMEOUT)
    finally:
        if drain is not None:
            drain.cancel()
        writer.transport.abort()


async def test_a_dropped_socket_is_told_apart_from_a_clean_close(server: Server) -> None:
    _reader, writer = await _open(server.port, "/")
    dropped = await asyncio.wait_for(server.app.seen.get(), TIMEOUT)
    writer.transport.abort()  # a TCP reset, no close frame
    await asyncio.wait_for(dropped.ended.wait(), TIMEOUT)
    assert dropped.disconnect is not None
    assert transport.socket_dropped(dropped.disconnect), contract(
        f"websocket.disconnect {dropped.disconnect} for a dropped socket", "socket_dropped"
    )

    reader, writer = await _open(server.port, "/")
    clean = await asyncio.wait_for(server.app.seen.get(), TIMEOUT)
    writer.write(_close_frame(1000))
    await asyncio.wait_for(clean.ended.wait(), TIMEOUT)
    writer.close()
    assert clean.disconnect is not None
    assert not transport.socket_dropped(clean.disconnect), contract(
        f"websocket.disconnect {clean.disconnect} for a clean close", "socket_dropped"
    )


def _client_text(payload: bytes) -> bytes:
    """A small masked text frame, as a client sends it."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


async def _server_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One small unmasked frame from the server: (opcode, payload)."""
    head = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
    assert head[1] < 126, head
    return head[0] & 0x0F, await asyncio.wait_for(reader.readexactly(head[1]), TIMEOUT)


async def test_a_direct_write_reaches_the_client(server: Server) -> None:
    reader, writer = await _open(server.port, "/direct")
    seen = await asyncio.wait_for(server.app.seen.get(), TIMEOUT)
    try:
        frames = [await _server_frame(reader) for _ in range(3)]
        assert seen.direct_wrote == [True, True], contract(
            f"the websockets-sansio protocol's {uvicorn_send.SANSIO_ATTRIBUTES}",
            "uvicorn_send.write_direct",
        )
        assert frames == [(1, b"hello"), (2, b"\x00\x01"), (1, b"after")], contract(
            "frames written to the protocol's websockets state machine", "write_direct"
        )
        writer.write(_client_text(b"one") + _client_text(b"two"))
        for _ in range(int(TIMEOUT / 0.01)):
            if len(seen.more_received) == 4:
                break
            await asyncio.sleep(0.01)
        assert seen.more_received == [False, True, True, False], contract(
            "the protocol's queue of received messages", "uvicorn_send.received_queue"
        )
    finally:
        writer.transport.abort()


async def test_frames_are_pushed_from_data_received(server: Server) -> None:
    reader, writer = await _open(server.port, "/push")
    seen = await asyncio.wait_for(server.app.seen.get(), TIMEOUT)

    async def until(n: int) -> None:
        for _ in range(int(TIMEOUT / 0.01)):
            if len(seen.pushed) >= n:
                return
            await asyncio.sleep(0.01)

    try:
        writer.write(_client_text(b"one") + _client_text(b"two"))
        await until(2)
        writer.write(_client_text(b"later"))
        await until(4)
        writer.write(_client_text(b"three"))  # read again once the task took the hand-over
        await until(5)
        writer.write(_close_frame(1000))
        await asyncio.wait_for(seen.ended.wait(), TIMEOUT)
        assert seen.pushed == [b"one", b"two", b"later", "later ran", b"three"], contract(
            "the protocol's queue.put_nowait, read_paused and receive()", "uvicorn_receive"
        )
        assert seen.woken_by == [uvicorn_receive.HANDED, "websocket.disconnect"], contract(
            "the protocol's queue of received messages", "uvicorn_receive.Pusher"
        )
    finally:
        writer.transport.abort()
