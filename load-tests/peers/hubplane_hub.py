"""The benchmark hub for hubplane (served by ``hubplane serve --hub /hubs/bench=...``).

``authenticate`` (``--authenticator hubplane_hub:authenticate``) takes the ``user`` query
parameter as the user id, so the send-to-user scenario needs no token machinery.
"""

from typing import Any

from backplane import Hub


def authenticate(request: Any) -> str | None:
    """The benchmark's users: ``?user=<id>`` on negotiate and the upgrade (else anonymous)."""
    return request.query_params.get("user") or None


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

    async def send_connection(self, connection_id: str, payload: str) -> None:
        """Send the payload to one connection, wherever it is connected."""
        await self.clients.client(connection_id).send("Msg", payload)

    async def send_user(self, user: str, payload: str) -> None:
        """Send the payload to every connection of a user, on every node."""
        await self.clients.user(user).send("Msg", payload)
