"""The built-in demo hub served when no ``--hub`` is given."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from backplane import Hub, HubException


class DemoHub(Hub):
    """A small chat hub: broadcast, echo, groups and a counter stream."""

    async def on_connected(self) -> None:
        await self.clients.others.send("Joined", self.context.connection_id)

    async def send_message(self, user: str, text: str) -> None:
        """Broadcast a chat line to everyone."""
        await self.clients.all.send("ReceiveMessage", user, text)

    async def echo(self, value: object) -> object:
        """Return the argument."""
        return value

    async def join(self, room: str) -> None:
        """Join a room (a group)."""
        await self.groups.add(self.context.connection_id, room)

    async def send_to_room(self, room: str, text: str) -> None:
        """Send a line to a room."""
        await self.clients.group(room).send("ReceiveMessage", room, text)

    async def counter(self, count: int, delay: float = 0.1) -> AsyncIterator[int]:
        """Stream the numbers 0 .. count-1."""
        if count > 10_000:
            raise HubException("count must be at most 10000")
        for i in range(count):
            yield i
            await asyncio.sleep(delay)
