"""Hubs and an authenticator for the end-to-end tests, written only against the public API.

The server runs them in its own process (``--hub /hubs/e2e=tests.e2e.hubs:E2EHub``), so the
tests observe them only through clients: return values, pushes, and the ``Events`` messages
that lifecycle hooks send to the ``watchers`` group.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from backplane import Hub, HubException, User, hub_method

WATCHERS = "watchers"

# Per-process record of finished streams, keyed by connection id (for cancellation checks).
_stream_events: dict[str, list[str]] = {}


async def authenticate(request: Any) -> User | str | None:
    """Test authenticator: ``?user=NAME``, ``X-User: NAME`` or ``Authorization: Bearer NAME``;
    ``?role=R`` adds a role."""
    name = request.query_params.get("user") or request.headers.get("x-user")
    auth = request.headers.get("authorization", "")
    if not name and auth.startswith("Bearer "):
        name = auth[len("Bearer ") :]
    if not name:
        return None
    role = request.query_params.get("role")
    if role:
        return User(name, claims={"name": name}, roles=(role,))
    return name


class E2EHub(Hub):
    """Everything the conformance tests exercise, one small method each."""

    async def on_connected(self) -> None:
        ctx = self.context
        ctx.items["connected"] = True
        for group in filter(None, (ctx.query.get("groups") or "").split(",")):
            await self.groups.add(ctx.connection_id, group)
        if ctx.query.get("watch"):
            await self.groups.add(ctx.connection_id, WATCHERS)
        await self.clients.group(WATCHERS).send(
            "Events", "connected", ctx.connection_id, ctx.user_identifier
        )

    async def on_disconnected(self, exception: Exception | None) -> None:
        await self.clients.group(WATCHERS).send(
            "Events",
            "disconnected",
            self.context.connection_id,
            None if exception is None else type(exception).__name__,
        )

    # --- results -----------------------------------------------------------------
    async def add(self, a: int, b: int) -> int:
        return a + b

    async def echo(self, value: Any) -> Any:
        return value

    def echo_sync(self, value: Any) -> Any:
        """A plain (non-async) method."""
        return value

    async def nothing(self) -> None:
        """Void: the Completion carries no result."""
        self.context.items["nothing_called"] = True

    async def maybe(self) -> str | None:
        """Returns a value that happens to be None (null on the wire)."""
        return None

    async def sync(self) -> bool:
        """A no-op round trip; its Completion orders after earlier pushes to the caller."""
        return True

    @hub_method("Whoami")
    async def who(self) -> str | None:
        return self.context.user_identifier

    async def get_connection_id(self) -> str:
        return self.context.connection_id

    async def get_context(self) -> dict[str, Any]:
        ctx = self.context
        user = ctx.user
        return {
            "connectionId": ctx.connection_id,
            "userIdentifier": ctx.user_identifier,
            "userId": None if user is None else user.id,
            "roles": [] if user is None else sorted(user.roles),
            "transport": ctx.transport,
            "protocol": ctx.protocol,
            "queryTag": ctx.query.get("tag"),
            "headerTag": ctx.headers.get("x-tag"),
            "connectedFlag": ctx.items.get("connected", False),
        }

    async def set_item(self, key: str, value: Any) -> None:
        self.context.items[key] = value

    async def get_item(self, key: str) -> Any:
        return self.context.items.get(key)

    # --- errors ------------------------------------------------------------------
    async def fail_hub(self, message: str) -> int:
        raise HubException(message)

    async def fail_other(self) -> int:
        raise ValueError("internal detail that must not reach clients")

    async def fire(self, value: Any) -> None:
        """Called with send(): stores the value and tells the caller about it."""
        self.context.items["fired"] = value
        await self.clients.caller.send("Fired", value)

    async def fire_and_fail(self) -> None:
        raise HubException("nobody must hear about this")

    # --- pushes through every proxy ----------------------------------------------
    async def push_caller(self, method: str, payload: Any) -> None:
        await self.clients.caller.send(method, payload)

    async def send_all(self, payload: Any) -> None:
        await self.clients.all.send("Receive", "all", payload)

    async def send_caller(self, payload: Any) -> None:
        await self.clients.caller.send("Receive", "caller", payload)

    async def send_others(self, payload: Any) -> None:
        await self.clients.others.send("Receive", "others", payload)

    async def send_client(self, connection_id: str, payload: Any) -> None:
        await self.clients.client(connection_id).send("Receive", "client", payload)

    async def send_clients(self, connection_ids: list[str], payload: Any) -> None:
        await self.clients.clients(connection_ids).send("Receive", "clients", payload)

    async def send_all_except(self, connection_ids: list[str], payload: Any) -> None:
        await self.clients.all_except(connection_ids).send("Receive", "all_except", payload)

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

    async def push_many(self, count: int) -> None:
        """``count`` pushes to the caller, in order."""
        for i in range(count):
            await self.clients.caller.send("Seq", i)

    # --- groups ------------------------------------------------------------------
    async def join(self, group: str) -> None:
        await self.groups.add(self.context.connection_id, group)

    async def leave(self, group: str) -> None:
        await self.groups.remove(self.context.connection_id, group)

    async def add_to_group(self, connection_id: str, group: str) -> None:
        await self.groups.add(connection_id, group)

    # --- streams -----------------------------------------------------------------
    async def counter(self, n: int, delay: float = 0.0) -> AsyncIterator[int]:
        for i in range(n):
            if delay:
                await asyncio.sleep(delay)
            yield i

    async def endless(self, delay: float) -> AsyncIterator[int]:
        """Yields until cancelled; records how it ended for ``StreamEvents``."""
        cid = self.context.connection_id
        events = _stream_events.setdefault(cid, [])
        events.append("started")
        i = 0
        try:
            while True:
                yield i
                i += 1
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        except GeneratorExit:
            events.append("closed")
            raise
        finally:
            events.append("finally")

    async def stream_events(self) -> list[str]:
        return list(_stream_events.get(self.context.connection_id, []))

    async def upload_sum(self, numbers: AsyncIterator[int]) -> int:
        """A client-to-server stream: the sum of the items the client uploads."""
        total = 0
        async for n in numbers:
            total += n
        return total

    async def failing_stream(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i
        raise HubException("stream broke")

    # --- connection control ------------------------------------------------------
    async def abort_me(self) -> None:
        self.context.abort()

    async def abort_me_allow_reconnect(self) -> None:
        self.context.abort(allow_reconnect=True)


class RejectingHub(Hub):
    """on_connected refuses every client with a HubException."""

    async def on_connected(self) -> None:
        raise HubException("you shall not pass")

    async def add(self, a: int, b: int) -> int:
        return a + b


class CrashingConnectHub(Hub):
    """on_connected fails with an ordinary exception (detail must stay hidden)."""

    async def on_connected(self) -> None:
        raise RuntimeError("secret connect failure detail")

    async def add(self, a: int, b: int) -> int:
        return a + b
