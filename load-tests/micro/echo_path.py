"""The in-process cost of one echo call: a JSON frame in, the Completion's bytes at the sink.

Handshaken connections of one hub (no sockets, no uvicorn): each round feeds every connection
one Invocation of ``Echo`` through ``HubConnection.receive``, as the WebSocket transport does
(flushing after the frame where the outbound buffer can), and lets the loop run until every
Completion reached its connection's sink (a counter). µs per call: the best and the median of
five passes. What hubplane adds between the frame and the reply, apart from the WebSocket
framing and the system calls that the bare app pays too.

    .venv/bin/python load-tests/micro/echo_path.py [--connections 50] [--calls 4000]
    PYTHONPATH=/tmp/main .venv/bin/python load-tests/micro/echo_path.py   # another tree's code

(``git archive main backplane server | tar -x -C /tmp/main`` makes such a tree; run the two
alternately, a few times each.)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from pathlib import Path

import orjson
import uvloop

if not any(Path(p, "backplane").is_dir() for p in sys.path if p):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from backplane import Hub, HubConnection, HubConnectionHandler, HubOptions  # noqa: E402

RS = b"\x1e"


class Bench(Hub):
    async def echo(self, payload: str) -> str:
        return payload


async def run(connections: int, calls: int) -> list[float]:
    handler = HubConnectionHandler(Bench, HubOptions())
    delivered = [0]

    def sink(data: bytes) -> None:
        delivered[0] += 1

    clients = []
    for i in range(connections):
        conn = HubConnection(handler, f"c{i}", transport="WebSockets")
        await conn.receive(orjson.dumps({"protocol": "json", "version": 1}) + RS, False)
        conn.outbound.take()
        conn.outbound.sink = sink
        clients.append(conn)
    payload = "@T1234567890@S1@" + "x" * 32
    frames = [
        orjson.dumps({"type": 1, "invocationId": str(k), "target": "Echo", "arguments": [payload]})
        + RS
        for k in range(10)
    ]
    flush = hasattr(clients[0].outbound, "flush")
    rounds = max(1, calls // connections // 5)
    passes = []
    for _ in range(5):
        delivered[0] = 0
        started = time.perf_counter()
        for r in range(rounds):
            frame = frames[r % len(frames)]
            for conn in clients:
                await conn.receive(frame, False)
                if flush:
                    conn.outbound.flush()
            while delivered[0] < (r + 1) * connections:
                await asyncio.sleep(0)
        passes.append((time.perf_counter() - started) / (rounds * connections) * 1e6)
    return passes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--calls", type=int, default=20_000, help="calls per pass, about")
    args = parser.parse_args()
    gc.collect()
    gc.freeze()  # as hubplane serve does once it listens
    passes = uvloop.run(run(args.connections, args.calls))
    import backplane

    where = Path(backplane.__file__).resolve().parents[1]
    best, median = min(passes), statistics.median(passes)
    print(f"{where}: {best:.2f} µs per call (best of 5), median {median:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
