"""One driver process: many picows connections on one uvloop event loop.

The parent (``fanout.py``) starts several of these, hands each a slice of the connections and
talks to it over a pipe: ``ready`` (all connected and set up) → ``go`` (a common start time) →
``done`` (counts and HDR histograms) → ``close``.

Sending is closed-loop with a bounded window: a sending connection keeps at most ``window`` of
its own messages in flight and sends the next when one of them comes back to it (the echo reply,
or its own copy of a broadcast or group message). So the load follows what the server can take
and every loop ends at the deadline.
"""

from __future__ import annotations

import asyncio
import os
import time
from multiprocessing.connection import Connection
from typing import Any

import uvloop
from hdrh.histogram import HdrHistogram
from picows import WSListener, WSMsgType, ws_connect

from .adapters import ADAPTERS, MARK, Adapter

# Latencies in microseconds, from 1 µs to 60 s, 3 significant digits.
LOWEST, HIGHEST, DIGITS = 1, 60_000_000, 3
KEEPALIVE_SECONDS = 10.0
DATA_FRAMES = (WSMsgType.TEXT, WSMsgType.BINARY)


def new_histogram() -> HdrHistogram:
    """An empty latency histogram (µs)."""
    return HdrHistogram(LOWEST, HIGHEST, DIGITS)


class Client(WSListener):  # type: ignore[misc]
    """One connection: the handshake, then counting and timing every marked message."""

    def __init__(self, worker: Worker, index: int, adapter: Adapter) -> None:
        self.worker = worker
        self.index = index
        self.adapter = adapter
        self.transport: Any = None
        self.ready = asyncio.get_running_loop().create_future()
        self.ack: asyncio.Future[None] | None = None
        self.tag = b"@S%d@" % index
        self.group = ""
        self.outstanding = 0
        self.sent = 0
        self.sending = False
        self.closed = False
        self.kind = WSMsgType.BINARY if adapter.binary else WSMsgType.TEXT

    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport
        first = self.adapter.handshake()
        if first is not None:
            transport.send(WSMsgType.TEXT, first)  # SignalR handshakes are JSON text
        elif not self.adapter.greets:
            self.ready.set_result(None)

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        if frame.msg_type not in DATA_FRAMES:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.disconnect()
            return
        data = frame.get_payload_as_bytes()
        if not self.ready.done():
            try:
                done, reply = self.adapter.ready(data)
            except ConnectionError as exc:
                self.ready.set_exception(exc)
                return
            if reply is not None:
                transport.send(WSMsgType.TEXT, reply)
            if done:
                self.ready.set_result(None)
            return
        if MARK in data:
            self.worker.on_marks(self, data)
        elif self.ack is not None and not self.ack.done() and self.adapter.is_ack(data):
            self.ack.set_result(None)
        else:
            reply = self.adapter.ping_reply(data)
            if reply is not None:
                transport.send(WSMsgType.TEXT, reply)

    def on_ws_disconnected(self, transport: Any) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed during the handshake"))
        if not self.worker.closing:
            self.worker.disconnects += 1

    def send_one(self, now_ns: int) -> None:
        """Send the next message of this connection's scenario."""
        payload = f"@T{now_ns}@S{self.index}@{self.worker.pad}"
        scenario = self.worker.scenario
        if scenario == "echo":
            data = self.adapter.echo(payload)
        elif scenario == "broadcast":
            data = self.adapter.broadcast(payload)
        else:
            data = self.adapter.send_group(self.group, payload)
        self.transport.send(self.kind, data)
        self.sent += 1
        self.outstanding += 1


