"""How many cross-node messages per second one node publishes, with and without pipelining.

A node (in this process) sends N group messages to a group whose members are all on another
node, so every send is one PUBLISH in the .NET layout with json + messagepack payloads. The
clock stops when Redis has taken the last PUBLISH. A second node subscribed to the group counts
what arrives, so the figure is delivered messages, not just queued ones.

    .venv/bin/python load-tests/redis/publish_rate.py [--redis-url URL] [--messages N]

Without --redis-url it starts a private redis-server on a free loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from backplane import Hub, HubConnectionHandler, HubOptions  # noqa: E402
from backplane.redis.node import RedisNode  # noqa: E402
from tests.hub.helpers import Client  # noqa: E402


class BenchHub(Hub):
    wire_name = "Bench.Hub"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_once(
    url: str,
    messages: int,
    max_batch: int,
    receivers: int,
    script: bool = True,
    protocols: tuple[str, ...] = ("json", "messagepack"),
) -> dict[str, float]:
    prefix = f"bench{os.getpid()}{max_batch}:"
    sender = RedisNode(url, channel_prefix=prefix, presence=False)
    receiver = RedisNode(url, channel_prefix=prefix, presence=False)
    m1 = sender.manager(BenchHub.wire_name, protocols)
    m2 = receiver.manager(BenchHub.wire_name, ("json", "messagepack"))
    h2 = HubConnectionHandler(BenchHub, HubOptions(max_buffer_size=1 << 30), m2)
    await m1.start()
    await m2.start()
    sender.bus.max_batch = max_batch
    sender.bus.publish_script = script
    clients = []
    for i in range(receivers):
        c = Client(h2, f"r{i}")
        await c.handshake()
        await m2.add_to_group(f"r{i}", "room")
        clients.append(c)
    args = ["some text of a chat message", 12345]
    start = time.perf_counter()
    for i in range(messages):
        await m1.send_group("room", "Msg", args)
        if i % 1000 == 999:
            await asyncio.sleep(0)  # let the writer run, as a busy hub would
    while sender.bus._queue:
        await asyncio.sleep(0.001)
    published = time.perf_counter() - start
    deadline = time.monotonic() + 60
    while receiver.bus.stats.received < messages and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    delivered = time.perf_counter() - start
    result = {
        "published_per_s": messages / published,
        "delivered_per_s": receiver.bus.stats.received / delivered,
        "round_trips": sender.bus.stats.batches,
        "received": receiver.bus.stats.received,
    }
    for c in clients:
        await c.conn.transport_closed()
    await m1.stop()
    await m2.stop()
    return result


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url")
    parser.add_argument("--messages", type=int, default=50000)
    parser.add_argument("--receivers", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    opts = parser.parse_args()
    proc = None
    url = opts.redis_url
    if not url:
        port = free_port()
        exe = shutil.which("redis-server") or sys.exit("redis-server not found")
        proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tempfile.gettempdir(),
            ],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        await asyncio.sleep(0.3)
    try:
        modes = (
            ("pipelined, Lua batch", 2048, True),
            ("pipelined, PUBLISH each", 2048, False),
            ("one PUBLISH per round trip", 1, False),
        )
        for label, batch, script in modes:
            n = opts.messages if batch > 1 else max(5000, opts.messages // 5)
            for _ in range(opts.repeat):
                r = await run_once(url, n, batch, opts.receivers, script)
                print(
                    f"{label:28s} {n:7d} msgs  published {r['published_per_s']:9.0f}/s  "
                    f"delivered {r['delivered_per_s']:9.0f}/s  round trips {r['round_trips']:.0f}  "
                    f"received {r['received']:.0f}",
                    flush=True,
                )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(5)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
