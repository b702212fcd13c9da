"""A quick load driver (picows): echo round trips or broadcast deliveries per second.

    python drive.py echo ws://127.0.0.1:8000/hubs/demo hub 50 5
    python drive.py echo ws://127.0.0.1:8801/ bare 50 5
    python drive.py broadcast ws://127.0.0.1:8000/hubs/demo hub 500 5

Loopback only; every run is bounded by its duration. ``hub`` speaks SignalR JSON to the
demo hub (Echo, SendMessage); ``bare`` sends the same bytes to the bare apps.
"""

import asyncio
import sys
import time
from typing import Any

import uvloop
from picows import WSListener, WSMsgType, ws_connect

SCENARIO, URL, MODE, CONNS, SECONDS = (
    sys.argv[1],
    sys.argv[2],
    sys.argv[3],
    int(sys.argv[4]),
    float(sys.argv[5]),
)
assert URL.startswith(("ws://127.0.0.1", "ws://localhost", "ws://[::1]")), "loopback only"
ECHO = b'{"type":1,"invocationId":"1","target":"Echo","arguments":["hello"]}\x1e'
BROADCAST = b'{"type":1,"target":"SendMessage","arguments":["u","hello world"]}\x1e'
state = {"count": 0, "end": float("inf"), "running": False}


class Client(WSListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.ready = asyncio.get_running_loop().create_future()
        self.handshaken = MODE == "bare"
        self.transport: Any = None

    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport
        if MODE == "bare":
            self.ready.set_result(None)
        else:
            transport.send(WSMsgType.TEXT, b'{"protocol":"json","version":1}\x1e')

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        if not self.handshaken:
            self.handshaken = True
            self.ready.set_result(None)
            return
        data = frame.get_payload_as_bytes()
        if SCENARIO == "echo":
            if MODE == "hub" and b'"type":3' not in data:
                return  # pings, pushes
            state["count"] += 1
            if state["running"] and time.monotonic() < state["end"]:
                transport.send(WSMsgType.TEXT, ECHO)
        elif MODE == "bare":
            state["count"] += 1
        else:
            state["count"] += data.count(b"ReceiveMessage")


async def main() -> None:
    clients = []
    for _ in range(CONNS):
        _, client = await ws_connect(Client, URL)
        clients.append(client)
    await asyncio.gather(*(c.ready for c in clients))
    state["count"] = 0
    start = time.monotonic()
    state["end"] = start + SECONDS
    state["running"] = True
    if SCENARIO == "echo":
        for c in clients:
            c.transport.send(WSMsgType.TEXT, ECHO)
        await asyncio.sleep(SECONDS + 0.2)
        print(f"{MODE} echo: {state['count'] / SECONDS:.0f} round trips/s, {CONNS} connections")
        return
    sender, sent = clients[0], 0
    while time.monotonic() < state["end"]:
        if sent * CONNS - state["count"] < CONNS * 20:  # a bounded number in flight
            sender.transport.send(WSMsgType.TEXT, BROADCAST)
            sent += 1
            if sent % 10 == 0:
                await asyncio.sleep(0)
        else:
            await asyncio.sleep(0.001)
    elapsed = time.monotonic() - start
    print(f"{MODE} broadcast: {state['count'] / elapsed:.0f} deliveries/s to {CONNS} receivers")


uvloop.run(main())
