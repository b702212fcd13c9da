"""The in-memory lifetime manager: membership, every proxy, serialize-once."""

from __future__ import annotations

from typing import Any

import pytest

from backplane import Hub, HubContext, User
from backplane.protocol import JSON_PROTOCOL, InvocationMessage

from ..hub.helpers import Client, make_handler


class Plain(Hub):
    pass


async def setup() -> tuple[Any, dict[str, Client]]:
    handler = make_handler(Plain)
    clients = {}
    for cid, user, proto in (
        ("a", "alice", "json"),
        ("b", "alice", "messagepack"),
        ("c", "bob", "json"),
        ("d", None, "messagepack"),
    ):
        client = Client(handler, cid, proto, user=User(user) if user else None)
        await client.handshake()
        clients[cid] = client
    return handler, clients


def received(clients: dict[str, Client]) -> dict[str, list[Any]]:
    out = {}
    for cid, client in clients.items():
        out[cid] = [m.arguments for m in client.messages()]  # type: ignore[attr-defined]
    return out


async def test_every_proxy_reaches_exactly_its_targets() -> None:
    handler, clients = await setup()
    ctx: HubContext = handler.context
    groups = ctx.groups
    await groups.add("a", "g1")
    await groups.add("c", "g1")
    await groups.add("d", "g2")
    await groups.add("nobody", "g1")  # unknown connections are ignored
    cases: list[tuple[Any, dict[str, bool]]] = [
        (ctx.clients.all, {"a": True, "b": True, "c": True, "d": True}),
        (ctx.clients.all_except(["a", "d"]), {"b": True, "c": True}),
        (ctx.clients.client("c"), {"c": True}),
        (ctx.clients.clients(["a", "d", "zzz"]), {"a": True, "d": True}),
        (ctx.clients.group("g1"), {"a": True, "c": True}),
        (ctx.clients.groups(["g1", "g2"]), {"a": True, "c": True, "d": True}),
        (ctx.clients.group_except("g1", ["a"]), {"c": True}),
        (ctx.clients.user("alice"), {"a": True, "b": True}),
        (ctx.clients.users(["bob", "alice"]), {"a": True, "b": True, "c": True}),
        (ctx.clients.group("empty"), {}),
    ]
    for index, (proxy, expected) in enumerate(cases):
        await proxy.send("M", index)
        got = received(clients)
        assert {cid for cid, msgs in got.items() if msgs} == set(expected), index
        for cid in expected:
            assert got[cid] == [[index]], (index, cid)


async def test_caller_proxies() -> None:
    handler, clients = await setup()
    await handler.context.groups.add("a", "room")
    await handler.context.groups.add("b", "room")
    caller = clients["a"].conn.caller_clients
    await caller.caller.send("M", 1)
    await caller.others.send("M", 2)
    await caller.others_in_group("room").send("M", 3)
    got = received(clients)
    assert got == {"a": [[1]], "b": [[2], [3]], "c": [[2]], "d": [[2]]}


async def test_group_remove_and_disconnect_cleanup() -> None:
    handler, clients = await setup()
    lifetime = handler.lifetime
    await handler.context.groups.add("a", "g")
    await handler.context.groups.add("b", "g")
    await handler.context.groups.remove("a", "g")
    await handler.context.clients.group("g").send("M", 1)
    assert received(clients)["a"] == []
    await clients["b"].conn.transport_closed()
    assert "g" not in lifetime.groups
    assert set(lifetime.users["alice"]) == {"a"}
    await clients["a"].conn.transport_closed()
    assert "alice" not in lifetime.users
    await handler.context.clients.user("alice").send("M", 2)
    assert received(clients)["a"] == []


async def test_serialized_once_per_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    handler, clients = await setup()
    from backplane.protocol import MESSAGEPACK_PROTOCOL

    calls: list[str] = []
    for proto in (JSON_PROTOCOL, MESSAGEPACK_PROTOCOL):
        original = type(proto).write_message

        def counting(self: Any, message: Any, _orig: Any = original) -> bytes:
            calls.append(self.name)
            return bytes(_orig(self, message))

        monkeypatch.setattr(type(proto), "write_message", counting)
    await handler.context.clients.all.send("M", "x")
    assert sorted(calls) == ["json", "messagepack"]
    got = received(clients)
    assert all(msgs == [["x"]] for msgs in got.values())
    assert clients["a"].protocol.write_message(InvocationMessage("M", ["x"]))


async def test_abort_from_context() -> None:
    handler, clients = await setup()
    await handler.context.abort("c")
    assert clients["c"].conn.closing
    assert not clients["a"].conn.closing
