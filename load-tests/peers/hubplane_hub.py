"""The benchmark hub for hubplane (served by ``hubplane serve --hub /hubs/bench=...``)."""

from backplane import Hub


class BenchHub(Hub):
    """Echo, broadcast, groups, and sends to a connection or a user."""

    wire_name = "Bench.Hub"

    async def echo(self, payload: str) -> str:
        """Return the payload to the caller (a Completion)."""
        return payload

    async def broadcast(self, payload: str) -> None:
        """Send the payload to every connection."""
        await self.clients.all.send("Msg", payload)

    async def join_group(self, group: str) -> None:
        """Add the caller to a group."""
        await self.groups.add(self.context.connection_id, group)

    async def send_group(self, group: str, payload: str) -> None:
        """Send the payload to a group's members."""
        await self.clients.group(group).send("Msg", payload)
