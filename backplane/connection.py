"""One client connection of a hub, whatever its transport: handshake, dispatch, close.

Transports feed received bytes to :meth:`HubConnection.receive` and write out what
:attr:`HubConnection.outbound` yields; they call :meth:`HubConnection.transport_closed`
once when they end. Nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any

from . import dispatch
from .authorization import allowed, unauthorized_error
from .clients import HubCallerClients
from .errors import HubException, MessageTooLargeError, ProtocolError
from .filters import HubInvocationContext, HubLifetimeContext
from .hub import HubCallerContext, User
from .lifetime.base import DISCONNECTED, SerializedMessage
from .outbound import OutboundBuffer
from .protocol import (
    HANDSHAKE_SUCCESS,
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    HubProtocol,
    InvocationMessage,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    get_protocol,
    parse_handshake_request,
    write_handshake_response,
)
from .streams import UploadStream
from .waiters import wake

if TYPE_CHECKING:
    from .handler import HubConnectionHandler

logger = logging.getLogger("hubplane.connection")

CLOSE_ERROR = "Connection closed with an error."

_eager_factory = getattr(asyncio, "eager_task_factory", None)


def token_expiry(user: User | None) -> float | None:
    """When the user's token expires (its ``exp`` claim, seconds since the epoch), if known."""
    if user is None:
        return None
    exp = user.claims.get("exp")
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def start_task(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """A task for ``coro``, started eagerly where Python offers it (3.12+)."""
    loop = asyncio.get_running_loop()
    if _eager_factory is not None:
        task: asyncio.Task[None] = _eager_factory(loop, coro)
        return task
    return loop.create_task(coro)


# Non-streaming invocations queued per connection before the transport stops reading.
MAX_QUEUED_INVOCATIONS = 64
# Message types numbered for stateful reconnect (1-5); pings, Close, Ack, Sequence are not.
TRACKED = frozenset(
    (
        InvocationMessage,
        StreamItemMessage,
        CompletionMessage,
        StreamInvocationMessage,
        CancelInvocationMessage,
    )
)
_NO_GROUPS: frozenset[str] = frozenset()
# Upload-stream invocations running in the background (a reference keeps each task alive).
_BACKGROUND: set[asyncio.Task[None]] = set()
# The replay buffer of connections without stateful reconnect: never written to.
_NO_REPLAY: deque[tuple[int, bytes]] = deque(maxlen=0)
# The replay buffer may always hold this much before the client is taken as too slow.
REPLAY_MIN = 4 * 1024 * 1024


async def _iterate_sync(generator: Any) -> Any:
    """Stream a plain generator, letting other work run between items."""
    try:
        for item in generator:
            yield item
            await asyncio.sleep(0)
    finally:
        generator.close()


class HubConnection:
    """The server side of one client connection to one hub."""

    __slots__ = (
        "handler",
        "connection_id",
        "transport",
        "user",
        "headers",
        "query",
        "_items",
        "protocol",
        "groups",
        "outbound",
        "_caller_context",
        "_caller_clients",
        "supports_binary",
        "send_pings",
        "_inbuf",
        "_closing",
        "_connected",
        "_torn_down",
        "_received",
        "_ping_seen",
        "_expires_at",
        "_created",
        "_last_received",
        "_next_ping",
        "_queue",
        "_queue_space",
        "_dispatcher",
        "_streams",
        "_cancelled_streams",
        "_uploads",
        "_close_error",
        "_closed_event",
        "_finished",
        "results",
        "stateful_allowed",
        "detached",
        "_stateful",
        "_sent_seq",
        "_replay",
        "_replay_size",
        "_replay_limit",
        "_replay_waiter",
        "_received_seq",
        "_incoming_next",
        "_acked_received",
        "_await_sequence",
    )

    def __init__(
        self,
        handler: HubConnectionHandler,
        connection_id: str,
        *,
        transport: str,
        user: User | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        supports_binary: bool = True,
        send_pings: bool = True,
    ) -> None:
        self.handler = handler
        self.connection_id = connection_id
        self.transport = transport
        self.user = user
        self.headers: Mapping[str, str] = headers or {}
        self.query: Mapping[str, str] = query or {}
        self._items: dict[Any, Any] | None = None
        self.protocol: HubProtocol | None = None
        # Its groups on this node (a shared empty set until it joins one: most never do).
        self.groups: set[str] | frozenset[str] = _NO_GROUPS
        self.outbound = OutboundBuffer(handler.options.max_buffer_size)
        self._caller_context: HubCallerContext | None = None
        self._caller_clients: HubCallerClients[Any] | None = None  # made when a hub needs it
        self.supports_binary = supports_binary
        self.send_pings = send_pings
        self._inbuf = bytearray()
        self._closing = False
        self._connected = False  # the hub's on_connected succeeded
        self._torn_down = False
        self._received = False
        self._ping_seen = False
        self._expires_at: float | None = None
        now = asyncio.get_running_loop().time()
        self._created = now
        self._last_received = now
        self._next_ping = now + handler.options.keepalive_interval
        self._queue: deque[InvocationMessage] | None = None  # made by the first invocation
        self._queue_space: asyncio.Future[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._streams: dict[str, asyncio.Task[None]] = {}
        self._cancelled_streams: set[str] | None = None
        self._uploads: dict[str, UploadStream] = {}
        self._close_error: Exception | None = None
        # Created on demand: most connections never have anyone waiting for their end.
        self._closed_event: asyncio.Event | None = None
        self._finished = False
        # Client results awaited from this client: invocation id -> who gets the Completion.
        self.results: dict[str, Callable[[CompletionMessage], None]] = {}
        # Stateful reconnect (negotiated, WebSockets, handshake version 2): trackable
        # messages are numbered each way and the unacknowledged ones kept for a replay.
        self.stateful_allowed = False
        self.detached = False
        self._stateful = False
        self._sent_seq = 0
        self._replay: deque[tuple[int, bytes]] = _NO_REPLAY  # a real one when stateful
        self._replay_size = 0
        self._replay_limit = REPLAY_MIN
        self._replay_waiter: asyncio.Future[None] | None = None
        self._received_seq = 0
        self._incoming_next = 1
        self._acked_received = 0
        self._await_sequence = False
        handler.connections[connection_id] = self

    # -- writing ---------------------------------------------------------------------------

    def write_serialized(self, message: SerializedMessage) -> None:
        """Queue a message that may be shared by many recipients (fan-out path)."""
        protocol = self.protocol
        if protocol is None or self._closing:
            return
        try:
            data = message.get(protocol)
        except Exception:
            logger.exception("%s: cannot encode a message from the backplane", self.log_name)
            return
        if self._stateful:
            self._track(data)
        self.handler.stats.messages_sent += 1
        if not self.outbound.write(data):
            self._overflow()

    def write_message(self, message: HubMessage) -> None:
        """Queue a message for this connection only."""
        protocol = self.protocol
        if protocol is None or self._closing:
            return
        try:
            data = protocol.write_message(message)
        except Exception as exc:
            # A value the protocol cannot encode: end the connection as the reference does
            # when a write fails, rather than leaving the client waiting for a reply.
            logger.exception("%s: cannot encode %r", self.log_name, message)
            self._close_error = exc
            self.close(CLOSE_ERROR, allow_reconnect=True)
            return
        if self._stateful and type(message) in TRACKED:
            self._track(data)
        self.handler.stats.messages_sent += 1
        if not self.outbound.write(data):
            self._overflow()

    # -- stateful reconnect ----------------------------------------------------------------

    def _track(self, data: bytes) -> None:
        """Number an outgoing trackable message and keep it until the client acks it."""
        self._sent_seq += 1
        self._replay.append((self._sent_seq, data))
        self._replay_size += len(data)
        if self._replay_size > self._replay_limit:
            logger.warning("%s: too many unacknowledged messages", self.log_name)
            self._overflow()

    def _on_ack(self, sequence_id: int) -> None:
        replay = self._replay
        while replay and replay[0][0] <= sequence_id:
            self._replay_size -= len(replay.popleft()[1])
        self._replay_waiter = wake(self._replay_waiter)

    async def replay_room(self, high_water: int) -> None:
        """Wait until unacknowledged bytes are at most ``high_water`` (stream producers)."""
        while self._stateful and self._replay_size > high_water and not self._closing:
            waiter = self._replay_waiter
            if waiter is None:
                waiter = self._replay_waiter = asyncio.get_running_loop().create_future()
            await waiter

    def detach(self) -> None:
        """The transport dropped without a close: keep the connection for a reconnect."""
        self.detached = True
        self._await_sequence = True  # everything before the client's Sequence is stale

    def resume(self) -> None:
        """A new transport took over: send Sequence and the unacknowledged backlog first."""
        self.outbound.take()  # what piled up while detached is in the replay (or is pings)
        first = self._replay[0][0] if self._replay else self._sent_seq + 1
        protocol = self.protocol
        assert protocol is not None
        self.outbound.write(protocol.write_message(SequenceMessage(first)))
        for _, data in self._replay:
            self.outbound.write(data)
        self.detached = False

    @property
    def stateful(self) -> bool:
        """True when this connection uses stateful reconnect."""
        return self._stateful

    def _overflow(self) -> None:
        if self.outbound.closed:
            return
        logger.warning(
            "%s: outbound buffer over %d bytes, closing slow client",
            self.log_name,
            self.outbound.limit,
        )
        self.handler.stats.slow_clients += 1
        # The buffer is full: the Close message could not be delivered in order anyway.
        self._closing = True
        self.outbound.close()

    # -- receiving -------------------------------------------------------------------------

    async def receive(self, data: bytes, binary: bool | None = None) -> None:
        """Handle bytes from the client; ``binary`` is the WebSocket frame type, if any."""
        if self._closing:
            return
        self._received = True
        protocol = self.protocol
        if protocol is None:
            if not await self._handshake(data):
                return
            protocol = self.protocol
            assert protocol is not None
            if not self._inbuf:
                return
            data = bytes(self._inbuf)
            self._inbuf.clear()
        elif binary is False and protocol.is_binary:
            # A text frame cannot carry MessagePack. The reverse is allowed: the Java client
            # sends JSON in binary frames, and the reference server ignores the frame type.
            self._fail(ProtocolError("a text frame on a MessagePack connection"))
            return
        if self._inbuf:
            self._inbuf += data
            data = bytes(self._inbuf)
            self._inbuf.clear()
        try:
            messages, consumed = protocol.parse_messages(
                data, self.handler.options.max_message_size
            )
        except ProtocolError as exc:
            self._fail(exc)
            return
        if consumed < len(data):
            self._inbuf += data[consumed:]
        self.handler.stats.messages_received += len(messages)
        stateful = self._stateful
        for message in messages:
            if type(message) is InvocationMessage and not stateful and not message.stream_ids:
                # The usual message, queued here without going through _handle and
                # _enqueue (two coroutines per message less).
                space = self._enqueue_now(message)
                if space is not None:
                    await space
            else:
                await self._handle(message)
            if self._closing:
                return

    async def _enqueue(self, message: InvocationMessage) -> None:
        """Queue a non-streaming invocation; they run one at a time, in arrival order."""
        space = self._enqueue_now(message)
        if space is not None:
            await space

    def _enqueue_now(self, message: InvocationMessage) -> asyncio.Future[None] | None:
        """Queue ``message``; a future to wait for when the queue is full (else None)."""
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        queue.append(message)
        dispatcher = self._dispatcher
        if dispatcher is None or dispatcher.done():
            self._dispatcher = start_task(self._dispatch_queue())
        if len(queue) >= MAX_QUEUED_INVOCATIONS:
            space = self._queue_space = asyncio.get_running_loop().create_future()
            return space
        return None

    async def _handshake(self, data: bytes) -> bool:
        options = self.handler.options
        self._inbuf += data
        try:
            request, consumed = parse_handshake_request(self._inbuf, options.max_message_size)
        except MessageTooLargeError:
            self._handshake_failed("Handshake was canceled.")
            return False
        except ProtocolError as exc:
            self._handshake_failed(
                dispatch.error_text(
                    "An unexpected error occurred during connection handshake.",
                    exc,
                    options.detailed_errors,
                )
            )
            return False
        if request is None:
            return False
        del self._inbuf[:consumed]
        protocol = get_protocol(request.protocol)
        if protocol is None or request.protocol not in options.protocols:
            self._handshake_failed(f"The protocol '{request.protocol}' is not supported.")
            return False
        if request.version > 2 or request.version < 0:
            self._handshake_failed(
                f"The server does not support version {request.version} "
                f"of the '{request.protocol}' protocol."
            )
            return False
        if protocol.is_binary and not self.supports_binary:
            self._handshake_failed(
                f"Cannot use the '{request.protocol}' protocol on the current transport. "
                "The transport does not support 'Binary' transfer format."
            )
            return False
        # The protocol is set first so the reply goes out in that protocol's frame type.
        self.protocol = protocol
        # Version 2 from a client that negotiated it turns stateful reconnect on; a lower
        # version quietly leaves it off, as the reference server does.
        self._stateful = self.stateful_allowed and request.version >= 2
        if self._stateful:
            self._replay = deque()
            # Clients acknowledge about once a second: the replay holds a second of traffic
            # or so. Fan-out writes cannot wait (streams do, in replay_room): a wide bound.
            self._replay_limit = max(4 * options.max_buffer_size, REPLAY_MIN)
        self.outbound.write(HANDSHAKE_SUCCESS)
        stats = self.handler.stats
        key = (self.transport, protocol.name)
        stats.connects[key] = stats.connects.get(key, 0) + 1
        try:
            await self.handler.lifetime.on_connected(self)
            hub = dispatch.create_hub(self)
            connected = self.handler.pipelines.connected
            if connected is None:
                await dispatch.maybe_await(hub.on_connected())
            else:
                await connected(HubLifetimeContext(hub, self.caller_context))
        except Exception as exc:
            logger.exception("%s: on_connected failed", self.log_name)
            self.close(dispatch.error_text(CLOSE_ERROR, exc, options.detailed_errors), False)
            return False
        self._connected = True
        if options.close_on_token_expiry:
            self._expires_at = token_expiry(self.user)
        return True

    def _handshake_failed(self, error: str) -> None:
        logger.info("%s: handshake failed: %s", self.log_name, error)
        self.outbound.write(write_handshake_response(error))
        self._closing = True
        self.outbound.close()

    def _fail(self, exc: Exception) -> None:
        """A protocol error: Close with the generic error, as the reference server does.

        Like ASP.NET Core, the client may reconnect (only an explicit abort forbids it).
        """
        logger.info("%s: closing on bad input: %s", self.log_name, exc)
        self._close_error = exc
        text = dispatch.error_text(CLOSE_ERROR, exc, self.handler.options.detailed_errors)
        if isinstance(exc, ProtocolError) and not self.handler.options.detailed_errors:
            text = CLOSE_ERROR
        self.close(text, allow_reconnect=True)

    async def _handle(self, message: HubMessage) -> None:
        kind = type(message)
        if self._stateful:
            if kind in TRACKED:
                if self._await_sequence:
                    return  # after a reconnect, nothing counts before the client's Sequence
                number = self._incoming_next
                self._incoming_next = number + 1
                if number <= self._received_seq:
                    return  # replayed by the client, already handled
                self._received_seq = number
            elif kind is AckMessage:
                assert isinstance(message, AckMessage)
                self._on_ack(message.sequence_id)
                return
            elif kind is SequenceMessage:
                assert isinstance(message, SequenceMessage)
                if message.sequence_id > self._received_seq + 1:
                    self._fail(
                        ProtocolError("Sequence ID greater than amount of messages we've received.")
                    )
                    return
                self._incoming_next = message.sequence_id
                self._await_sequence = False
                return
        if kind is InvocationMessage:
            assert isinstance(message, InvocationMessage)
            if message.stream_ids:
                self._start_upload_invocation(message)
            else:
                await self._enqueue(message)
        elif kind is PingMessage:
            self._ping_seen = True  # the client timeout runs from the first ping, as in ASP.NET
        elif kind is StreamInvocationMessage:
            assert isinstance(message, StreamInvocationMessage)
            self._start_stream(message)
        elif kind is CancelInvocationMessage:
            assert isinstance(message, CancelInvocationMessage)
            task = self._streams.get(message.invocation_id)
            if task is not None:
                if self._cancelled_streams is None:
                    self._cancelled_streams = set()
                self._cancelled_streams.add(message.invocation_id)
                task.cancel()
        elif kind is StreamItemMessage:
            assert isinstance(message, StreamItemMessage)
            upload = self._uploads.get(message.invocation_id)
            if upload is not None:
                await upload.put(message.item)
            else:
                logger.debug(
                    "%s: item for unknown stream %r",
                    self.log_name,
                    message.invocation_id,
                )
        elif kind is CompletionMessage:
            assert isinstance(message, CompletionMessage)
            upload = self._uploads.pop(message.invocation_id, None)
            if upload is not None:
                upload.complete(message.error)
            else:
                waiter = self.results.pop(message.invocation_id, None)
                if waiter is not None:
                    waiter(message)
                else:
                    logger.debug(
                        "%s: completion for unknown invocation %r",
                        self.log_name,
                        message.invocation_id,
                    )
        elif kind is CloseMessage:
            assert isinstance(message, CloseMessage)
            if message.error:
                self._close_error = HubException(message.error)
            self.close(None, False)
        # Ack / Sequence (stateful reconnect) are handled by a later feature; ignored here.

    # -- invocations -----------------------------------------------------------------------

    async def _dispatch_queue(self) -> None:
        """Run queued invocations one at a time, in order; ends when the queue is empty.

        A new one starts when the next invocation arrives. Where the event loop offers
        eager tasks (Python 3.12+), an invocation that never waits runs to its end right
        away, with no task switch.
        """
        queue = self._queue
        assert queue is not None
        while queue and not self._closing:
            message = queue.popleft()
            self._queue_space = wake(self._queue_space)
            try:
                await self._invoke(message)
            except Exception:  # never let one invocation stop the connection's dispatch
                logger.exception("%s: dispatch failed", self.log_name)

    def _open_uploads(
        self, message: InvocationMessage | StreamInvocationMessage, method: dispatch.HubMethod
    ) -> list[Any]:
        """The argument list with an UploadStream at each stream parameter."""
        args = list(message.arguments)
        for position, stream_id in zip(method.stream_params, message.stream_ids or (), strict=True):
            previous = self._uploads.pop(stream_id, None)
            if previous is not None:  # a reused id replaces (and ends) the old stream
                previous.complete("Stream ID reused by the client.")
            upload = UploadStream(stream_id)
            self._uploads[stream_id] = upload
            args.insert(position, upload)
        return args

    def _close_uploads(self, message: InvocationMessage | StreamInvocationMessage) -> None:
        """The method returned: end its upload streams and drop later items for them."""
        for stream_id in message.stream_ids or ():
            upload = self._uploads.pop(stream_id, None)
            if upload is not None:
                upload.complete()

    def _start_upload_invocation(self, message: InvocationMessage) -> None:
        """Methods that receive streams run alongside, so their items can be read.

        The streams are opened here, before any later message of the same frame is read.
        """
        method = self.handler.descriptor.lookup(message.target)
        args = None
        if (
            method is not None
            and method.stream_params
            and not method.is_stream
            and self._check_binding(message, method) is None
        ):
            args = self._open_uploads(message, method)
        task = start_task(self._invoke(message, args))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

    async def _invoke(self, message: InvocationMessage, args: list[Any] | None = None) -> None:
        target = message.target
        invocation_id = message.invocation_id
        options = self.handler.options
        stats = self.handler.stats
        method = self.handler.descriptor.lookup(target)
        if method is None:
            logger.debug("%s: unknown method %r", self.log_name, target)
            stats.invocations["unknown_method"] += 1
            if invocation_id:
                self._complete_error(invocation_id, dispatch.unknown_method_error(target))
            return
        if method.is_stream:
            stats.invocations["bad_arguments"] += 1
            if invocation_id:
                self._complete_error(
                    invocation_id,
                    f"The client attempted to invoke the streaming '{target}' method with a "
                    "non-streaming invocation.",
                )
            return
        if method.rules and not await allowed(method.rules, self.user):
            stats.invocations["unauthorized"] += 1
            if invocation_id:
                self._complete_error(invocation_id, unauthorized_error(target))
            if method.stream_params:
                self._close_uploads(message)
            return
        if args is None:
            error = self._check_binding(message, method)
            if error is not None:
                stats.invocations["bad_arguments"] += 1
                if invocation_id:
                    self._complete_error(invocation_id, error)
                return
            args = message.arguments
        started = perf_counter()
        try:
            hub = dispatch.create_hub(self)
            pipeline = self.handler.pipelines.invoke
            if pipeline is None:
                result = method.func(hub, *args)
                if method.is_coroutine or inspect.isawaitable(result):
                    result = await result
            else:
                result = await pipeline(
                    HubInvocationContext(hub, self.caller_context, method.name, args, method.func)
                )
        except Exception as exc:
            stats.invocation_seconds.observe(perf_counter() - started)
            stats.invocations["error"] += 1
            if not isinstance(exc, HubException):
                logger.exception("%s: hub method %r failed", self.log_name, target)
            if invocation_id:
                self._complete_error(
                    invocation_id, dispatch.invoke_error(target, exc, options.detailed_errors)
                )
            return
        finally:
            if method.stream_params:
                self._close_uploads(message)
        stats.invocation_seconds.observe(perf_counter() - started)
        stats.invocations["ok"] += 1
        if invocation_id:
            if method.returns_value or result is not None:
                self.write_message(CompletionMessage(invocation_id, None, result, True))
            else:
                self.write_message(CompletionMessage(invocation_id))

    def _check_binding(
        self, message: InvocationMessage | StreamInvocationMessage, method: dispatch.HubMethod
    ) -> str | None:
        given = len(message.arguments)
        if given < method.min_args or (method.max_args is not None and given > method.max_args):
            return dispatch.binding_error(
                message.target, method, given, self.handler.options.detailed_errors
            )
        streams = len(message.stream_ids or ())
        if streams != len(method.stream_params):
            return (
                f"An unexpected error occurred invoking '{message.target}' on the server. "
                f"HubException: Client sent {streams} stream(s), Hub method expects "
                f"{len(method.stream_params)}."
            )
        return None

    def _complete_error(self, invocation_id: str, error: str) -> None:
        self.write_message(CompletionMessage(invocation_id, error))

    # -- server-to-client streams ----------------------------------------------------------

    def _start_stream(self, message: StreamInvocationMessage) -> None:
        invocation_id = message.invocation_id
        target = message.target
        if invocation_id in self._streams:
            self._complete_error(
                invocation_id, f"Invocation ID '{invocation_id}' is already in use."
            )
            return
        invocations = self.handler.stats.invocations
        method = self.handler.descriptor.lookup(target)
        if method is None:
            invocations["unknown_method"] += 1
            self._complete_error(invocation_id, dispatch.unknown_method_error(target))
            return
        if not method.is_stream:
            invocations["bad_arguments"] += 1
            self._complete_error(
                invocation_id,
                f"The client attempted to invoke the non-streaming '{target}' method with a "
                "streaming invocation.",
            )
            return
        error = self._check_binding(message, method)
        if error is not None:
            invocations["bad_arguments"] += 1
            self._complete_error(invocation_id, error)
            return
        args = self._open_uploads(message, method) if method.stream_params else message.arguments
        task = start_task(self._run_stream(message, method, args))
        if not task.done():  # an eager task may already have run to its end
            self._streams[invocation_id] = task

    async def _run_stream(
        self, message: StreamInvocationMessage, method: dispatch.HubMethod, args: list[Any]
    ) -> None:
        invocation_id = message.invocation_id
        options = self.handler.options
        source: Any = None
        streaming = False  # errors before the first item are invocation errors
        invocations = self.handler.stats.invocations
        if method.rules and not await allowed(method.rules, self.user):
            invocations["unauthorized"] += 1
            self._streams.pop(invocation_id, None)
            if method.stream_params:
                self._close_uploads(message)
            self._complete_error(invocation_id, unauthorized_error(message.target))
            return
        try:
            hub = dispatch.create_hub(self)
            pipeline = self.handler.pipelines.invoke
            if pipeline is None:
                source = method.func(hub, *args)
            else:
                source = await pipeline(
                    HubInvocationContext(hub, self.caller_context, method.name, args, method.func)
                )
            if inspect.isawaitable(source):
                source = await source
            streaming = True
            if not hasattr(source, "__aiter__") and inspect.isgenerator(source):
                source = _iterate_sync(source)
            if not hasattr(source, "__aiter__"):
                self._complete_error(
                    invocation_id,
                    f"The value returned by the streaming method '{message.target}' is not a "
                    "ChannelReader<> or IAsyncEnumerable<>.",
                )
                return
            outbound = self.outbound
            high_water = options.max_buffer_size // 2
            async for item in source:
                self.write_message(StreamItemMessage(invocation_id, item))
                if outbound.size > high_water:
                    await outbound.drain(high_water // 2)
                if self._stateful and self._replay_size > high_water:
                    await self.replay_room(high_water // 2)
                if self._closing:
                    return
            invocations["ok"] += 1
            self.write_message(CompletionMessage(invocation_id))
        except asyncio.CancelledError:
            cancelled = self._cancelled_streams
            if cancelled and invocation_id in cancelled and not self._closing:
                # Cancelled by the client: the reference server still completes the id.
                self.write_message(CompletionMessage(invocation_id))
            else:
                raise
        except Exception as exc:
            invocations["error"] += 1
            if not isinstance(exc, HubException):
                logger.exception("%s: stream %r failed", self.log_name, message.target)
            detailed = options.detailed_errors
            self._complete_error(
                invocation_id,
                dispatch.stream_error(exc, detailed)
                if streaming
                else dispatch.invoke_error(message.target, exc, detailed),
            )
        finally:
            self._streams.pop(invocation_id, None)
            if self._cancelled_streams:
                self._cancelled_streams.discard(invocation_id)
            if method.stream_params:
                self._close_uploads(message)
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    logger.debug("%s: stream source close failed", self.log_name, exc_info=True)

    # -- closing ---------------------------------------------------------------------------

    def close(self, error: str | None = None, allow_reconnect: bool = False) -> None:
        """Send a Close message (when the handshake is done) and end the connection."""
        if self._closing:
            return
        if self.protocol is not None:
            self.outbound.write(self.protocol.write_message(CloseMessage(error, allow_reconnect)))
        self._closing = True
        self.outbound.close()

    async def finish_and_close(self) -> None:
        """Let the invocations received so far answer, then Close allowing a reconnect.

        A draining server closes connections this way: an invocation the server took gets
        its result before the Close, and one the client sends after it is failed by the
        client itself (it fails pending invocations on a Close), so a client that retries
        never runs a method twice.
        """
        while not self._closing:
            dispatcher = self._dispatcher
            if dispatcher is None or dispatcher.done():
                break
            await asyncio.wait((dispatcher,))
        self.close(None, allow_reconnect=True)

    def abort(self, allow_reconnect: bool = False) -> None:
        """End the connection from the server side (hub code, an admin, a slow client)."""
        self.close(None, allow_reconnect)

    @property
    def log_name(self) -> str:
        """How log records name this connection: its hub and id."""
        return f"hub {self.handler.hub_type.__qualname__} connection {self.connection_id}"

    @property
    def items(self) -> dict[Any, Any]:
        """Per-connection storage for hub code (``context.items``)."""
        items = self._items
        if items is None:
            items = self._items = {}
        return items

    @property
    def caller_context(self) -> HubCallerContext:
        """The ``self.context`` of hubs serving this connection."""
        context = self._caller_context
        if context is None:
            context = self._caller_context = HubCallerContext(self)
        return context

    def add_group(self, group: str) -> None:
        """Note that the connection joined ``group`` (lifetime managers call this)."""
        if not isinstance(self.groups, set):
            self.groups = set()
        self.groups.add(group)

    def discard_group(self, group: str) -> None:
        """Note that the connection left ``group``."""
        if isinstance(self.groups, set):
            self.groups.discard(group)

    def clear_groups(self) -> None:
        """Forget every group (the connection ended)."""
        self.groups = _NO_GROUPS

    @property
    def caller_clients(self) -> HubCallerClients[Any]:
        """The client proxies hub methods of this connection see (``self.clients``)."""
        clients = self._caller_clients
        if clients is None:
            handler = self.handler
            clients = self._caller_clients = HubCallerClients(
                handler.lifetime, self.connection_id, handler.client_interface
            )
        return clients

    @property
    def closed(self) -> asyncio.Event:
        """Set once the connection has ended and ``on_disconnected`` has run."""
        event = self._closed_event
        if event is None:
            event = self._closed_event = asyncio.Event()
            if self._finished:
                event.set()
        return event

    @property
    def closing(self) -> bool:
        """True once the connection is ending."""
        return self._closing

    async def transport_closed(self, exception: Exception | None = None) -> None:
        """The transport has ended: tear down exactly once and run ``on_disconnected``."""
        if self._torn_down:
            return
        self._torn_down = True
        self._closing = True
        self.outbound.close()
        self.handler.connections.pop(self.connection_id, None)
        # Streams to the client stop (their generators are closed); an invocation that is
        # running finishes, as in ASP.NET Core, and queued ones are dropped. Upload streams
        # fail, so methods reading them stop instead of taking a cut-off stream as whole.
        for task in self._streams.values():
            task.cancel()
        for upload in self._uploads.values():
            upload.complete(ConnectionAbortedError("The underlying connection was closed."))
        self._uploads.clear()
        results, self.results = self.results, {}
        for invocation_id, waiter in results.items():
            try:
                waiter(CompletionMessage.with_error(invocation_id, DISCONNECTED))
            except Exception:
                logger.exception("%s: failing a pending client result failed", self.log_name)
        if self._queue:
            self._queue.clear()
        self._queue_space = wake(self._queue_space)
        exc = exception if exception is not None else self._close_error
        try:
            if self.protocol is not None:
                stats = self.handler.stats
                key = (self.transport, self.protocol.name)
                stats.disconnects[key] = stats.disconnects.get(key, 0) + 1
                try:
                    if self._connected:
                        hub = dispatch.create_hub(self)
                        disconnected = self.handler.pipelines.disconnected
                        if disconnected is None:
                            await dispatch.maybe_await(hub.on_disconnected(exc))
                        else:
                            await disconnected(HubLifetimeContext(hub, self.caller_context), exc)
                except Exception:
                    logger.exception("%s: on_disconnected failed", self.log_name)
                finally:
                    try:
                        await self.handler.lifetime.on_disconnected(self)
                    except Exception:
                        logger.exception("%s: lifetime cleanup failed", self.log_name)
        finally:
            self._finished = True
            if self._closed_event is not None:
                self._closed_event.set()

    # -- timers ----------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Run the timers: handshake timeout, keep-alive pings, client timeout."""
        if self._closing:
            return
        options = self.handler.options
        if self._received:
            self._received = False
            self._last_received = now
        if self.protocol is None:
            if now - self._created >= options.handshake_timeout:
                self._handshake_failed("Handshake was canceled.")
            return
        if self._stateful and not self.detached and self._received_seq > self._acked_received:
            # At most one Ack a tick (a second), as the reference server does.
            self._acked_received = self._received_seq
            self.write_message(AckMessage(self._received_seq))
        if self.send_pings and now >= self._next_ping:
            self._next_ping = now + options.keepalive_interval
            self.write_message(PingMessage())
        if self._expires_at is not None and time.time() >= self._expires_at:
            # As ASP.NET Core's CloseOnAuthenticationExpiration: the client may reconnect
            # with a fresh token.
            logger.info("%s: the user's token expired", self.log_name)
            self.close(None, allow_reconnect=True)
            return
        if self._ping_seen and now - self._last_received >= options.client_timeout:
            logger.info("%s: client timeout", self.log_name)
            self._close_error = TimeoutError(
                "Client hasn't sent a message/ping within the configured client timeout."
            )
            self.close(CLOSE_ERROR, allow_reconnect=True)
