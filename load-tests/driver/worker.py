"""One driver process: many picows connections on one uvloop event loop.

The parent (``fanout.py``) starts several of these, hands each a slice of the connections and
talks to it over a pipe: ``ready`` (all connected and set up) → ``go`` (a common start time and
the kind of load) → ``done`` (counts and HDR histograms), as many times as it likes → ``close``.

Two kinds of load:

- closed-loop (``rate`` None): a sending connection keeps at most ``window`` of its own messages
  in flight and sends the next when one of them is delivered (the echo reply, its own copy of a
  broadcast or group message, or, for sends to a connection or a user, the copies at their
  targets, which are always connections of this same process). The load follows what the
  server can take.
- open-loop (``rate`` in messages per second): the messages are sent on a fixed schedule,
  round robin over the sending connections, whatever comes back. Every message carries its
  scheduled time, so a driver that falls behind shows up as latency (no coordinated omission).

``churn`` is neither: one loop per connection slot each connect, make one echo round trip and close,
again and again until the deadline.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from multiprocessing.connection import Connection
from typing import Any

import uvloop
from hdrh.histogram import HdrHistogram
from picows import WSCloseCode, WSListener, WSMsgType, ws_connect

from .adapters import ADAPTERS, MARK, Adapter

# Latencies in microseconds, from 1 µs to 60 s, 3 significant digits.
LOWEST, HIGHEST, DIGITS = 1, 60_000_000, 3
KEEPALIVE_SECONDS = 10.0
DATA_FRAMES = (WSMsgType.TEXT, WSMsgType.BINARY)
#: Scenarios whose loop closes at the sender (it receives its own message back).
OWN_COPY = {"echo", "broadcast", "groups", "biggroups"}
#: Scenarios whose loop closes at the targets (connections of the same driver process).
DIRECT = {"connection", "users"}
GROUPED = {"groups", "biggroups"}
PACE_SECONDS = 0.001  # open-loop: how often the schedule is looked at (uvloop timers are in
# whole milliseconds: a shorter sleep returns at once and the loop would spin)


def new_histogram() -> HdrHistogram:
    """An empty latency histogram (µs)."""
    return HdrHistogram(LOWEST, HIGHEST, DIGITS)


def user_of(index: int, cfg: dict[str, Any]) -> str:
    """The user a connection belongs to in the send-to-user scenario."""
    return f"u{index // cfg['user_size']}"


class Client(WSListener):  # type: ignore[misc]
    """One connection: the handshake, then counting and timing every marked message."""

    def __init__(self, worker: Worker, index: int, adapter: Adapter) -> None:
        self.worker = worker
        self.index = index
        self.node = index % len(worker.cfg["urls"])
        self.adapter = adapter
        self.transport: Any = None
        self.ready = asyncio.get_running_loop().create_future()
        self.ack: asyncio.Future[None] | None = None
        self.reply: asyncio.Future[None] | None = None  # churn: the one echo
        self.tag = b"@S%d@" % index
        self.group = ""
        self.targets: list[str] = []  # addresses or users, shuffled, used in turn
        self.next_target = 0
        self.copies = 1  # deliveries of one message that close this sender's loop
        self.outstanding = 0
        self.sent = 0
        self.sending = False
        self.closed = False
        self.leaving = False
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
        if self.reply is not None and not self.reply.done():
            self.reply.set_exception(ConnectionError("closed before the echo came back"))
        if not self.worker.closing and not self.leaving:
            self.worker.disconnects += 1

    def send_one(self, stamp_ns: int) -> None:
        """Send the next message of this connection's scenario, stamped ``stamp_ns``."""
        if self.closed:
            return
        payload = f"@T{stamp_ns}@S{self.index}@{self.worker.pad}"
        scenario = self.worker.scenario
        adapter = self.adapter
        if scenario == "echo" or scenario == "churn":
            data = adapter.echo(payload)
        elif scenario == "broadcast":
            data = adapter.broadcast(payload)
        elif scenario in GROUPED:
            data = adapter.send_group(self.group, payload)
        else:
            target = self.targets[self.next_target]
            self.next_target = (self.next_target + 1) % len(self.targets)
            if scenario == "connection":
                data = adapter.send_connection(target, payload)
            else:
                data = adapter.send_user(target, payload)
        self.transport.send(self.kind, data)
        self.sent += 1
        self.outstanding += self.copies


