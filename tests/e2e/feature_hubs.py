"""Hubs for the hub-feature e2e tests: typed clients, @authorize, filters (public API only)."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from backplane import (
    Hub,
    HubException,
    HubFilter,
    HubInvocationContext,
    authorize,
)
from backplane.filters import InvokeNext


class AuditFilter(HubFilter):
    """Global filter (``--filter``): records the order filters ran in, per call."""

    async def invoke(self, context: HubInvocationContext, next: InvokeNext) -> Any:
        context.context.items.setdefault("trail", []).append("global")
        return await next(context)


class HubAudit(HubFilter):
    """The hub's own filter: runs after the global one; refuses negative numbers."""

    async def invoke(self, context: HubInvocationContext, next: InvokeNext) -> Any:
        context.context.items.setdefault("trail", []).append("hub")
        if any(isinstance(a, int) and a < 0 for a in context.arguments):
            raise HubException("negative numbers are not allowed")
        return await next(context)


class ChatClient(Protocol):
    async def receive_message(self, user: str, text: str) -> None: ...

    async def get_count(self) -> int: ...


class TypedHub(Hub[ChatClient]):
    filters = [HubAudit]

    async def send_message(self, text: str) -> None:
        await self.clients.all.receive_message(self.context.user_identifier or "?", text)

    async def ask_count(self) -> int:
        return await self.clients.caller.get_count() + 1

    async def ask_nothing(self) -> list[Any]:
        # The client's handler returns nothing: the JS client answers with an error.
        return [await self.clients.caller.invoke("Nothing")]

    async def trail(self, n: int) -> list[str]:
        trail: list[str] = self.context.items.get("trail", [])
        return list(trail)


@authorize
class SecureHub(Hub):
    async def whoami(self) -> dict[str, Any]:
        user = self.context.user
        assert user is not None
        return {"id": user.id, "roles": sorted(user.roles), "name": user.claims.get("name")}

    @authorize(roles=["admin"])
    async def admin_only(self) -> str:
        return "welcome, admin"


@authorize(roles=["staff"])
class StaffHub(Hub):
    async def ping(self) -> str:
        return "pong"


class PulseHub(Hub):
    """For stateful reconnect: pushes numbered messages to the caller over time."""

    async def pulse(self, count: int, interval: float) -> int:
        for i in range(count):
            await self.clients.caller.send("Pulse", i)
            await asyncio.sleep(interval)
        return count

    async def echo(self, value: Any) -> Any:
        return value

    async def whoami(self) -> str:
        return self.context.connection_id
