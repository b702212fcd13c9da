"""Drive a HubConnection in process: feed client bytes, read what the server queued."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from backplane import Hub, HubConnection, HubConnectionHandler, HubOptions
from backplane.protocol import JSON_PROTOCOL, MESSAGEPACK_PROTOCOL, HubMessage

RS = b"\x1e"


class Client:
    """A connection under test with the JSON or MessagePack protocol."""

    def __init__(self, handler: HubConnectionHandler, cid: str, protocol: str = "json", **kw: Any):
        self.handler = handler
        self.protocol = MESSAGEPACK_PROTOCOL if protocol == "messagepack" else JSON_PROTOCOL
        self.conn = HubConnection(handler, cid, transport="WebSockets", **kw)
        self._pending = b""

    async def handshake(self) -> bytes:
        await self.conn.receive(
            orjson.dumps({"protocol": self.protocol.name, "version": 1}) + RS, False
        )
        data = self.conn.outbound.take()
        assert data.startswith(b"{}\x1e"), data
        self._pending = data[3:]
        return data

    async def send(self, message: HubMessage) -> None:
        await self.conn.receive(self.protocol.write_message(message), self.protocol.is_binary)

    async def send_json(self, obj: dict[str, Any]) -> None:
        await self.conn.receive(orjson.dumps(obj) + RS, False)

    def messages(self) -> list[HubMessage]:
        data = self._pending + self.conn.outbound.take()
        self._pending = b""
        msgs, consumed = self.protocol.parse_messages(data)
        assert consumed == len(data)
        return msgs

    async def wait_messages(self, count: int, timeout: float = 2.0) -> list[HubMessage]:
        got: list[HubMessage] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(got) < count and loop.time() < deadline:
            got.extend(self.messages())
            if len(got) < count:
                await asyncio.sleep(0.005)
        return got


def make_handler(hub: type[Hub[Any]], **options: Any) -> HubConnectionHandler:
    return HubConnectionHandler(hub, HubOptions(**options))
