"""The built-in demo hub served when no ``--hub`` is given (its page is ``static/demo.*``).

A chat with names, rooms and who is online, answered from the hub's presence, so on a cluster
it covers every node. A connection's name is kept as a group of its own (``~name:ann``), which
presence reads back for any connection on any node, as it tells the node a connection is on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from backplane import Hub, HubException

#: Rooms every page lists, with their member counts.
DEFAULT_ROOMS = ("lobby", "random", "dev")
NAME_TAG = "~name:"
MAX_NAME = 40
# Who is online lists at most this many members of a room.
MAX_MEMBERS = 100


def _clean(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise HubException(f"{what} must be a non-empty string")
    text = " ".join(value.split())
    if len(text) > MAX_NAME or text.startswith("~"):
        raise HubException(f"{what} must be at most {MAX_NAME} characters, not starting with ~")
    return text


class DemoHub(Hub):
    """A small chat hub: names, rooms, who is online, echo and a counter stream."""

    async def on_connected(self) -> None:
        await self.clients.others.send("Joined", self.context.connection_id)

    async def on_disconnected(self, exception: Exception | None) -> None:
        room = self.context.items.get("room")
        if isinstance(room, str):
            me = self.context.connection_id
            await self._announce(room, leaving=me)

    # -- the page's calls ---------------------------------------------------------------------

    async def enter(self, name: str, room: str) -> dict[str, Any]:
        """Take a name and move into a room; returns who is there and where this side runs."""
        name, room = _clean(name, "name"), _clean(room, "room")
        me = self.context.connection_id
        items = self.context.items
        groups = self.groups
        old_name, old_room = items.get("name"), items.get("room")
        if old_name != name:
            if isinstance(old_name, str):
                await groups.remove(me, NAME_TAG + old_name)
            await groups.add(me, NAME_TAG + name)
        items["name"], items["room"] = name, room
        if old_room != room:
            if isinstance(old_room, str):
                await groups.remove(me, old_room)
            await groups.add(me, room)
        if isinstance(old_room, str) and old_room != room:
            await self._announce(old_room)
        members = await self._announce(room)
        return {
            "connectionId": me,
            "node": self.presence.node_id,
            "transport": self.context.transport,
            "name": name,
            "room": room,
            "members": members,
            "rooms": await self.rooms(),
        }

    async def say(self, text: str) -> None:
        """Send a line to the caller's room."""
        if not isinstance(text, str) or not text.strip():
            return
        items = self.context.items
        room = items.get("room")
        if not isinstance(room, str):
            raise HubException("enter a room first")
        line = {
            "name": items.get("name"),
            "room": room,
            "text": text[:2000],
            "node": self.presence.node_id,
            "connectionId": self.context.connection_id,
        }
        await self.clients.group(room).send("Said", line)

    async def rooms(self) -> list[dict[str, Any]]:
        """The default rooms and the caller's, with their member counts (whole cluster)."""
        names = list(DEFAULT_ROOMS)
        room = self.context.items.get("room")
        if isinstance(room, str) and room not in names:
            names.append(room)
        return [{"room": n, "members": await self._count(n)} for n in names]

    # -- the first demo's calls, kept for scripts and the smoke scenario ----------------------

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

    # -- presence -----------------------------------------------------------------------------

    async def _count(self, room: str, leaving: str | None = None) -> int:
        ids = await self.presence.group_members(room)
        return len([i for i in ids if i != leaving])

    async def _members(self, room: str, leaving: str | None) -> tuple[int, list[dict[str, Any]]]:
        """How many are in a room, on any node, and the id, name and node of each (at most
        MAX_MEMBERS of them)."""
        presence = self.presence
        ids = sorted(i for i in await presence.group_members(room) if i != leaving)
        shown = ids[:MAX_MEMBERS]
        tags = await asyncio.gather(*(presence.groups_of(i) for i in shown))
        nodes = await asyncio.gather(*(presence.owner_of(i) for i in shown))
        found = []
        for connection_id, groups, node in zip(shown, tags, nodes, strict=True):
            name = next((g[len(NAME_TAG) :] for g in groups if g.startswith(NAME_TAG)), None)
            found.append({"connectionId": connection_id, "name": name, "node": node})
        return len(ids), found

    async def _announce(self, room: str, leaving: str | None = None) -> list[dict[str, Any]]:
        """Tell the room who is in it now, and everyone the room's new size."""
        count, members = await self._members(room, leaving)
        await self.clients.group(room).send("Members", room, members)
        await self.clients.all.send("RoomSize", room, count)
        return members
