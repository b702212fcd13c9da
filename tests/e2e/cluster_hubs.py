"""The hub of the multi-node tests, written only against the public API.

Every node of a test cluster serves ``ClusterHub`` at ``/hubs/cluster``; its name on the
backplane is ``tests.e2e.cluster_hubs.ClusterHub`` (module and qualified name), which is also
what an ``Emitter`` in the test process names. Pushes to clients all use the client method
``Receive(kind, payload)`` (``kind`` names the proxy that was used) except ``Tick(seq)``, the
steady traffic of the fault tests.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from backplane import Hub

#: The path every node of a test cluster serves the hub at.
HUB_PATH = "/hubs/cluster"
#: The hub's name on the backplane (module + qualified name, no ``wire_name`` set).
WIRE_NAME = "tests.e2e.cluster_hubs.ClusterHub"


async def authenticate(request: Any) -> str | None:
    """Test authenticator: the user is ``?user=NAME`` (anonymous without it)."""
    return request.query_params.get("user") or None


class ClusterHub(Hub):
    """One small method per proxy, group operation and presence question."""

    async def on_connected(self) -> None:
        ctx = self.context
        for group in filter(None, (ctx.query.get("groups") or "").split(",")):
            await self.groups.add(ctx.connection_id, group)

    # --- identity ----------------------------------------------------------------
    async def whoami(self) -> dict[str, Any]:
        """The caller's connection id and user, and the process serving it."""
        return {
            "connectionId": self.context.connection_id,
            "user": self.context.user_identifier,
            "pid": os.getpid(),
        }

    async def echo(self, value: Any) -> Any:
        return value

    async def quit(self) -> None:
        """The server ends the caller's connection (a Close, no reconnect)."""
        self.context.abort()

    # --- groups ------------------------------------------------------------------
    async def join(self, group: str) -> None:
        await self.groups.add(self.context.connection_id, group)

    async def leave(self, group: str) -> None:
        await self.groups.remove(self.context.connection_id, group)

    async def add_to_group(self, connection_id: str, group: str) -> None:
        """Add any connection, wherever it is connected (errors reach the caller)."""
        await self.groups.add(connection_id, group)

    async def remove_from_group(self, connection_id: str, group: str) -> None:
        await self.groups.remove(connection_id, group)

    async def try_add_to_group(self, connection_id: str, group: str) -> dict[str, Any]:
        """Like ``add_to_group`` but reports the outcome and the time it took on the server."""
        started = time.monotonic()
        try:
            await self.groups.add(connection_id, group)
        except Exception as exc:  # noqa: BLE001 - the test wants to see any failure
            return {"error": type(exc).__name__, "seconds": time.monotonic() - started}
        return {"error": None, "seconds": time.monotonic() - started}

    # --- pushes through every proxy ----------------------------------------------
    async def ask_client(self, connection_id: str, method: str, args: list[Any]) -> Any:
        """A client result from any connection, wherever it is connected."""
        return await self.clients.client(connection_id).invoke(method, *args, timeout=10.0)

    async def send_all(self, payload: Any) -> None:
        await self.clients.all.send("Receive", "all", payload)

    async def send_others(self, payload: Any) -> None:
        await self.clients.others.send("Receive", "others", payload)

    async def send_all_except(self, connection_ids: list[str], payload: Any) -> None:
        await self.clients.all_except(connection_ids).send("Receive", "all_except", payload)

    async def send_client(self, connection_id: str, payload: Any) -> None:
        await self.clients.client(connection_id).send("Receive", "client", payload)

    async def send_clients(self, connection_ids: list[str], payload: Any) -> None:
        await self.clients.clients(connection_ids).send("Receive", "clients", payload)

    async def send_group(self, group: str, payload: Any) -> None:
        await self.clients.group(group).send("Receive", "group", payload)

    async def send_groups(self, groups: list[str], payload: Any) -> None:
        await self.clients.groups(groups).send("Receive", "groups", payload)

    async def send_group_except(self, group: str, connection_ids: list[str], payload: Any) -> None:
        await self.clients.group_except(group, connection_ids).send(
            "Receive", "group_except", payload
        )

    async def send_others_in_group(self, group: str, payload: Any) -> None:
        await self.clients.others_in_group(group).send("Receive", "others_in_group", payload)

    async def send_user(self, user_id: str, payload: Any) -> None:
        await self.clients.user(user_id).send("Receive", "user", payload)

    async def send_users(self, user_ids: list[str], payload: Any) -> None:
        await self.clients.users(user_ids).send("Receive", "users", payload)

    async def barrier(self, token: str) -> None:
        """A broadcast published after the caller's earlier sends from this same node.

        A client that has seen the barrier has seen whatever this node published before it,
        which lets a test check that a message did *not* arrive without sleeping.
        """
        await self.clients.all.send("Receive", "barrier", token)

    async def tick(self, group: str, seq: int) -> None:
        """The fault tests' steady traffic: one numbered message to a group."""
        await self.clients.group(group).send("Tick", seq)

    async def record(self, group: str, client: str, seq: int) -> None:
        """The drain test's traffic: tell the observers in ``group`` that ``seq`` ran."""
        await self.clients.group(group).send("Events", client, seq, os.getpid())

    async def slow(self, seconds: float) -> int:
        """Answer after ``seconds`` (an invocation still running when a node drains); the
        caller first gets ``Receive("slow", seconds)``: the invocation is running."""
        await self.clients.caller.send("Receive", "slow", seconds)
        await asyncio.sleep(seconds)
        return os.getpid()

    # --- presence ----------------------------------------------------------------
    async def presence_connections(self) -> list[str]:
        return sorted(await self.presence.connections())

    async def presence_group_members(self, group: str) -> list[str]:
        return sorted(await self.presence.group_members(group))

    async def presence_user_connections(self, user: str) -> list[str]:
        return sorted(await self.presence.user_connections(user))

    async def presence_is_user_online(self, user: str) -> bool:
        return await self.presence.is_user_online(user)

    async def presence_groups_of(self, connection_id: str) -> list[str]:
        return sorted(await self.presence.groups_of(connection_id))

    async def presence_count(self) -> int:
        return await self.presence.count_connections()

    async def presence_nodes(self) -> list[dict[str, Any]]:
        return await self.presence.nodes()

    async def presence_snapshot(self, groups: list[str], users: list[str]) -> dict[str, Any]:
        """Several presence answers in one round trip (the tests poll it)."""
        presence = self.presence
        return {
            "connections": sorted(await presence.connections()),
            "count": await presence.count_connections(),
            "groups": {g: sorted(await presence.group_members(g)) for g in groups},
            "users": {u: sorted(await presence.user_connections(u)) for u in users},
            "online": {u: await presence.is_user_online(u) for u in users},
            "nodes": sorted(n["id"] for n in await presence.nodes()),
        }
