"""What the once-a-second ticker costs a node with many idle connections.

Handshaken connections of one hub (in process, no sockets) that say nothing; the handler's
``tick`` runs once per simulated second for a minute, as the ticker calls it, and is timed:
the mean per tick and the worst tick (the one that pings everybody). Idle clients that ping
(as the official clients do every 15 s) with ``--pinging``.

    .venv/bin/python load-tests/micro/ticker.py [--connections 10000 50000] [--pinging]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from backplane import Hub  # noqa: E402
from backplane.protocol import PingMessage  # noqa: E402
from tests.hub.helpers import Client, make_handler  # noqa: E402


class Idle(Hub):
    async def ping(self) -> str:
        return "pong"


async def run(n: int, pinging: bool) -> None:
    handler = make_handler(Idle)
    clients = []
    for i in range(n):
        client = Client(handler, f"c{i}")
        await client.handshake()
        clients.append(client)
    start = asyncio.get_running_loop().time()
    handler.tick(start)  # new connections are looked at once, at the first tick
    total = worst = 0.0
    for second in range(1, 61):
        if pinging and second % 15 == 7:
            for client in clients:
                await client.send(PingMessage())
        began = time.perf_counter()
        handler.tick(start + second)
        took = time.perf_counter() - began
        total += took
        worst = max(worst, took)
        if second % 15 == 0:
            for client in clients:
                client.conn.outbound.take()
    print(
        f"{n} idle connections{' (pinging)' if pinging else ''}: "
        f"{total / 60 * 1000:.2f} ms per tick on average, worst tick {worst * 1000:.1f} ms, "
        f"{total / 60 / n * 1e6:.3f} µs per connection per tick"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--pinging", action="store_true")
    args = parser.parse_args()
    for n in args.connections:
        asyncio.run(run(n, args.pinging))


if __name__ == "__main__":
    main()
