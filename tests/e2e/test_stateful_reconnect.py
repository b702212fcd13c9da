"""Stateful reconnect with the official JS client: a WebSocket dropped without a close frame
mid-traffic resumes on the same connection with nothing lost and nothing duplicated.

A loopback TCP relay sits between client and server; the test cuts every connection through
it at once (RST, no close frame), as a network drop would.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from typing import Any

import pytest

from tests.conftest import get_free_port

pytestmark = pytest.mark.e2e

HUBS = {"/hubs/pulse": "tests.e2e.feature_hubs:PulseHub"}


class Relay:
    """A threaded asyncio TCP relay whose connections can all be cut at once."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = get_free_port()
        self.loop = asyncio.new_event_loop()
        self.writers: list[asyncio.StreamWriter] = []
        self.accepted = 0
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", self.port)
        )
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except Exception:
                pass

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        """Reset every relayed connection, both sides, with no WebSocket close frame."""

        def reset() -> None:
            for w in self.writers:
                sock = w.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                w.transport.abort()
            self.writers.clear()

        self.loop.call_soon_threadsafe(reset)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def server(module_hubplane_server: Any) -> Any:
    return module_hubplane_server(HUBS, extra_args=["--log-level", "warning"])


SCENARIO = """
const hubUrl = params.url;
const b = new signalR.HubConnectionBuilder()
  .withUrl(hubUrl, { transport: signalR.HttpTransportType.WebSockets })
  .withStatefulReconnect();
if (protocol === "messagepack") b.withHubProtocol(new MessagePackHubProtocol());
const conn = b.build();
const seen = [];
const events = [];
conn.on("Pulse", (i) => seen.push(i));
conn.onreconnecting(() => events.push("reconnecting"));
conn.onclose((e) => events.push("closed " + (e ? errorText(e) : "")));
await conn.start();
const before = await conn.invoke("Whoami");
log("started", before);
const pulse = conn.invoke("Pulse", 40, 0.025);
await sleep(400);
log("cut", seen.length);
await within(new Promise((r) => setTimeout(r, 200)), 1000, "pause");
const echoes = await Promise.all([1, 2, 3].map((i) => conn.invoke("Echo", i)));
log("pulse", await within(pulse, 10000, "pulse"));
log("echoes", echoes);
log("after", await conn.invoke("Whoami") === before);
log("seen", seen);
log("events", events);
await conn.stop();
"""


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
def test_a_dropped_socket_resumes_with_nothing_lost(
    server: Any, node_client: Any, protocol: str
) -> None:
    relay = Relay(server.port)
    try:
        url = f"http://127.0.0.1:{relay.port}/hubs/pulse"
        handle = node_client.start(
            SCENARIO, url=url, protocol=protocol, params={"url": url}, timeout=30
        )
        handle.expect("started", timeout=10)
        handle.expect("cut", timeout=10)
        relay.cut()
        run = handle.wait(timeout=30)
    finally:
        relay.close()
    result = run["main"]
    result.ok()
    assert result.value("pulse") == 40
    assert result.value("seen") == list(range(40)), "lost or duplicated pushes"
    assert result.value("echoes") == [1, 2, 3]
    assert result.value("after") is True, "the connection id changed"
    assert result.value("events") == [], "the client saw a reconnect or close"
    assert relay.accepted >= 2, "the client never reconnected through the relay"
