"""The subscriber connection: one SUBSCRIBE connection for every channel the node's hubs need.

Each message goes to a plain (synchronous) handler. The connection is read directly:
redis-py's PubSub object costs more per message than the rest of a delivery (a retry
wrapper and, over RESP3, a debug log line built whether or not it is logged).

A second task sends SUBSCRIBE/UNSUBSCRIBE commands, and PINGs every ``ping_interval`` so
that a socket that died silently, or a frozen Redis, is found: a PING that nothing answers
within ``reply_timeout`` ends the connection (the reader only stamps the time of each read).
After reconnecting, every channel held is subscribed again and the resubscribe hooks run
(acks published meanwhile were lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError, ResponseError

from .connect import NETWORK_ERRORS, HeldConnection, backoff, close_connection, open_connection
from .outbox import BackplaneUnavailable, BusStats, Outbox
from .slots import by_slot, key_slot, redirection

logger = logging.getLogger("hubplane.redis")

Handler = Callable[[bytes, bytes], None]

SUBSCRIBE_CONFIRM_TIMEOUT = 5.0
# SUBSCRIBEs sent for one channel before a caller waiting for its confirmation gives up.
SUBSCRIBE_ATTEMPTS = 3
# Subscribed to when no other channel is, so that a connection is in pub/sub mode all along.
IDLE_CHANNEL = b"hubplane:idle"


class LinkState(Protocol):
    """Where a subscriber reports its connection's state (the outbox has these too)."""

    reader_up: bool
    last_error: str | None


