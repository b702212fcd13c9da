"""A write to a WebSocket that raises loses nothing silently (server/transports/websockets.py).

The transport takes what is queued for a client out of the outbound buffer and hands it to
the ASGI ``send``. When that send raises, those messages did not reach the client: the write
is counted (``hubplane_send_failures``) and the socket is dropped, so a stateful client
resumes and gets them again from its replay, and a plain connection ends instead of going
on with a gap. Both ways of writing are covered: the sink that steps uvicorn's send by hand,
and the writer task used for other servers.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from backplane import Hub, HubConnection
from server.transports import websockets as transport
from tests.hub.helpers import make_handler

RS = b"\x1e"
TIMEOUT = 5.0


class EchoHub(Hub):
    async def echo(self, text: str) -> str:
        return text


class Socket:
    """An ASGI WebSocket whose ``send`` raises from the ``fail_at``-th frame on."""

    def __init__(self, fail_at: int) -> None:
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[bytes] = []
        self.fail_at = fail_at

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] != "websocket.send":
            return
        if len(self.sent) + 1 >= self.fail_at:
            raise ConnectionResetError("the socket broke mid-write")
        self.sent.append(message["text"].encode())

    def client_sends(self, obj: dict[str, Any]) -> None:
        self.incoming.put_nowait(
            {"type": "websocket.receive", "text": orjson.dumps(obj).decode() + "\x1e"}
        )


@pytest.fixture(params=["sink", "writer"])
def write_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    # The sink is used for uvicorn's own send only; here any send is taken as uvicorn's.
    monkeypatch.setattr(transport, "is_uvicorn_send", lambda send: request.param == "sink")
    return str(request.param)


async def _serve(stateful: bool) -> tuple[HubConnection, Socket, asyncio.Task[bool]]:
    handler = make_handler(EchoHub)
    connection = HubConnection(handler, "c1", transport="WebSockets")
    connection.stateful_allowed = stateful
    socket = Socket(fail_at=2)  # the handshake answer goes out; the next write fails
    socket.client_sends({"protocol": "json", "version": 2 if stateful else 1})
    task = asyncio.create_task(transport.run_websocket(connection, socket.receive, socket.send))
    async with asyncio.timeout(TIMEOUT):
        while not socket.sent:
            await asyncio.sleep(0.001)
    assert socket.sent[0].startswith(b"{}")
    socket.client_sends({"type": 1, "invocationId": "1", "target": "Echo", "arguments": ["hi"]})
    return connection, socket, task


async def test_a_plain_connection_whose_write_fails_ends(write_path: str) -> None:
    connection, socket, task = await _serve(stateful=False)
    detached = await asyncio.wait_for(task, TIMEOUT)
    assert detached is False
    assert connection.closed.is_set()
    assert connection.handler.stats.send_failures == 1
    assert len(socket.sent) == 1  # the completion never went out, and nothing went after it


async def test_a_stateful_connection_whose_write_fails_keeps_it_for_the_resume(
    write_path: str,
) -> None:
    connection, socket, task = await _serve(stateful=True)
    detached = await asyncio.wait_for(task, TIMEOUT)
    assert detached is True  # the socket was dropped; the connection waits for its client
    assert connection.detached and not connection.closed.is_set()
    assert connection.handler.stats.send_failures == 1
    buffer = connection.message_buffer
    assert buffer is not None
    replayed = b"".join(data for _, data in buffer.replay)
    assert b'"result":"hi"' in replayed  # the failed write's completion goes out on resume
