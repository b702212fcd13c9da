"""One client connection of a hub, whatever its transport: handshake, dispatch, close.

Transports feed received bytes to :meth:`HubConnection.receive` and write out what
:attr:`HubConnection.outbound` yields; they call :meth:`HubConnection.transport_closed`
once when they end. Nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import dispatch
from .clients import HubCallerClients
from .errors import HubException, ProtocolError
from .handshake import CANCELED, read_handshake
from .hub import HubCallerContext
from .invocations import InvocationQueue
from .keeping import NO_GROUPS, Keeping
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
    write_handshake_response,
)
from .stateful import REPLAY_MIN, TRACKED, MessageBuffer
from .streams import StreamTracker
from .timers import CLIENT_TIMEOUT, ConnectionTimers
from .user import User
from .waiters import wake

if TYPE_CHECKING:
    from .host import ConnectionHost

logger = logging.getLogger("hubplane.connection")

CLOSE_ERROR = "Connection closed with an error."


class HubConnection(Keeping):
    """The server side of one client connection to one hub."""

    __slots__ = (
        "handler",
        "connection_id",
        "transport",
        "user",
        "headers",
        "query",
        "protocol",
        "outbound",
        "_caller_context",
        "_caller_clients",
        "supports_binary",
        "send_pings",
        "_inbuf",
        "_closing",
        "_connected",
        "_torn_down",
        "_timers",
        "_invocations",
        "_streams",
        "_close_error",
        "_closed_event",
        "_finished",
        "results",
        "stateful_allowed",
        "detached",
        "_buffer",
        "_replay_waiter",
    )

    def __init__(
        self,
        handler: ConnectionHost,
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
        self.groups: set[str] | frozenset[str] = NO_GROUPS
        self.outbound = OutboundBuffer(handler.options.max_buffer_size)
        self._caller_context: HubCallerContext | None = None
        self._caller_clients: HubCallerClients[Any] | None = None  # made when a hub needs it
        self.supports_binary = supports_binary
        self.send_pings = send_pings
        self._inbuf = bytearray()
        self._closing = False
        self._connected = False  # the hub's on_connected succeeded
        self._torn_down = False
        self._timers = ConnectionTimers(
            asyncio.get_running_loop().time(), handler.options.keepalive_interval, handler.clock
        )
        # Made when first needed: most connections never stream, many never invoke.
        self._invocations: InvocationQueue | None = None
        self._streams: StreamTracker | None = None
        self._close_error: Exception | None = None
        # Created on demand: most connections never have anyone waiting for their end.
        self._closed_event: asyncio.Event | None = None
        self._finished = False
        # Client results awaited from this client: invocation id -> who gets the Completion.
        self.results: dict[str, Callable[[CompletionMessage], None]] = {}
        # Stateful reconnect (negotiated, WebSockets, handshake version 2): the message
        # buffer exists only on a connection that turned it on.
        self.stateful_allowed = False
        self.detached = False
        self._buffer: MessageBuffer | None = None
        self._replay_waiter: asyncio.Future[None] | None = None
        handler.add_connection(self)  # its timers run from the next tick

    # -- writing ---------------------------------------------------------------------------

    def write_serialized(self, message: SerializedMessage) -> None:
        """Queue a message that may be shared by many recipients (fan-out path)."""
        protocol = self.protocol
        if protocol is None or self._closing:
            return
        try:
            data = message.get(protocol)
        except Exception:  # logged once for every recipient (SerializedMessage.get)
            return
        if self._buffer is not None:
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
            logger.exception("%s: cannot encode a %s", self.log_name, type(message).__name__)
            self._close_error = exc
            self.close(CLOSE_ERROR, allow_reconnect=True)
            return
        if self._buffer is not None and type(message) in TRACKED:
            self._track(data)
        self.handler.stats.messages_sent += 1
        if not self.outbound.write(data):
            self._overflow()

    # -- stateful reconnect ----------------------------------------------------------------

    def _track(self, data: bytes) -> None:
        """Number an outgoing trackable message and keep it until the client acks it."""
        assert self._buffer is not None
        if not self._buffer.track(data):
            logger.warning("%s: too many unacknowledged messages", self.log_name)
            self._overflow()

    def _on_ack(self, sequence_id: int) -> None:
        assert self._buffer is not None
        self._buffer.ack(sequence_id)
        self._replay_waiter = wake(self._replay_waiter)

    @property
    def replay_size(self) -> int:
        """Bytes sent and not yet acknowledged (0 without stateful reconnect)."""
        return self._buffer.size if self._buffer is not None else 0

    async def replay_room(self, high_water: int) -> None:
        """Wait until unacknowledged bytes are at most ``high_water`` (stream producers)."""
        while self.replay_size > high_water and not self._closing:
            waiter = self._replay_waiter
            if waiter is None:
                waiter = self._replay_waiter = asyncio.get_running_loop().create_future()
            await waiter

    def detach(self) -> None:
        """The transport dropped without a close: keep the connection for a reconnect."""
        self.detached = True
        if self._buffer is not None:
            self._buffer.detached()

    def resume(self) -> None:
        """A new transport took over: send Sequence and the unacknowledged backlog first."""
        self.outbound.discard()  # what piled up while detached is in the replay (or is pings)
        buffer = self._buffer
        protocol = self.protocol
        assert buffer is not None and protocol is not None
        first, backlog = buffer.resume()
        self.outbound.write(protocol.write_message(SequenceMessage(first)))
        for data in backlog:
            self.outbound.write(data)
        self.detached = False

    def take_over(self, protocol: HubProtocol, buffer: MessageBuffer) -> None:
        """Go on with a connection another node started (``on_connected`` ran there)."""
        self.protocol = protocol
        self._buffer = buffer
        self._connected = self.detached = True
        if self.handler.options.close_on_token_expiry and self.user is not None:
            self._timers.expires_at = self.user.expires_at

    async def settle(self) -> None:
        """Wait until the invocations received so far have answered."""
        if self._invocations is not None:
            await self._invocations.idle()

    @property
    def stateful(self) -> bool:
        """True when this connection uses stateful reconnect."""
        return self._buffer is not None

    @property
    def message_buffer(self) -> MessageBuffer | None:
        """Stateful reconnect's sequence numbers and replay (None when it is off)."""
        return self._buffer

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
        rest = self.receive_now(data, binary)
        if rest is not None:
            await rest

    def receive_now(self, data: bytes, binary: bool | None = None) -> Awaitable[None] | None:
        """:meth:`receive` as far as it goes without waiting (plain invocations run here);
        what is left, if anything, for the caller to await before it feeds more bytes."""
        if self._closing:
            return None
        self._timers.heard = True
        protocol = self.protocol
        if protocol is None:
            return self._receive_handshake(data)
        if binary is False and protocol.is_binary:
            # A text frame cannot carry MessagePack. The reverse is allowed: the Java client
            # sends JSON in binary frames, and the reference server ignores the frame type.
            self._fail(ProtocolError("a text frame on a MessagePack connection"))
            return None
        return self._receive_messages(protocol, data)

    async def _receive_handshake(self, data: bytes) -> None:
        if not await self._handshake(data) or not self._inbuf:
            return
        data = bytes(self._inbuf)
        self._inbuf.clear()
        assert self.protocol is not None
        rest = self._receive_messages(self.protocol, data)
        if rest is not None:
            await rest

    def _receive_messages(self, protocol: HubProtocol, data: bytes) -> Awaitable[None] | None:
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
            return None
        if consumed < len(data):
            self._inbuf += data[consumed:]
        self.handler.stats.messages_received += len(messages)
        stateful = self._buffer is not None
        for i, message in enumerate(messages):
            if type(message) is InvocationMessage and not stateful and not message.stream_ids:
                space = (self._invocations or self._invocation_queue()).put(message)
                if space is not None:
                    return self._handle_rest(messages[i + 1 :], space)
            else:
                return self._handle_rest(messages[i:], None)
            if self._closing:
                return None
        return None

    async def _handle_rest(self, messages: list[HubMessage], space: Awaitable[None] | None) -> None:
        if space is not None:
            await space
            if self._closing:
                return
        for message in messages:
            await self._handle(message)
            if self._closing:
                return

    def _invocation_queue(self) -> InvocationQueue:
        run = functools.partial(self.handler.dispatcher.invoke, self)
        self._invocations = InvocationQueue(self, run)
        return self._invocations

    @property
    def stream_tracker(self) -> StreamTracker:
        """The connection's streams (made on first use)."""
        streams = self._streams
        if streams is None:
            streams = self._streams = StreamTracker()
        return streams

    async def _handshake(self, data: bytes) -> bool:
        options = self.handler.options
        self._inbuf += data
        handshake = read_handshake(
            self._inbuf,
            max_message_size=options.max_message_size,
            protocols=options.protocols,
            supports_binary=self.supports_binary,
            detailed_errors=options.detailed_errors,
        )
        if handshake is None:
            return False
        protocol = handshake.protocol
        if protocol is None:
            self._handshake_failed(handshake.error or CANCELED)
            return False
        # The protocol is set first so the reply goes out in that protocol's frame type.
        self.protocol = protocol
        # Version 2 from a client that negotiated it turns stateful reconnect on; a lower
        # version quietly leaves it off, as the reference server does.
        if self.stateful_allowed and handshake.version >= 2:
            # Clients acknowledge about once a second: the replay holds a second of traffic
            # or so. Fan-out writes cannot wait (streams do, in replay_room): a wide bound.
            self._buffer = MessageBuffer(max(4 * options.max_buffer_size, REPLAY_MIN))
        self.outbound.write(HANDSHAKE_SUCCESS)
        stats = self.handler.stats
        key = (self.transport, protocol.name)
        stats.connects[key] = stats.connects.get(key, 0) + 1
        try:
            await self.handler.lifetime.on_connected(self)
            await self.handler.dispatcher.on_connected(self)
        except Exception as exc:
            logger.exception("%s: on_connected failed", self.log_name)
            self.close(dispatch.error_text(CLOSE_ERROR, exc, options.detailed_errors), False)
            return False
        self._connected = True
        if options.close_on_token_expiry:
            self._timers.expires_at = self.user.expires_at if self.user is not None else None
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
        buffer = self._buffer
        if buffer is not None:
            if kind in TRACKED:
                if not buffer.accept():
                    return  # before the client's Sequence, or replayed and handled already
            elif kind is AckMessage:
                assert isinstance(message, AckMessage)
                self._on_ack(message.sequence_id)
                return
            elif kind is SequenceMessage:
                assert isinstance(message, SequenceMessage)
                if not buffer.sequence(message.sequence_id):
                    self._fail(
                        ProtocolError("Sequence ID greater than amount of messages we've received.")
                    )
                return
        if kind is InvocationMessage:
            assert isinstance(message, InvocationMessage)
            if message.stream_ids:
                self.handler.dispatcher.start_upload_invocation(self, message)
            else:
                space = (self._invocations or self._invocation_queue()).put(message)
                if space is not None:
                    await space
        elif kind is PingMessage:
            self._timers.ping_seen = True
        elif kind is StreamInvocationMessage:
            assert isinstance(message, StreamInvocationMessage)
            self.handler.dispatcher.start_stream(self, message)
        elif kind is CancelInvocationMessage:
            assert isinstance(message, CancelInvocationMessage)
            if self._streams is not None:
                self._streams.cancel(message.invocation_id)
        elif kind is StreamItemMessage:
            assert isinstance(message, StreamItemMessage)
            if self._streams is not None:  # else: a made-up id, or the method returned
                await self._streams.feed(message.invocation_id, message.item)
        elif kind is CompletionMessage:
            assert isinstance(message, CompletionMessage)
            streams = self._streams
            if streams is None or not streams.finish_upload(message.invocation_id, message.error):
                waiter = self.results.pop(message.invocation_id, None)
                if waiter is not None:  # else: an unknown id, ignored as the reference does
                    waiter(message)
        elif kind is CloseMessage:
            assert isinstance(message, CloseMessage)
            if message.error:
                self._close_error = HubException(message.error)
            self.close(None, False)

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

        A draining server closes connections this way: an invocation the server took (or
        one reading uploads) gets its result before the Close, and one the client sends
        after it is failed by the client (it fails pending invocations on a Close).
        """
        await self.settle()
        if self._streams is not None:
            await self._streams.uploads_read()
        self.close(None, allow_reconnect=True)

    def abort(self, allow_reconnect: bool = False) -> None:
        """End the connection from the server side (hub code, an admin, a slow client)."""
        self.close(None, allow_reconnect)

    @property
    def log_name(self) -> str:
        """How log records name this connection: its hub and id."""
        return f"hub {self.handler.hub_type.__qualname__} connection {self.connection_id}"

    @property
    def caller_context(self) -> HubCallerContext:
        """The ``self.context`` of hubs serving this connection."""
        context = self._caller_context
        if context is None:
            context = self._caller_context = HubCallerContext(self)
        return context

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

    def fail_results(self, error: str) -> None:
        """Fail every client result awaited from this client with ``error``."""
        results, self.results = self.results, {}
        for invocation_id, waiter in results.items():
            try:
                waiter(CompletionMessage.with_error(invocation_id, error))
            except Exception:
                logger.exception("%s: failing a pending client result failed", self.log_name)

    @property
    def closing(self) -> bool:
        """True once the connection is ending."""
        return self._closing

    async def transport_closed(
        self, exception: Exception | None = None, moved: bool = False
    ) -> None:
        """The transport has ended: tear down exactly once and run ``on_disconnected``
        (unless the connection ``moved`` to another node, where it goes on)."""
        if self._torn_down:
            return
        self._torn_down = True
        self._closing = True
        self.outbound.close()
        self.handler.connections.pop(self.connection_id, None)
        # Streams to the client stop (their generators are closed); an invocation that is
        # running finishes, as in ASP.NET Core, and queued ones are dropped. Upload streams
        # fail, so methods reading them stop instead of taking a cut-off stream as whole.
        if self._streams is not None:
            self._streams.abort()
        self.fail_results(DISCONNECTED)
        if self._invocations is not None:
            self._invocations.clear()
        exc = exception if exception is not None else self._close_error
        try:
            if self.protocol is not None:
                stats = self.handler.stats
                key = (self.transport, self.protocol.name)
                stats.disconnects[key] = stats.disconnects.get(key, 0) + 1
                try:
                    if self._connected and not moved:
                        await self.handler.dispatcher.on_disconnected(self, exc)
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

    def tick(self, now: float) -> float | None:
        """Run the timers; returns when they are next due (None once the connection ends)."""
        if self._closing:
            return None
        options = self.handler.options
        timers = self._timers
        if self.protocol is None:
            if timers.handshake_expired(now, options.handshake_timeout):
                self._handshake_failed(CANCELED)
            return now  # every tick until the handshake
        buffer = self._buffer
        if buffer is not None and not self.detached:
            # At most one Ack a tick (a second), as the reference server does.
            ack = buffer.ack_due(self._invocations)
            if ack is not None:
                self.write_message(AckMessage(ack))
        if self.send_pings and timers.ping_due(now, options.keepalive_interval):
            self.write_message(PingMessage())
        if timers.token_expired():
            # As ASP.NET Core's CloseOnAuthenticationExpiration: the client may reconnect
            # with a fresh token.
            logger.info("%s: the user's token expired", self.log_name)
            self.close(None, allow_reconnect=True)
            return None
        if timers.client_timed_out(now, options.client_timeout):
            logger.info("%s: client timeout", self.log_name)
            self._close_error = TimeoutError(CLIENT_TIMEOUT)
            self.close(CLOSE_ERROR, allow_reconnect=True)
        # Every tick for a stateful connection (its Acks), else when the timers are due.
        return now if buffer is not None else timers.next_due(now, options, self.send_pings)
