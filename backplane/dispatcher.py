"""Running hub methods for a hub's connections: binding, authorization, filters, invocation,
completions, and streams in both directions.

One dispatcher serves every connection of a hub (like ASP.NET Core's ``DefaultHubDispatcher``);
what belongs to one connection (its streams, its replay) stays on the connection.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Generator
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from . import dispatch
from .authorization import allowed, unauthorized_error
from .binding import arguments_fit
from .dispatch import HubMethod
from .errors import HubException, LimitExceededError
from .filters import HubInvocationContext, HubLifetimeContext
from .hub import Hub, ServedConnection
from .protocol import (
    CompletionMessage,
    InvocationMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)

if TYPE_CHECKING:
    from .dispatch import HubDescriptor
    from .filters import FilterPipelines
    from .options import HubOptions, HubStats
    from .outbound import OutboundBuffer
    from .protocol import HubMessage
    from .streams import StreamTracker

logger = logging.getLogger("hubplane.connection")

Call = InvocationMessage | StreamInvocationMessage


async def _iterate_sync(generator: Generator[Any, Any, Any]) -> AsyncIterator[Any]:
    """Stream a plain generator, letting other work run between items."""
    try:
        for item in generator:
            yield item
            await asyncio.sleep(0)
    finally:
        generator.close()


class DispatchedConnection(ServedConnection, Protocol):
    """What the dispatcher needs of a connection (``backplane.connection.HubConnection``)."""

    @property
    def log_name(self) -> str: ...

    @property
    def closing(self) -> bool: ...

    @property
    def outbound(self) -> OutboundBuffer: ...

    @property
    def stream_tracker(self) -> StreamTracker: ...

    @property
    def replay_size(self) -> int: ...

    def write_message(self, message: HubMessage) -> None: ...

    async def replay_room(self, high_water: int) -> None: ...


class DispatcherHost(Protocol):
    """What the dispatcher needs of its hub's handler."""

    hub_type: type[Hub[Any]]
    descriptor: HubDescriptor
    options: HubOptions
    stats: HubStats
    pipelines: FilterPipelines


def _complete_error(connection: DispatchedConnection, invocation_id: str, error: str) -> None:
    connection.write_message(CompletionMessage(invocation_id, error))


def _stream_ids(message: Call) -> tuple[str, ...]:
    return tuple(message.stream_ids or ())


