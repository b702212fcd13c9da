"""How many cross-node messages per second one node publishes, with and without pipelining.

The publishing node (this process) sends N group messages to a group whose only member is on
another node, so every send is one PUBLISH in the .NET layout with json + messagepack
payloads. The receiving node runs in a separate process (as in a cluster: its CPU is not
this node's) and reports when the last message arrived, so two rates come out:

- published/s: until Redis has taken the last PUBLISH (what this node can push);
- delivered/s: until the other node has received the last one.

    .venv/bin/python load-tests/redis/publish_rate.py [--redis-url URL] [--messages N]
        [--modes lua,each,single] [--repeat N] [--receiver-cpus 0] [--json]

Without --redis-url it starts a private redis-server on a free loopback port. ``--json`` prints
one JSON object per run instead of the text lines (bench.py reads them); ``--receiver-cpus``
pins the receiving node (bench.py keeps it on the servers' core, the publisher on its own).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from backplane import Hub, HubConnectionHandler, HubOptions  # noqa: E402
from backplane.redis.node import RedisNode  # noqa: E402
from tests.hub.helpers import Client  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import start_redis  # noqa: E402


class BenchHub(Hub):
    wire_name = "Bench.Hub"


async def receive(url: str, prefix: str, count: int) -> None:
    """The other node: one client in the group; prints when the last message arrived."""
    node = RedisNode(url, channel_prefix=prefix, presence=False)
    manager = node.manager(BenchHub.wire_name, ("json", "messagepack"))
    await manager.start()
    handler = HubConnectionHandler(BenchHub, HubOptions(max_buffer_size=1 << 30), manager)
    client = Client(handler, "r0")
    await client.handshake()
    await manager.add_to_group("r0", "room")
    print(json.dumps({"ready": True}), flush=True)
    deadline = time.monotonic() + 120
    while node.bus.stats.received < count and time.monotonic() < deadline:
        client.conn.outbound.take()  # what a socket would carry away
        await asyncio.sleep(0.002)
    print(json.dumps({"received": node.bus.stats.received, "at": time.time()}), flush=True)
    await client.conn.transport_closed()
    await manager.stop()


async def run_once(
    url: str,
    messages: int,
    max_batch: int,
    script: bool = True,
    payload_protocols: tuple[str, ...] = (),
    receiver_cpus: str = "",
) -> dict[str, float]:
    prefix = f"bench{os.getpid()}{time.monotonic_ns()}:"
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--receive", url, prefix, str(messages), receiver_cpus],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None
        assert json.loads(receiver.stdout.readline()).get("ready")
        sender = RedisNode(
            url, channel_prefix=prefix, presence=False, payload_protocols=payload_protocols
        )
        manager = sender.manager(BenchHub.wire_name, ("json", "messagepack"))
        await manager.start()
        sender.bus.max_batch = max_batch
        sender.bus.publish_script = script
        args = ["some text of a chat message", 12345]
        start = time.time()
        for i in range(messages):
            await manager.send_group("room", "Msg", args)
            if i % 1000 == 999:
                await asyncio.sleep(0)  # let the writer run, as a busy hub would
        assert await sender.bus.flush(60.0), "the publishes did not all reach Redis"
        published = time.time() - start
        report = json.loads(receiver.stdout.readline())
        batches = sender.bus.stats.batches
        await manager.stop()
    finally:
        receiver.wait(30)
    return {
        "published_per_s": messages / published,
        "delivered_per_s": report["received"] / (report["at"] - start),
        "round_trips": batches,
        "received": report["received"],
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url")
    parser.add_argument("--messages", type=int, default=100000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--modes", default="lua,each,single", help="which of lua,each,single")
    parser.add_argument("--receiver-cpus", default="", help="pin the receiving node, e.g. 0")
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    opts = parser.parse_args()
    proc = None
    url = opts.redis_url
    if not url:
        proc, url = start_redis()
    try:
        modes = {
            "lua": ("pipelined, Lua batch", 2048, True),
            "each": ("pipelined, PUBLISH each", 2048, False),
            "single": ("one PUBLISH per round trip", 1, False),
        }
        for mode in opts.modes.split(","):
            label, batch, script = modes[mode]
            n = opts.messages if batch > 1 else max(5000, opts.messages // 10)
            for _ in range(opts.repeat):
                r = await run_once(url, n, batch, script, receiver_cpus=opts.receiver_cpus)
                if opts.json:
                    print(json.dumps({"mode": mode, "label": label, "messages": n, **r}))
                    continue
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


def _entry() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if len(sys.argv) == 6 and sys.argv[1] == "--receive":
        if sys.argv[5]:
            os.sched_setaffinity(0, {int(c) for c in sys.argv[5].split(",")})
        asyncio.run(receive(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        asyncio.run(main())


if __name__ == "__main__":
    _entry()
