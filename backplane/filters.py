"""Hub filters: code that runs around every hub method call, connect and disconnect.

::

    class Timing(HubFilter):
        async def invoke(self, context, next):
            started = time.perf_counter()
            try:
                return await next(context)
            finally:
                took = (time.perf_counter() - started) * 1e3
                log.info("%s took %.1f ms", context.method_name, took)

Register them for every hub (``create_app(..., filters=[Timing()])``, ``--filter mod:Class``) or
for one (``class ChatHub(Hub): filters = [Timing]``). They run in registration order, the
global ones first: the first registered is the outermost. A filter may change
``context.arguments``, return its own result, or raise ``HubException`` to refuse the call
(the client gets the message as a Completion error).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import HubRegistrationError
from .tasks import maybe_await

if TYPE_CHECKING:
    from .hub import Hub, HubCallerContext


class HubInvocationContext:
    """One hub method call as filters see it."""

    __slots__ = ("hub", "context", "method_name", "arguments", "hub_method")

    def __init__(
        self,
        hub: Hub[Any],
        context: HubCallerContext,
        method_name: str,
        arguments: list[Any],
        hub_method: Callable[..., Any],
    ) -> None:
        self.hub = hub
        self.context = context
        #: The name clients call the method by (its registered name).
        self.method_name = method_name
        #: The arguments, as bound from the client's message; filters may replace them.
        self.arguments = arguments
        #: The Python function that will be called as ``hub_method(hub, *arguments)``.
        self.hub_method = hub_method


class HubLifetimeContext:
    """A connect or disconnect as filters see it."""

    __slots__ = ("hub", "context")

    def __init__(self, hub: Hub[Any], context: HubCallerContext) -> None:
        self.hub = hub
        self.context = context


InvokeNext = Callable[[HubInvocationContext], Awaitable[Any]]
ConnectedNext = Callable[[HubLifetimeContext], Awaitable[None]]
DisconnectedNext = Callable[[HubLifetimeContext, Exception | None], Awaitable[None]]


class HubFilter:
    """Override any of the three hooks; each must call ``next`` to go on (or not, to stop)."""

    async def invoke(self, context: HubInvocationContext, next: InvokeNext) -> Any:
        """Around a hub method call; returns what the client gets as the result."""
        return await next(context)

    async def on_connected(self, context: HubLifetimeContext, next: ConnectedNext) -> None:
        """Around the hub's ``on_connected``."""
        await next(context)

    async def on_disconnected(
        self,
        context: HubLifetimeContext,
        exception: Exception | None,
        next: DisconnectedNext,
    ) -> None:
        """Around the hub's ``on_disconnected``."""
        await next(context, exception)


FilterSpec = HubFilter | type[HubFilter]


def instantiate(filters: Iterable[FilterSpec]) -> list[HubFilter]:
    """Filter instances from instances or classes (classes are built with no arguments)."""
    result: list[HubFilter] = []
    for spec in filters:
        if isinstance(spec, type):
            if not issubclass(spec, HubFilter):
                raise HubRegistrationError(f"{spec!r} is not a HubFilter")
            result.append(spec())
        elif isinstance(spec, HubFilter):
            result.append(spec)
        else:
            raise HubRegistrationError(f"{spec!r} is not a HubFilter")
    return result


async def _call_method(ctx: HubInvocationContext) -> Any:
    return await maybe_await(ctx.hub_method(ctx.hub, *ctx.arguments))


async def _call_connected(ctx: HubLifetimeContext) -> None:
    await maybe_await(ctx.hub.on_connected())


async def _call_disconnected(ctx: HubLifetimeContext, exception: Exception | None) -> None:
    await maybe_await(ctx.hub.on_disconnected(exception))


def _overrides(f: HubFilter, name: str) -> bool:
    return getattr(type(f), name) is not getattr(HubFilter, name)


class FilterPipelines:
    """The three chains of a hub's filters, built once; None where no filter takes part."""

    __slots__ = ("invoke", "connected", "disconnected")

    def __init__(self, filters: Sequence[HubFilter]) -> None:
        call_method: InvokeNext = _call_method
        call_connected: ConnectedNext = _call_connected
        call_disconnected: DisconnectedNext = _call_disconnected
        self.invoke = _chain(filters, "invoke", call_method, _invoke_step)
        self.connected = _chain(filters, "on_connected", call_connected, _connected_step)
        self.disconnected = _chain(
            filters, "on_disconnected", call_disconnected, _disconnected_step
        )


N = TypeVar("N")


def _chain(
    filters: Sequence[HubFilter], hook: str, last: N, step: Callable[[HubFilter, N], N]
) -> N | None:
    """The filters overriding ``hook`` wrapped around ``last``, the first outermost (or None)."""
    taking_part = [f for f in filters if _overrides(f, hook)]
    if not taking_part:
        return None
    chained = last
    for f in reversed(taking_part):
        chained = step(f, chained)
    return chained


def _invoke_step(f: HubFilter, inner: InvokeNext) -> InvokeNext:
    async def step(ctx: HubInvocationContext) -> Any:
        return await f.invoke(ctx, inner)

    return step


def _connected_step(f: HubFilter, inner: ConnectedNext) -> ConnectedNext:
    async def step(ctx: HubLifetimeContext) -> None:
        await f.on_connected(ctx, inner)

    return step


def _disconnected_step(f: HubFilter, inner: DisconnectedNext) -> DisconnectedNext:
    async def step(ctx: HubLifetimeContext, exception: Exception | None) -> None:
        await f.on_disconnected(ctx, exception, inner)

    return step