class HubDispatcher:
    """Finds, checks and runs the hub method of each invocation, and answers it."""

    __slots__ = ("handler",)

    def __init__(self, handler: DispatcherHost) -> None:
        self.handler = handler

    def _hub(self, connection: DispatchedConnection) -> Hub[Any]:
        """A fresh hub instance wired to ``connection``."""
        hub = self.handler.hub_type()
        hub._hubplane_connection = connection
        return hub

    async def on_connected(self, connection: DispatchedConnection) -> None:
        """Run the hub's ``on_connected`` (through the filters) for a new connection."""
        hub = self._hub(connection)
        connected = self.handler.pipelines.connected
        if connected is None:
            await dispatch.maybe_await(hub.on_connected())
        else:
            await connected(HubLifetimeContext(hub, connection.caller_context))

    async def on_disconnected(
        self, connection: DispatchedConnection, exc: Exception | None
    ) -> None:
        """Run the hub's ``on_disconnected`` (through the filters) for an ended connection."""
        hub = self._hub(connection)
        disconnected = self.handler.pipelines.disconnected
        if disconnected is None:
            await dispatch.maybe_await(hub.on_disconnected(exc))
        else:
            await disconnected(HubLifetimeContext(hub, connection.caller_context), exc)

    def check_binding(self, message: Call, method: HubMethod) -> str | None:
        """The Completion error for arguments that do not fit ``method``, or None."""
        given = len(message.arguments)
        if given < method.min_args or (method.max_args is not None and given > method.max_args):
            return dispatch.binding_error(
                message.target, method, given, self.handler.options.detailed_errors
            )
        if method.checks and not arguments_fit(method.checks, message.arguments):
            return dispatch.type_binding_error(message.target, self.handler.options.detailed_errors)
        streams = len(message.stream_ids or ())
        if streams != len(method.stream_params):
            return (
                f"An unexpected error occurred invoking '{message.target}' on the server. "
                f"HubException: Client sent {streams} stream(s), Hub method expects "
                f"{len(method.stream_params)}."
            )
        return None

    def streams_refused(self, connection: DispatchedConnection, message: Call) -> str | None:
        """The Completion error when the streams ``message`` opens (its uploads, and itself
        for a stream invocation) would pass ``max_streams_per_connection``; else None."""
        opening = len(message.stream_ids or ()) + isinstance(message, StreamInvocationMessage)
        limit = self.handler.options.max_streams_per_connection
        open_now = connection.stream_tracker.open_count
        if open_now + opening <= limit:
            return None
        self.handler.stats.refusals["streams"] += 1
        exc = LimitExceededError(
            f"Connection has {open_now} streams open, the most --max-streams-per-connection "
            f"({limit}) allows: it cannot open {opening} more."
        )
        return dispatch.invoke_error(message.target, exc, self.handler.options.detailed_errors)

    # -- invocations ---------------------------------------------------------------------------

    def start_upload_invocation(
        self, connection: DispatchedConnection, message: InvocationMessage
    ) -> None:
        """Methods that receive streams run alongside, so their items can be read.

        The streams are opened here, before any later message of the same frame is read.
        """
        method = self.handler.descriptor.lookup(message.target)
        tracker = connection.stream_tracker
        args = None
        if (
            method is not None
            and method.stream_params
            and not method.is_stream
            and self.check_binding(message, method) is None
        ):
            refused = self.streams_refused(connection, message)
            if refused is not None:
                if message.invocation_id:
                    _complete_error(connection, message.invocation_id, refused)
                return  # its items are dropped: no upload is open for them
            args = tracker.open_uploads(
                message.arguments,
                method.stream_params,
                _stream_ids(message),
                self.handler.options.stream_buffer_capacity,
            )
        tracker.run_reader(self.invoke(connection, message, args))

    async def invoke(
        self,
        connection: DispatchedConnection,
        message: InvocationMessage,
        args: list[Any] | None = None,
    ) -> None:
        """Run a non-streaming invocation and send its Completion (when it has an id)."""
        handler = self.handler
        target = message.target
        invocation_id = message.invocation_id
        stats = handler.stats
        method = handler.descriptor.lookup(target)
        if method is None:
            logger.debug("%s: unknown method %r", connection.log_name, target)
            stats.invocations["unknown_method"] += 1
            if invocation_id:
                _complete_error(connection, invocation_id, dispatch.unknown_method_error(target))
            return
        if method.is_stream:
            stats.invocations["bad_arguments"] += 1
            if invocation_id:
                _complete_error(
                    connection,
                    invocation_id,
                    f"The client attempted to invoke the streaming '{target}' method with a "
                    "non-streaming invocation.",
                )
            return
        if method.rules and not await allowed(method.rules, connection.user):
            stats.invocations["unauthorized"] += 1
            if invocation_id:
                _complete_error(connection, invocation_id, unauthorized_error(target))
            if method.stream_params:
                connection.stream_tracker.close_uploads(message.stream_ids or ())
            return
        if args is None:
            error = self.check_binding(message, method)
            if error is not None:
                stats.invocations["bad_arguments"] += 1
                if invocation_id:
                    _complete_error(connection, invocation_id, error)
                return
            args = message.arguments
        started = perf_counter()
        try:
            hub = self._hub(connection)
            pipeline = handler.pipelines.invoke
            if pipeline is None:
                result = method.func(hub, *args)
                if method.is_coroutine or inspect.isawaitable(result):
                    result = await result
            else:
                result = await pipeline(
                    HubInvocationContext(
                        hub, connection.caller_context, method.name, args, method.func
                    )
                )
        except Exception as exc:
            stats.invocation_seconds.observe(perf_counter() - started)
            stats.invocations["error"] += 1
            if not isinstance(exc, HubException):
                logger.exception("%s: hub method %r failed", connection.log_name, target)
            if invocation_id:
                _complete_error(
                    connection,
                    invocation_id,
                    dispatch.invoke_error(target, exc, handler.options.detailed_errors),
                )
            return
        finally:
            if method.stream_params:
                connection.stream_tracker.close_uploads(message.stream_ids or ())
        stats.invocation_seconds.observe(perf_counter() - started)
        stats.invocations["ok"] += 1
        if invocation_id:
            if method.returns_value or result is not None:
                connection.write_message(CompletionMessage(invocation_id, None, result, True))
            else:
                connection.write_message(CompletionMessage(invocation_id))

    # -- server-to-client streams --------------------------------------------------------------

    def start_stream(
        self, connection: DispatchedConnection, message: StreamInvocationMessage
    ) -> None:
        """Check a StreamInvocation and start its stream (or answer it with an error)."""
        invocation_id = message.invocation_id
        target = message.target
        tracker = connection.stream_tracker
        if invocation_id in tracker.running:
            _complete_error(
                connection, invocation_id, f"Invocation ID '{invocation_id}' is already in use."
            )
            return
        invocations = self.handler.stats.invocations
        method = self.handler.descriptor.lookup(target)
        if method is None:
            invocations["unknown_method"] += 1
            _complete_error(connection, invocation_id, dispatch.unknown_method_error(target))
            return
        if not method.is_stream:
            invocations["bad_arguments"] += 1
            _complete_error(
                connection,
                invocation_id,
                f"The client attempted to invoke the non-streaming '{target}' method with a "
                "streaming invocation.",
            )
            return
        error = self.check_binding(message, method)
        if error is not None:
            invocations["bad_arguments"] += 1
            _complete_error(connection, invocation_id, error)
            return
        refused = self.streams_refused(connection, message)
        if refused is not None:
            _complete_error(connection, invocation_id, refused)
            return
        args = (
            tracker.open_uploads(
                message.arguments,
                method.stream_params,
                _stream_ids(message),
                self.handler.options.stream_buffer_capacity,
            )
            if method.stream_params
            else message.arguments
        )
        tracker.start(invocation_id, self._run_stream(connection, message, method, args))

    async def _run_stream(
        self,
        connection: DispatchedConnection,
        message: StreamInvocationMessage,
        method: HubMethod,
        args: list[Any],
    ) -> None:
        invocation_id = message.invocation_id
        options = self.handler.options
        tracker = connection.stream_tracker
        source: Any = None
        streaming = False  # errors before the first item are invocation errors
        invocations = self.handler.stats.invocations
        if method.rules and not await allowed(method.rules, connection.user):
            invocations["unauthorized"] += 1
            tracker.running.pop(invocation_id, None)
            if method.stream_params:
                tracker.close_uploads(message.stream_ids or ())
            _complete_error(connection, invocation_id, unauthorized_error(message.target))
            return
        try:
            hub = self._hub(connection)
            pipeline = self.handler.pipelines.invoke
            if pipeline is None:
                source = method.func(hub, *args)
            else:
                source = await pipeline(
                    HubInvocationContext(
                        hub, connection.caller_context, method.name, args, method.func
                    )
                )
            if inspect.isawaitable(source):
                source = await source
            streaming = True
            if not hasattr(source, "__aiter__") and inspect.isgenerator(source):
                source = _iterate_sync(source)
            if not hasattr(source, "__aiter__"):
                _complete_error(
                    connection,
                    invocation_id,
                    f"The value returned by the streaming method '{message.target}' is not a "
                    "ChannelReader<> or IAsyncEnumerable<>.",
                )
                return
            outbound = connection.outbound
            high_water = options.max_buffer_size // 2
            async for item in source:
                connection.write_message(StreamItemMessage(invocation_id, item))
                if outbound.size > high_water:
                    await outbound.drain(high_water // 2)
                if connection.replay_size > high_water:
                    await connection.replay_room(high_water // 2)
                if connection.closing:
                    return
            invocations["ok"] += 1
            connection.write_message(CompletionMessage(invocation_id))
        except asyncio.CancelledError:
            if tracker.cancelled_by_client(invocation_id) and not connection.closing:
                # Cancelled by the client: the reference server still completes the id.
                connection.write_message(CompletionMessage(invocation_id))
            else:
                raise
        except Exception as exc:
            invocations["error"] += 1
            if not isinstance(exc, HubException):
                logger.exception("%s: stream %r failed", connection.log_name, message.target)
            detailed = options.detailed_errors
            _complete_error(
                connection,
                invocation_id,
                dispatch.stream_error(exc, detailed)
                if streaming
                else dispatch.invoke_error(message.target, exc, detailed),
            )
        finally:
            tracker.ended(invocation_id)
            if method.stream_params:
                tracker.close_uploads(message.stream_ids or ())
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    logger.debug(
                        "%s: stream source close failed", connection.log_name, exc_info=True
                    )
