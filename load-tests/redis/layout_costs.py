"""What the .NET-compatible layout costs: a SUBSCRIBE per connection, every protocol per payload.

    .venv/bin/python load-tests/redis/layout_costs.py [--redis-url URL]

1. Connects and disconnects per second on one node: in memory, and on Redis (where each
   connection subscribes to its own channel and writes its presence entries).
2. Cross-node group messages per second with json + messagepack payloads (the .NET layout),
   json only, and messagepack only (``--redis-payload-protocols``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import start_redis  # noqa: E402
from publish_rate import BenchHub, run_once  # noqa: E402

from backplane import HubConnectionHandler, HubOptions  # noqa: E402
from backplane.redis.node import RedisNode  # noqa: E402
from tests.hub.helpers import Client  # noqa: E402


async def churn(handler: HubConnectionHandler, n: int, concurrency: int = 1) -> tuple[float, float]:
    start = time.perf_counter()
    clients = [Client(handler, f"c{i}") for i in range(n)]
    for i in range(0, n, concurrency):
        await asyncio.gather(*(c.handshake() for c in clients[i : i + concurrency]))
    connected = time.perf_counter() - start
    start = time.perf_counter()
    for c in clients:
        await c.conn.transport_closed()
    await asyncio.sleep(0)
    return n / connected, n / (time.perf_counter() - start)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url")
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--messages", type=int, default=50000)
    opts = parser.parse_args()
    proc = None
    url = opts.redis_url
    if not url:
        proc, url = start_redis()
    try:
        n = opts.connections
        memory = HubConnectionHandler(BenchHub, HubOptions())
        c, d = await churn(memory, n)
        print(f"memory manager          connects {c:8.0f}/s  disconnects {d:8.0f}/s")
        for presence in (True, False):
            node = RedisNode(url, channel_prefix=f"lc{os.getpid()}{presence}:", presence=presence)
            manager = node.manager(BenchHub.wire_name, ("json", "messagepack"))
            await manager.start()
            handler = HubConnectionHandler(BenchHub, HubOptions(), manager)
            label = "redis, presence on " if presence else "redis, presence off"
            for concurrency in (1, 100):
                c, d = await churn(handler, n, concurrency)
                print(f"{label} x{concurrency:<3d} connects {c:8.0f}/s  disconnects {d:8.0f}/s")
            await manager.stop()
        # The receiving node's client speaks JSON: a messagepack-only payload is re-encoded there.
        for protocols in (("json", "messagepack"), ("json",), ("messagepack",)):
            r = await run_once(url, opts.messages, 2048, True, protocols)
            print(
                f"payload {'+'.join(protocols):18s} published {r['published_per_s']:8.0f}/s  "
                f"delivered {r['delivered_per_s']:8.0f}/s"
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