class Worker:
    """The state of one driver process."""

    def __init__(self, cfg: dict[str, Any], pipe: Connection) -> None:
        self.cfg = cfg
        self.pipe = pipe
        self.scenario: str = cfg["scenario"]
        self.window: int = cfg["window"]
        self.pad = "x" * cfg["pad"]
        self.clients: list[Client] = []
        self.hist = new_histogram()
        self.connect_hist = new_histogram()
        self.received = 0
        self.in_window = 0
        self.frames = 0  # frames that carried messages (servers may put several in one)
        self.disconnects = 0
        self.connect_errors = 0
        self.running = False
        self.closing = False
        self.end_ns = 0

    # -- receiving ---------------------------------------------------------------------------

    def on_marks(self, client: Client, data: bytes) -> None:
        """Count and time every marked message in a frame; refill the sender's window."""
        now = time.monotonic_ns()
        record = self.hist.record_value
        n = 0
        pos = data.find(MARK)
        while pos >= 0:
            end = data.find(b"@", pos + 2)
            latency = (now - int(data[pos + 2 : end])) // 1000
            record(latency if latency > 0 else 1)
            n += 1
            pos = data.find(MARK, end)
        self.received += n
        if now <= self.end_ns:
            self.in_window += n
            self.frames += 1
        if client.sending:
            own = data.count(client.tag)
            if own:
                client.outstanding -= own
                if self.running:
                    while client.outstanding < self.window:
                        client.send_one(time.monotonic_ns())

    # -- phases ------------------------------------------------------------------------------

    async def connect_one(self, index: int, limit: asyncio.Semaphore) -> None:
        cfg = self.cfg
        urls = cfg["urls"]
        adapter = ADAPTERS[cfg["adapter"]](urls[index % len(urls)], self.scenario)
        async with limit:
            started = time.monotonic_ns()
            try:
                url = await adapter.ws_url()
                _, client = await ws_connect(
                    lambda: Client(self, index, adapter),
                    url,
                    websocket_handshake_timeout=10,
                    read_buffer_init_size=4096,
                )
                await asyncio.wait_for(client.ready, 10)
            except Exception:  # refused, timed out, handshake failed: one error each
                self.connect_errors += 1
                return
            self.connect_hist.record_value(max(1, (time.monotonic_ns() - started) // 1000))
        self.clients.append(client)

    async def setup(self) -> dict[str, Any]:
        cfg = self.cfg
        limit = asyncio.Semaphore(cfg["connect_concurrency"])
        started = time.monotonic()
        first, count = cfg["first"], cfg["count"]
        await asyncio.gather(*(self.connect_one(i, limit) for i in range(first, first + count)))
        connect_seconds = time.monotonic() - started
        self.clients.sort(key=lambda c: c.index)
        if self.scenario == "groups":
            acks = []
            for client in self.clients:
                client.group = f"g{client.index // cfg['group_size']}"
                client.ack = asyncio.get_running_loop().create_future()
                client.transport.send(client.kind, client.adapter.join(client.group))
                acks.append(client.ack)
            await asyncio.wait_for(asyncio.gather(*acks), 30)
        for client in self.clients:
            if self.scenario == "echo" or self.scenario == "groups":
                client.sending = True
            elif self.scenario == "broadcast":
                client.sending = client.index < cfg["senders"]
        return {"connected": len(self.clients), "connect_seconds": connect_seconds}

    async def run(self, start_ns: int) -> None:
        duration_ns = int(self.cfg["duration"] * 1e9)
        self.end_ns = start_ns + duration_ns
        await asyncio.sleep(max(0.0, (start_ns - time.monotonic_ns()) / 1e9))
        self.hist.reset()
        self.received = self.in_window = self.frames = 0
        self.running = self.scenario != "connect"
        if self.running:
            for client in self.clients:
                if client.sending and not client.closed:
                    for _ in range(self.window):
                        client.send_one(time.monotonic_ns())
        await asyncio.sleep(max(0.0, (self.end_ns - time.monotonic_ns()) / 1e9))
        self.running = False
        await asyncio.sleep(self.cfg["grace"])

    def results(self) -> dict[str, Any]:
        return {
            "connected": len(self.clients),
            "sent": sum(c.sent for c in self.clients),
            "received": self.received,
            "in_window": self.in_window,
            "frames": self.frames,
            "disconnects": self.disconnects,
            "connect_errors": self.connect_errors,
            "hist": self.hist.encode().decode(),
            "connect_hist": self.connect_hist.encode().decode(),
        }

    async def keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS)
            for client in self.clients:
                frame = client.adapter.keepalive()
                if frame is not None and not client.closed:
                    client.transport.send(client.kind, frame)

    async def command(self) -> tuple[str, Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[str, Any]] = loop.create_future()

        def readable() -> None:
            loop.remove_reader(self.pipe.fileno())
            future.set_result(self.pipe.recv())

        loop.add_reader(self.pipe.fileno(), readable)
        return await future

    async def main(self) -> None:
        keepalive = asyncio.create_task(self.keepalive())
        self.pipe.send(("ready", await self.setup()))
        while True:
            verb, arg = await self.command()
            if verb == "go":
                await self.run(arg)
                self.pipe.send(("done", self.results()))
            elif verb == "close":
                break
        keepalive.cancel()
        self.closing = True
        for client in self.clients:
            client.transport.disconnect()
        await asyncio.sleep(0.2)
        self.pipe.send(("closed", None))


def worker_main(cfg: dict[str, Any], pipe: Connection) -> None:
    """The entry point of a driver process."""
    cpus = cfg.get("cpus")
    if cpus:
        os.sched_setaffinity(0, cpus)
    uvloop.run(Worker(cfg, pipe).main())
