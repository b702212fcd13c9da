"""A cluster of in-process nodes on the session's Redis, for the lifetime tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from backplane import Hub, HubConnectionHandler, HubOptions, User
from backplane.protocol import InvocationMessage
from backplane.redis.manager import RedisLifetimeManager
from backplane.redis.node import RedisNode
from tests.hub.helpers import Client

HUB = "Tests.RedisHub"


class RedisHub(Hub):
    wire_name = HUB

    async def ping(self) -> str:
        return "pong"


class Cluster:
    """Nodes in one process sharing a Redis under a private prefix."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        #: What every node gets besides (``RedisNode``'s arguments, e.g. ``pubsub``).
        self.options = options
        self.prefix = f"t{uuid.uuid4().hex[:8]}:"
        self.nodes: list[RedisNode] = []
        self.handlers: list[HubConnectionHandler] = []
        self.clients: list[Client] = []

    async def add_node(self, options: HubOptions | None = None, **kw: Any) -> HubConnectionHandler:
        kw = {**self.options, **kw}
        node = RedisNode(self.url, channel_prefix=self.prefix, heartbeat=0.2, timeout=1.0, **kw)
        manager = node.manager(HUB, ("json", "messagepack"))
        handler = HubConnectionHandler(RedisHub, options or HubOptions(), manager)
        await manager.start()
        self.nodes.append(node)
        self.handlers.append(handler)
        return handler

    async def connect(
        self,
        handler: HubConnectionHandler,
        cid: str,
        protocol: str = "json",
        user: str | None = None,
    ) -> Client:
        client = Client(handler, cid, protocol, user=User(user) if user else None)
        await client.handshake()
        self.clients.append(client)
        return client

    @staticmethod
    def lifetime(handler: HubConnectionHandler) -> RedisLifetimeManager:
        assert isinstance(handler.lifetime, RedisLifetimeManager)
        return handler.lifetime

    async def close(self) -> None:
        for client in self.clients:
            await client.conn.transport_closed()
        for handler in self.handlers:
            await handler.lifetime.stop()


def targets(messages: list[Any]) -> list[tuple[str, list[Any]]]:
    return [(m.target, m.arguments) for m in messages if isinstance(m, InvocationMessage)]


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


async def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` every 20 ms; False when it is still false after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True