class Subscriber(HeldConnection):
    """The node's subscribing connection to Redis, its reading task and its sending task.

    It reports whether it is up to the ``outbox`` (publishes are buffered while it is not).
    """

    task_name = "hubplane-redis-reader"

    def __init__(
        self,
        client: aioredis.Redis,
        outbox: Outbox | LinkState,
        stats: BusStats,
        url: str,
        sharded: bool = False,
    ) -> None:
        super().__init__(client, url, asyncio.Event())  # woken when there is a command to send
        #: Where the connection's state is reported (the bus's outbox, or one shard's state).
        self.outbox = outbox
        #: SSUBSCRIBE (sharded pub/sub, one Redis Cluster shard) instead of SUBSCRIBE.
        self.sharded = sharded
        self._message = b"smessage" if sharded else b"message"
        self._confirmation = b"ssubscribe" if sharded else b"subscribe"
        #: Subscribed to when no other channel is (in a shard: a channel of one of its slots).
        self.idle_channel = IDLE_CHANNEL
        #: Called with a channel Redis says this connection does not serve (any more).
        self.on_moved: Callable[[bytes], None] | None = None
        #: Called each time the connection fails.
        self.on_lost: Callable[[], None] | None = None
        self.stats = stats
        #: Seconds between keep-alive PINGs on the idle subscriber connection.
        self.ping_interval = 5.0
        self._handlers: dict[bytes, Handler] = {}
        self._queue: deque[tuple[bool, bytes]] = deque()  # (subscribe?, channel) to send
        self._confirm: dict[bytes, list[asyncio.Future[None]]] = {}
        #: Seconds Redis has to confirm a SUBSCRIBE, and how many are sent before giving up.
        self.confirm_timeout = SUBSCRIBE_CONFIRM_TIMEOUT
        self.confirm_attempts = SUBSCRIBE_ATTEMPTS
        self._hooks: list[Callable[[], None]] = []
        self._last_read = 0.0

    def on_resubscribed(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` each time the subscriber is back after losing its connection."""
        self._hooks.append(hook)

    # -- subscribing -------------------------------------------------------------------------

    async def subscribe(self, channel: bytes, handler: Handler, confirm: bool = True) -> None:
        """Deliver messages on ``channel`` to ``handler(channel, data)``.

        With ``confirm`` (and Redis reachable) this returns once Redis has confirmed the
        subscription, so a message published right after cannot be missed. A confirmation
        that does not come within ``confirm_timeout`` is a failure, not a success: the
        SUBSCRIBE goes again, up to ``confirm_attempts`` times in all, and then this raises
        :class:`BackplaneUnavailable`. While the connection is down there is nothing to wait
        for: the next connection subscribes to every channel held.
        """
        new = channel not in self._handlers
        self._handlers[channel] = handler
        if not new and channel not in self._confirm:
            return  # subscribed and confirmed
        if new:
            self._send_subscribe(channel)
        if confirm and self.outbox.reader_up:
            await self._confirmed(channel)

    def _send_subscribe(self, channel: bytes) -> None:
        self._queue.append((True, channel))
        self._wake.set()

    async def _confirmed(self, channel: bytes) -> None:
        """Wait for Redis to confirm ``channel`` (a second caller waits for the same reply),
        subscribing again each time the confirmation is late."""
        loop = asyncio.get_running_loop()
        for attempt in range(1, self.confirm_attempts + 1):
            future: asyncio.Future[None] = loop.create_future()
            waiters = self._confirm.setdefault(channel, [])
            waiters.append(future)
            try:
                await asyncio.wait_for(future, self.confirm_timeout)
                return
            except TimeoutError:
                pass
            finally:
                with contextlib.suppress(ValueError):
                    waiters.remove(future)
                if not waiters and self._confirm.get(channel) is waiters:
                    del self._confirm[channel]
            if self._closing or channel not in self._handlers or not self.outbox.reader_up:
                return  # stopping, unsubscribed meanwhile, or the connection is being replaced
            self.stats.resubscribes += 1
            logger.warning(
                "Redis did not confirm the subscription to %r within %g s (attempt %d of %d)",
                channel,
                self.confirm_timeout,
                attempt,
                self.confirm_attempts,
            )
            if attempt < self.confirm_attempts:
                self._send_subscribe(channel)
        raise BackplaneUnavailable(
            f"Redis did not confirm the subscription to {channel!r} "
            f"({self.confirm_attempts} attempts of {self.confirm_timeout:g} s)"
        )

    def forget(self, channel: bytes) -> None:
        """Drop ``channel`` without a word to Redis (it unsubscribed us itself)."""
        self._handlers.pop(channel, None)

    def unsubscribe(self, channel: bytes) -> None:
        """Stop receiving ``channel``."""
        if self._handlers.pop(channel, None) is None:
            return
        self._queue.append((False, channel))
        self._wake.set()

    # -- the connection ----------------------------------------------------------------------

    async def _run(self) -> None:
        outbox = self.outbox
        attempt = 0
        while not self._closing:
            connection: AbstractConnection | None = None
            sender: asyncio.Task[None] | None = None
            try:
                connection = await open_connection(self.client, self.reply_timeout)
                # No read timeout (a URL's socket_timeout would cut idle reads): the sender's
                # PINGs find a dead connection instead.
                connection.socket_timeout = None
                self.connection = connection
                # Start from scratch on every connection: subscribe to every channel held.
                self._queue.clear()
                channels = list(self._handlers)
                await self._send(connection, True, channels or [self.idle_channel])
                if attempt:
                    self.stats.reconnects += 1
                    logger.warning(
                        "Redis subscriber reconnected to %s (%d channels)",
                        self.url,
                        len(channels),
                    )
                    for hook in self._hooks:
                        try:
                            hook()
                        except Exception:
                            logger.exception("a Redis resubscribe hook failed")
                attempt = 0
                outbox.reader_up = True
                self.ready.set()
                loop = asyncio.get_running_loop()
                sender = loop.create_task(self._run_sender(connection))
                await self._read_forever(connection)
            except asyncio.CancelledError:
                raise
            except NETWORK_ERRORS + (RedisError,) as exc:
                if outbox.reader_up:
                    logger.error("Redis subscriber lost its connection to %s: %s", self.url, exc)
                if self.on_lost is not None:
                    self.on_lost()
                outbox.reader_up = False
                outbox.last_error = str(exc) or type(exc).__name__
                await asyncio.sleep(backoff(attempt))
                attempt += 1
            finally:
                outbox.reader_up = False
                self.connection = None  # tells the sender to stop, should a cancel be lost
                if sender is not None:
                    # Ended here, on the loop: a sender left to the garbage collector
                    # mid-write would try to disconnect with no loop running.
                    sender.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await sender
                # Callers waiting for a confirmation wait on: the next connection subscribes
                # to every channel held, and its replies confirm them (or they time out).
                # When stopping there is no next connection: they are let go.
                if self._closing:
                    for waiters in self._confirm.values():
                        for fut in waiters:
                            if not fut.done():
                                fut.set_result(None)
                await close_connection(connection)

    async def _run_sender(self, connection: AbstractConnection) -> None:
        """Send queued SUBSCRIBE/UNSUBSCRIBE commands in order, coalescing runs.

        It PINGs every ``ping_interval`` seconds, and drops the connection when nothing at
        all has come back within ``reply_timeout`` of a PING, or for three intervals: a
        socket that died silently (a NAT or balancer timeout) or a frozen Redis would
        otherwise leave the node deaf for good, and publishing as if it heard.
        """
        queue = self._queue
        loop = asyncio.get_running_loop()
        pinged = 0.0  # when the PING not answered yet went out (0.0: none)
        next_ping = loop.time() + self.ping_interval
        # (Python 3.11's wait_for may swallow a cancel that meets a wake-up: the loop also
        # ends when the reader has moved on from this connection.)
        while self.connection is connection and not self._closing:
            if not queue:
                self._wake.clear()
                until = pinged + self.reply_timeout if pinged else next_ping
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(until - loop.time(), 0.0))
            now = loop.time()
            if pinged and self._last_read >= pinged:
                pinged = 0.0  # Redis has spoken since: the connection is alive
            if (pinged and now - pinged >= self.reply_timeout) or (
                now - self._last_read > 3 * self.ping_interval
            ):
                logger.error("Redis subscriber heard nothing for too long: reconnecting")
                await connection.disconnect()
                return
            if not queue:
                if not pinged and now >= next_ping:
                    try:
                        await connection.send_command("PING", check_health=False)
                    except NETWORK_ERRORS:
                        return
                    pinged = now
                    next_ping = now + self.ping_interval
                continue
            action, channel = queue.popleft()
            run = [channel]
            while queue and queue[0][0] == action and len(run) < 512:
                run.append(queue.popleft()[1])
            try:
                await self._send(connection, action, run)
            except NETWORK_ERRORS:
                return  # the reader notices, reconnects and resubscribes everything

    async def _send(
        self, connection: AbstractConnection, subscribe: bool, run: list[bytes]
    ) -> None:
        """SUBSCRIBE (or UNSUBSCRIBE) ``run``; sharded, one SSUBSCRIBE per slot (Redis
        refuses channels of several slots in one)."""
        if not self.sharded:
            await connection.send_command("SUBSCRIBE" if subscribe else "UNSUBSCRIBE", *run)
            return
        verb = "SSUBSCRIBE" if subscribe else "SUNSUBSCRIBE"
        for channels in by_slot(run):
            await connection.send_command(verb, *channels)

    def _refused(self, error: ResponseError) -> None:
        """Tell ``on_moved`` of the channels a shard refused (those of the slot it names)."""
        if self.on_moved is None:
            return
        moved = redirection(error)
        channels = [c for c in self._handlers if moved and key_slot(c) == moved[1]]
        for channel in channels or [b""]:
            self.on_moved(channel)

    async def _read_forever(self, connection: AbstractConnection) -> None:
        read = connection.read_response
        loop_time = asyncio.get_running_loop().time
        self._last_read = loop_time()
        handlers = self._handlers
        stats = self.stats
        message, confirmation = self._message, self._confirmation
        sharded = self.sharded
        while not self._closing:
            try:
                response = await read()
            except ResponseError as exc:
                if not sharded:
                    raise
                # A shard refusing a SSUBSCRIBE or SUNSUBSCRIBE (MOVED: the slot is another
                # master's now): not a failed connection, but a map to read again.
                self._last_read = loop_time()
                logger.info("Redis Cluster refused a subscription change on %s: %s", self.url, exc)
                self._refused(exc)
                continue
            self._last_read = loop_time()
            if response is None:
                continue
            # ['message', channel, data] is by far the most common reply.
            if response[0] == message:
                stats.received += 1
                channel = response[1]
                handler = handlers.get(channel)
                if handler is not None:
                    try:
                        handler(channel, response[2])
                    except Exception:
                        logger.exception("handling a message on %r failed", channel)
            elif response[0] == confirmation:
                waiters = self._confirm.pop(response[1], None)
                if waiters:
                    for fut in waiters:
                        if not fut.done():
                            fut.set_result(None)
            elif response[0] == b"sunsubscribe" and response[1] in handlers:
                # Redis Cluster moved the channel's slot away (a migration, a failover).
                if self.on_moved is not None:
                    self.on_moved(response[1])
