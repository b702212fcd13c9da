"""The in-process cost of one echo call through the whole server stack, bare app and hubplane.

uvicorn's websockets-sansio protocol objects with a fake transport (no sockets, no system
calls, no epoll): each round hands every connection one masked client frame through
``data_received``, as the event loop does when a socket is readable, and lets the loop run
until every connection's reply reached its transport's ``write``. The bare app is
load-tests/peers/bare_app.py (``/echo``); hubplane is the app ``hubplane serve`` builds for
load-tests/peers/hubplane_hub.py, JSON, ``Echo``. µs per call: best and median of five
passes. Next to ``ab.py`` (system calls, scheduling and the neighbours included) and
``echo_path.py`` (hubplane's part alone).

    .venv/bin/python load-tests/micro/echo_stack.py hub|bare [--connections 50] [--calls 20000]
    PYTHONPATH=/tmp/main .venv/bin/python load-tests/micro/echo_stack.py hub   # another tree
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import uvicorn
import uvloop
from uvicorn.lifespan.on import LifespanOn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "peers"))
if not any(Path(p, "backplane").is_dir() for p in sys.path if p):
    sys.path.insert(0, str(HERE.parents[1]))

RS = b"\x1e"
UPGRADE = (
    b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class FakeTransport:
    """What the protocol needs of a transport; counts the writes."""

    def __init__(self, written: list[int]) -> None:
        self.written = written
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written[0] += 1

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def get_write_buffer_size(self) -> int:
        return 0


def _masked(text: bytes) -> bytes:
    return Frame(Opcode.TEXT, text).serialize(mask=True, extensions=[])


def _config(kind: str) -> tuple[uvicorn.Config, bytes]:
    if kind == "bare":
        config = uvicorn.Config(
            "bare_app:app",
            ws="websockets-sansio",
            ws_ping_interval=0,
            ws_per_message_deflate=False,
            log_level="warning",
        )
        config.load()
        return config, b"/echo"
    from server.cli import _uvicorn_options, build_app
    from server.runner import HubplaneConfig
    from server.settings import add_arguments, build_settings

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--hub", "/hubs/bench=hubplane_hub:BenchHub", "--authenticator"]
        + ["hubplane_hub:authenticate", "--log-level", "warning"]
    )
    settings = build_settings(args)
    config = HubplaneConfig(build_app(settings), **_uvicorn_options(settings))
    config.load()
    return config, b"/hubs/bench"


async def _settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def run(kind: str, connections: int, calls: int) -> None:
    config, path = _config(kind)
    lifespan = LifespanOn(config)  # kept: its task holds the app's lifespan open
    await lifespan.startup()
    state = ServerState()
    loop = asyncio.get_running_loop()
    written = [0]
    protocols = []
    for _ in range(connections):
        protocol = WebSocketsSansIOProtocol(config, state, {}, _loop=loop)
        protocol.connection_made(FakeTransport(written))  # type: ignore[arg-type]
        protocol.data_received(UPGRADE % path)
        protocols.append(protocol)
    await _settle()
    payload = "@T1234567890@S1@" + "x" * 32
    if kind == "bare":
        frames = [_masked(payload.encode())] * 10
    else:
        handshake = _masked(orjson.dumps({"protocol": "json", "version": 1}) + RS)
        for protocol in protocols:
            protocol.data_received(handshake)
        await _settle()
        frames = [
            _masked(
                orjson.dumps(
                    {"type": 1, "invocationId": str(k), "target": "Echo", "arguments": [payload]}
                )
                + RS
            )
            for k in range(10)
        ]
    gc.collect()
    gc.freeze()  # as hubplane serve does once it listens
    rounds = max(1, calls // connections)
    passes = []
    for n in range(6):
        written[0] = 0
        started = time.perf_counter()
        for r in range(rounds):
            frame = frames[r % len(frames)]
            for protocol in protocols:
                protocol.data_received(frame)
            target = (r + 1) * connections
            while written[0] < target:
                await asyncio.sleep(0)
        if n:  # the first pass warms up
            passes.append((time.perf_counter() - started) / (rounds * connections) * 1e6)
    where = ""
    if kind == "hub":
        import backplane

        where = f" ({Path(backplane.__file__).resolve().parents[1]})"
    best, median = min(passes), statistics.median(passes)
    print(f"{kind}{where}: {best:.2f} µs per call (best of 5), median {median:.2f}")
    sys.stdout.flush()
    os._exit(0)  # the connections' tasks are left as they are: no teardown to measure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("hub", "bare"))
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--calls", type=int, default=20_000, help="calls per pass, about")
    args = parser.parse_args()
    uvloop.run(run(args.kind, args.connections, args.calls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
