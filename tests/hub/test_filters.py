"""Hub filters around invocations, streams, connects and disconnects, in registration order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from backplane import (
    Hub,
    HubConnectionHandler,
    HubException,
    HubFilter,
    HubInvocationContext,
    HubLifetimeContext,
    HubOptions,
)
from backplane.filters import ConnectedNext, DisconnectedNext, InvokeNext
from backplane.protocol import (
    CompletionMessage,
    InvocationMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)

from .helpers import Client

log: list[str] = []


class Named(HubFilter):
    """Records the order it runs in, around every hook."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def invoke(self, context: HubInvocationContext, next: InvokeNext) -> Any:
        log.append(f"{self.name}>{context.method_name}")
        try:
            return await next(context)
        finally:
            log.append(f"{self.name}<")

    async def on_connected(self, context: HubLifetimeContext, next: ConnectedNext) -> None:
        log.append(f"{self.name}:connected")
        await next(context)

    async def on_disconnected(
        self, context: HubLifetimeContext, exception: Exception | None, next: DisconnectedNext
    ) -> None:
        log.append(f"{self.name}:disconnected:{type(exception).__name__}")
        await next(context, exception)


class HubOnly(Named):
    def __init__(self) -> None:
        super().__init__("hub")


class NoNegatives(HubFilter):
    """Argument validation: refuses negative numbers with a clear message."""

    async def invoke(self, context: HubInvocationContext, next: InvokeNext) -> Any:
        if any(isinstance(a, int) and a < 0 for a in context.arguments):
            raise HubException(f"{context.method_name}: arguments must not be negative")
        return await next(context)


class Doubler(HubFilter):
    """Changes the arguments before the method sees them."""

    async def invoke(self, context: HubInvocationContext, next: InvokeNext) -> Any:
        if context.method_name == "add":
            context.arguments = [a * 2 for a in context.arguments]
        return await next(context)


class RateLimit(HubFilter):
    """At most three calls per connection."""

    async def invoke(self, context: HubInvocationContext, next: InvokeNext) -> Any:
        calls = context.context.items.get("calls", 0) + 1
        context.context.items["calls"] = calls
        if calls > 3:
            raise HubException("Rate limit exceeded")
        return await next(context)


class FilteredHub(Hub):
    filters = [HubOnly]

    async def on_connected(self) -> None:
        log.append("hub:on_connected")

    async def on_disconnected(self, exception: Exception | None) -> None:
        log.append("hub:on_disconnected")

    async def add(self, a: int, b: int) -> int:
        log.append("add")
        return a + b

    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i


def handler(*filters: Any, hub: type[Hub[Any]] = FilteredHub) -> HubConnectionHandler:
    return HubConnectionHandler(hub, HubOptions(), filters=filters)


async def test_filters_run_in_registration_order_global_first() -> None:
    log.clear()
    client = Client(handler(Named("g1"), Named("g2")), "c1")
    await client.handshake()
    assert log == ["g1:connected", "g2:connected", "hub:connected", "hub:on_connected"]
    log.clear()
    await client.send(InvocationMessage("Add", [1, 2], invocation_id="1"))
    (reply,) = await client.wait_messages(1)
    assert isinstance(reply, CompletionMessage) and reply.result == 3
    assert log == ["g1>add", "g2>add", "hub>add", "add", "hub<", "g2<", "g1<"]
    log.clear()
    await client.conn.transport_closed(ConnectionResetError())
    assert log == [
        "g1:disconnected:ConnectionResetError",
        "g2:disconnected:ConnectionResetError",
        "hub:disconnected:ConnectionResetError",
        "hub:on_disconnected",
    ]


async def test_streams_pass_through_filters() -> None:
    log.clear()
    client = Client(handler(Named("g")), "c1", "messagepack")
    await client.handshake()
    log.clear()
    await client.send(StreamInvocationMessage("s1", "Count", [3]))
    got = await client.wait_messages(4)
    assert [m.item for m in got if isinstance(m, StreamItemMessage)] == [0, 1, 2]
    assert isinstance(got[-1], CompletionMessage) and got[-1].error is None
    assert log[:2] == ["g>count", "hub>count"]


async def test_validation_and_argument_changes() -> None:
    client = Client(handler(NoNegatives(), Doubler), "c1")
    await client.handshake()
    await client.send(InvocationMessage("Add", [-1, 2], invocation_id="1"))
    await client.send(InvocationMessage("Add", [1, 2], invocation_id="2"))
    first, second = await client.wait_messages(2)
    assert isinstance(first, CompletionMessage)
    assert first.error == (
        "An unexpected error occurred invoking 'Add' on the server. "
        "HubException: add: arguments must not be negative"
    )
    assert isinstance(second, CompletionMessage) and second.result == 6


async def test_a_per_connection_rate_limit() -> None:
    h = handler(RateLimit)
    a, b = Client(h, "a"), Client(h, "b")
    await a.handshake()
    await b.handshake()
    for i in range(5):
        await a.send(InvocationMessage("Add", [i, 0], invocation_id=str(i)))
    await b.send(InvocationMessage("Add", [1, 1], invocation_id="b"))
    replies = await a.wait_messages(5)
    limited = "An unexpected error occurred invoking 'Add' on the server. HubException: Rate limit exceeded"
    assert [m.error for m in replies if isinstance(m, CompletionMessage)] == [
        None,
        None,
        None,
        limited,
        limited,
    ]
    (other,) = await b.wait_messages(1)
    assert isinstance(other, CompletionMessage) and other.result == 2


async def test_no_filters_means_no_pipeline() -> None:
    class Plain(Hub):
        async def add(self, a: int, b: int) -> int:
            return a + b

    h = handler(hub=Plain)
    assert h.pipelines.invoke is None and h.pipelines.connected is None