class Worker:
    """The state of one driver process."""

    def __init__(self, cfg: dict[str, Any], pipe: Connection) -> None:
        self.cfg = cfg
        self.pipe = pipe
        self.scenario: str = cfg["scenario"]
        self.direct = self.scenario in DIRECT
        self.nodes = len(cfg["urls"])
        self.window: int = cfg["window"]
        self.pad = "x" * cfg["pad"]
        self.clients: list[Client] = []
        self.by_index: dict[int, Client] = {}
        self.hist = new_histogram()
        self.cross_hist = new_histogram()  # deliveries from a connection on another node
        self.connect_hist = new_histogram()
        self.received = 0
        self.in_window = 0
        self.in_tail = 0  # received in the second half of the load window
        self.frames = 0  # frames that carried messages (servers may put several in one)
        self.disconnects = 0
        self.connect_errors = 0
        self.cycles = 0  # churn: connect + echo + close, completed
        self.cycle_errors = 0
        self.running = False
        self.closed_loop = True
        self.closing = False
        self.tail_ns = 0
        self.end_ns = 0

    # -- receiving ---------------------------------------------------------------------------

    def on_marks(self, client: Client, data: bytes) -> None:
        """Count and time every marked message in a frame; refill the senders' windows."""
        now = time.monotonic_ns()
        record = self.hist.record_value
        direct = self.direct
        cross = direct and self.nodes > 1  # (parsing every sender costs the driver time)
        by_index = self.by_index
        node = client.node
        n = 0
        pos = data.find(MARK)
        while pos >= 0:
            end = data.find(b"@", pos + 2)
            latency = (now - int(data[pos + 2 : end])) // 1000
            if latency < 1:
                latency = 1
            record(latency)
            n += 1
            if direct:
                stop = data.find(b"@", end + 2)
                index = int(data[end + 2 : stop])
                if cross and index % self.nodes != node:
                    self.cross_hist.record_value(latency)
                sender = by_index.get(index)
                if sender is not None:
                    sender.outstanding -= 1
                    if self.running and self.closed_loop:
                        while sender.outstanding < self.window * sender.copies:
                            sender.send_one(time.monotonic_ns())
                pos = data.find(MARK, stop)
            else:
                pos = data.find(MARK, end)
        self.received += n
        if now <= self.end_ns:
            self.in_window += n
            self.frames += 1
            if now >= self.tail_ns:
                self.in_tail += n
        if client.reply is not None and not client.reply.done():
            client.reply.set_result(None)
        if client.sending and not direct:
            own = data.count(client.tag)
            if own:
                client.outstanding -= own
                if self.running and self.closed_loop:
                    while client.outstanding < self.window:
                        client.send_one(time.monotonic_ns())

    # -- phases ------------------------------------------------------------------------------

    async def open_client(self, index: int) -> Client:
        """Connect connection ``index`` and finish its handshake (raises on failure)."""
        cfg = self.cfg
        urls = cfg["urls"]
        user = user_of(index, cfg) if self.scenario == "users" else None
        adapter = ADAPTERS[cfg["adapter"]](urls[index % len(urls)], self.scenario, index, user)
        url = await adapter.ws_url()
        _, client = await ws_connect(
            lambda: Client(self, index, adapter),
            url,
            websocket_handshake_timeout=10,
            read_buffer_init_size=4096,
        )
        try:
            await asyncio.wait_for(client.ready, 10)
        except BaseException:
            client.leaving = True
            client.transport.disconnect(graceful=False)
            raise
        return client  # type: ignore[no-any-return]

    async def connect_one(self, index: int, limit: asyncio.Semaphore) -> None:
        async with limit:
            started = time.monotonic_ns()
            try:
                client = await self.open_client(index)
            except Exception:  # refused, timed out, handshake failed: one error each
                self.connect_errors += 1
                return
            self.connect_hist.record_value(max(1, (time.monotonic_ns() - started) // 1000))
        self.clients.append(client)

    def _choose_targets(self) -> None:
        """Every connection gets its own shuffled list of targets among this process' ones."""
        cfg = self.cfg
        rng = random.Random(cfg["first"] * 7919 + 1)
        if self.scenario == "connection":
            addresses = [(c.index, c.adapter.address) for c in self.clients]
            for client in self.clients:
                targets = [a for i, a in addresses if i != client.index]
                rng.shuffle(targets)
                client.targets = targets or [client.adapter.address]
        else:
            size = cfg["user_size"]
            users = sorted({user_of(c.index, cfg) for c in self.clients})
            for client in self.clients:
                own = user_of(client.index, cfg)
                targets = [u for u in users if u != own]
                rng.shuffle(targets)
                client.targets = targets or [own]
                client.copies = size

    async def setup(self) -> dict[str, Any]:
        cfg = self.cfg
        limit = asyncio.Semaphore(cfg["connect_concurrency"])
        started = time.monotonic()
        first, count = cfg["first"], cfg["count"]
        if self.scenario != "churn":
            await asyncio.gather(*(self.connect_one(i, limit) for i in range(first, first + count)))
        connect_seconds = time.monotonic() - started
        self.clients.sort(key=lambda c: c.index)
        self.by_index = {c.index: c for c in self.clients}
        if self.scenario in GROUPED:
            acks = []
            for client in self.clients:
                client.group = f"g{client.index // cfg['group_size']}"
                client.ack = asyncio.get_running_loop().create_future()
                client.transport.send(client.kind, client.adapter.join(client.group))
                acks.append(client.ack)
            await asyncio.wait_for(asyncio.gather(*acks), 30)
        if self.direct:
            self._choose_targets()
        for client in self.clients:
            if self.scenario in ("echo", "groups") or self.direct:
                client.sending = True
            elif self.scenario == "broadcast":
                client.sending = client.index < cfg["senders"]
            elif self.scenario == "biggroups":
                client.sending = client.index % cfg["group_size"] < cfg["senders"]
        return {
            "connected": len(self.clients),
            "connect_seconds": connect_seconds,
            "senders": sum(c.sending for c in self.clients),
            "connect_hist": self.connect_hist.encode().decode(),
        }

    async def pace(self, start_ns: int, end_ns: int, rate: float) -> None:
        """Open-loop: message k goes at ``start + k / rate``, round robin over the senders."""
        senders = [c for c in self.clients if c.sending]
        if not senders or rate <= 0:
            return
        period = 1e9 / rate
        count = len(senders)
        k = 0
        due = start_ns
        while due < end_ns:
            now = time.monotonic_ns()
            while due <= now and due < end_ns:
                senders[k % count].send_one(due)
                k += 1
                due = start_ns + int(k * period)
            await asyncio.sleep(PACE_SECONDS)

    async def churn_loop(self, slot: int, end_ns: int) -> None:
        """Connect, one echo, close; again until the deadline."""
        cfg = self.cfg
        step = cfg["connections"]  # the loops of every process share the index space
        index = cfg["first"] + slot
        while time.monotonic_ns() < end_ns:
            started = time.monotonic_ns()
            try:
                client = await self.open_client(index)
            except Exception:
                self.connect_errors += 1
                await asyncio.sleep(0.05)  # a refusal must not become a busy loop
                index += step
                continue
            self.connect_hist.record_value(max(1, (time.monotonic_ns() - started) // 1000))
            client.reply = asyncio.get_running_loop().create_future()
            try:
                client.send_one(time.monotonic_ns())
                await asyncio.wait_for(client.reply, 5)
                self.cycles += 1
            except Exception:
                self.cycle_errors += 1
            client.leaving = True
            if not client.closed:
                client.transport.send_close(WSCloseCode.OK)
                client.transport.disconnect()
                try:
                    await asyncio.wait_for(client.transport.wait_disconnected(), 5)
                except Exception:
                    self.cycle_errors += 1
            index += step

    async def run(self, order: dict[str, Any]) -> dict[str, Any]:
        start_ns: int = order["start"]
        duration: float = order["duration"]
        rate: float | None = order.get("rate")
        self.end_ns = start_ns + int(duration * 1e9)
        self.tail_ns = start_ns + int(duration * 0.5e9)
        await asyncio.sleep(max(0.0, (start_ns - time.monotonic_ns()) / 1e9))
        self.hist.reset()
        self.cross_hist.reset()
        self.received = self.in_window = self.in_tail = self.frames = 0
        self.disconnects = self.cycles = self.cycle_errors = 0
        sent0 = sum(c.sent for c in self.clients)
        if self.scenario == "churn":
            self.connect_hist.reset()
            self.connect_errors = 0
            await asyncio.gather(
                *(self.churn_loop(i, self.end_ns) for i in range(self.cfg["count"]))
            )
        elif self.scenario != "connect":
            self.running = True
            self.closed_loop = rate is None
            if rate is None:
                for client in self.clients:
                    if client.sending and not client.closed:
                        for _ in range(self.window):
                            client.send_one(time.monotonic_ns())
            else:
                await self.pace(start_ns, self.end_ns, rate)
            await asyncio.sleep(max(0.0, (self.end_ns - time.monotonic_ns()) / 1e9))
            self.running = False
        await asyncio.sleep(order["grace"])
        return self.results(sum(c.sent for c in self.clients) - sent0)

    def results(self, sent: int) -> dict[str, Any]:
        return {
            "connected": len(self.clients),
            "sent": sent,
            "received": self.received,
            "in_window": self.in_window,
            "in_tail": self.in_tail,
            "frames": self.frames,
            "disconnects": self.disconnects,
            "connect_errors": self.connect_errors,
            "cycles": self.cycles,
            "cycle_errors": self.cycle_errors,
            "hist": self.hist.encode().decode(),
            "cross_hist": self.cross_hist.encode().decode(),
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
                self.pipe.send(("done", await self.run(arg)))
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
