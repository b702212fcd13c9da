"""One node's two Redis connections: a pipelining writer and a subscriber.

Every hub on the node shares them. The writer is a single task that drains a queue into
pipelined commands, so a burst of PUBLISHes costs a few round trips, not one each, and
commands keep the order they were queued in (a presence query sees the writes queued
before it). The subscriber holds one SUBSCRIBE connection for every channel the node's
hubs need, dispatching each message to a plain (synchronous) handler.

Both hold one redis-py connection each for their whole life (redis-py opens it: TLS, AUTH,
SELECT, Sentinel) and talk to it directly: a batch is packed by hiredis in C and written in
one call, and replies are read one by one. redis-py's Pipeline and PubSub objects cost more
per message than the rest of a send (a pool checkout, a retry wrapper and timeouts on every
batch; on every pub/sub message a retry wrapper and, over RESP3, a debug log line built
whether or not it is logged), so the hot paths keep clear of them.

When Redis goes away both sides reconnect with backoff. Meanwhile publishes are kept up to
a bound and flushed after reconnecting (the oldest are dropped beyond it, and counted);
while it is there the queue has a bound too (``queue_limit``, the same policy);
state writes are dropped (the owners rewrite their state on reconnect) and queries fail
at once with :class:`BackplaneUnavailable`. A Redis that stops answering (frozen, or a
half-open connection) counts as gone after ``reply_timeout`` seconds, so nobody waits on it
for longer.

This module is the facade; the parts live beside it: ``connect`` (URLs, raw connections),
``outbox`` (the queue policy, sans-I/O), ``writer``, ``subscriber``, and ``keys`` (every key
and Lua script).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .cluster_subscriber import ClusterSubscriber
from .cluster_writer import ClusterWriter
from .connect import (
    BACKOFF_FIRST,
    BACKOFF_MAX,
    REPLY_TIMEOUT,
    connect_redis,
    is_cluster_url,
    safe_url,
)
from .keys import HISTORY_PUBLISH, PUBLISH_MANY, SHARD_HISTORY_PUBLISH
from .outbox import (
    KEEP,
    MAX_BATCH,
    PUBLISH,
    QUERY,
    QUEUE_LIMIT,
    STATE,
    BackplaneUnavailable,
    BusStats,
    Outbox,
)
from .subscriber import SUBSCRIBE_CONFIRM_TIMEOUT, Handler, Subscriber
from .topology import Topology
from .writer import FLUSH_DELAY, ReconnectHook, Writer

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "FLUSH_DELAY",
    "KEEP",
    "MAX_BATCH",
    "PUBLISH",
    "QUERY",
    "QUEUE_LIMIT",
    "REPLY_TIMEOUT",
    "STATE",
    "SUBSCRIBE_CONFIRM_TIMEOUT",
    "BackplaneUnavailable",
    "PUBSUB_MODES",
    "BusStats",
    "Handler",
    "ReconnectHook",
    "RedisBus",
    "connect_redis",
]

logger = logging.getLogger("hubplane.redis")

#: How hub channels travel: ``classic`` PUBLISH/SUBSCRIBE (one Redis, or a cluster shared
#: with .NET nodes), ``sharded`` SPUBLISH/SSUBSCRIBE (Redis Cluster, Redis 7+).
PUBSUB_MODES = ("sharded", "classic")


class RedisBus:
    """The node's Redis connections (one writer, one subscriber), shared by all hubs."""

    def __init__(
        self,
        url: str,
        *,
        buffer_limit: int = 10000,
        reply_timeout: float = REPLY_TIMEOUT,
        queue_limit: int = QUEUE_LIMIT,
        pubsub: str | None = None,
    ) -> None:
        self.url = url
        #: On a Redis Cluster (``redis+cluster://``): one connection per master.
        self.cluster = is_cluster_url(url)
        if pubsub is None:
            pubsub = "sharded" if self.cluster else "classic"
        if pubsub not in PUBSUB_MODES:
            raise ValueError(f"pubsub must be one of {', '.join(PUBSUB_MODES)}, not {pubsub!r}")
        if pubsub == "sharded" and not self.cluster:
            raise ValueError("sharded pub/sub needs a Redis Cluster URL (redis+cluster://)")
        #: Channels over sharded pub/sub (SSUBSCRIBE / SPUBLISH, on each channel's shard).
        self.sharded = pubsub == "sharded"
        self.stats = BusStats()
        wake = asyncio.Event()
        outbox = self._outbox = Outbox(
            self.stats, wake.set, buffer_limit=buffer_limit, queue_limit=queue_limit
        )
        logged_url = safe_url(url)
        self._writer: Writer
        self._subscriber: Subscriber | ClusterSubscriber
        if self.cluster:
            # Scripts cannot publish on several shards: each publish is a command of its own.
            outbox.publish_script = False
            self._writer = ClusterWriter(
                Topology(url), outbox, wake, self.stats, logged_url, self.sharded
            )
            self._subscriber = ClusterSubscriber(
                Topology(url), outbox, self.stats, logged_url, self.sharded
            )
        else:
            self._writer = Writer(connect_redis(url), outbox, wake, self.stats, logged_url)
            self._subscriber = Subscriber(connect_redis(url), outbox, self.stats, logged_url)
        self.reply_timeout = reply_timeout
        #: How long start() waits for Redis before going on in the background.
        self.connect_wait = 5.0
        # The queueing calls go straight to the outbox: no extra call per message.
        self.publish = outbox.publish
        self.publish_history = outbox.publish_history
        self.command = outbox.command
        self._writer.register_script(PUBLISH_MANY)
        # With sharded pub/sub the history publish SPUBLISHes (from the channel's shard).
        history = SHARD_HISTORY_PUBLISH if self.sharded else HISTORY_PUBLISH
        self.history_sha = outbox.history_sha = self._writer.register_script(history)

    # -- state -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while both the writer and the subscriber are connected."""
        return self._outbox.writer_up and self._outbox.reader_up

    @property
    def writer_up(self) -> bool:
        """True while the writer is connected (queries and state writes go out)."""
        return self._outbox.writer_up

    @property
    def queued(self) -> int:
        """Commands waiting for the writer (held through an outage, up to the bound)."""
        return self._outbox.queued

    @property
    def last_error(self) -> str | None:
        """Why Redis was last found unreachable (None once the writer is back)."""
        return self._outbox.last_error

    @property
    def buffer_limit(self) -> int:
        """Publishes kept through an outage (the oldest are dropped beyond it)."""
        return self._outbox.buffer_limit

    @buffer_limit.setter
    def buffer_limit(self, value: int) -> None:
        self._outbox.buffer_limit = value

    @property
    def queue_limit(self) -> int:
        """Commands queued at most while Redis is reachable (the oldest publish is dropped,
        and counted, beyond it)."""
        return self._outbox.queue_limit

    @queue_limit.setter
    def queue_limit(self, value: int) -> None:
        self._outbox.queue_limit = value

    @property
    def max_batch(self) -> int:
        """Commands per pipelined round trip (1 turns pipelining off, for comparison)."""
        return self._outbox.max_batch

    @max_batch.setter
    def max_batch(self, value: int) -> None:
        self._outbox.max_batch = value

    @property
    def publish_script(self) -> bool:
        """Send runs of publishes as one Lua call (False: one PUBLISH command each)."""
        return self._outbox.publish_script

    @publish_script.setter
    def publish_script(self, value: bool) -> None:
        self._outbox.publish_script = value

    @property
    def flush_delay(self) -> float:
        """Seconds the writer holds its queue after reconnecting (see FLUSH_DELAY)."""
        return self._writer.flush_delay

    @flush_delay.setter
    def flush_delay(self, value: float) -> None:
        self._writer.flush_delay = value

    @property
    def reply_timeout(self) -> float:
        """Seconds Redis has to answer (a batch, a connect, a PING) before the connection
        counts as failed: waiting queries fail, publishes are kept, both sides reconnect."""
        return self._writer.reply_timeout

    @reply_timeout.setter
    def reply_timeout(self, value: float) -> None:
        if not value > 0:
            raise ValueError("reply_timeout must be a positive number of seconds")
        self._writer.reply_timeout = value
        self._subscriber.reply_timeout = value

    @property
    def confirm_timeout(self) -> float:
        """Seconds Redis has to confirm a SUBSCRIBE before it is sent again (see subscribe)."""
        return self._subscriber.confirm_timeout

    @confirm_timeout.setter
    def confirm_timeout(self, value: float) -> None:
        self._subscriber.confirm_timeout = value

    @property
    def ping_interval(self) -> float:
        """Seconds between keep-alive PINGs on the idle subscriber connection."""
        return self._subscriber.ping_interval

    @ping_interval.setter
    def ping_interval(self, value: float) -> None:
        self._subscriber.ping_interval = value

    def on_resubscribed(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` each time the subscriber is back after losing its connection."""
        self._subscriber.on_resubscribed(hook)

    def on_reconnect(self, hook: ReconnectHook) -> None:
        """Run ``hook`` after the writer has (re)connected, before buffered publishes go out."""
        self._writer.on_reconnect(hook)

    def register_script(self, source: str) -> str:
        """Remember a Lua script (loaded on every connect); returns its SHA1."""
        return self._writer.register_script(source)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, wait: float | None = None) -> None:
        """Start the writer and the subscriber; wait up to ``wait`` seconds for Redis.

        A Redis that is not there yet is not an error: the node serves local traffic and
        keeps retrying in the background.
        """
        if wait is None:
            wait = self.connect_wait
        writer, subscriber = self._writer, self._subscriber
        writer.start()
        subscriber.start()
        try:
            await asyncio.wait_for(
                asyncio.gather(writer.ready.wait(), subscriber.ready.wait()), wait
            )
        except TimeoutError:
            logger.warning(
                "Redis at %s is not reachable yet; retrying in the background", writer.url
            )

    async def flush(self, timeout: float = 2.0) -> bool:
        """Wait until Redis has replied to every command queued so far (while connected, up
        to ``timeout`` seconds); True when nothing is left."""
        return await self._writer.flush(timeout)

    async def stop(self) -> None:
        """Flush what is queued (briefly), then close both connections."""
        # Closing a socket with replies unread resets it, and Redis may then drop the
        # commands it had not read yet: the batch on the wire is waited for too.
        await self.flush(2.0)
        writer, subscriber = self._writer, self._subscriber
        writer.cancel()
        subscriber.cancel()
        await writer.stopped()
        await subscriber.stopped()
        self._outbox.fail_pending(BackplaneUnavailable("the node is stopping"), keep_queued=False)
        await writer.close()
        await subscriber.close()

    # -- writing (publish and command are the outbox's own, bound in __init__) ---------------

    async def query(self, *args: Any) -> Any:
        """Run a command after everything queued before it and return its reply.

        Raises :class:`BackplaneUnavailable` at once while Redis is unreachable, and after
        at most about ``reply_timeout`` seconds when Redis stops answering.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._outbox.query(args, future)
        return await future

    def query_soon(self, *args: Any) -> asyncio.Future[Any]:
        """:meth:`query` without a coroutine: the future of the reply (for callbacks).

        Raises :class:`BackplaneUnavailable` at once while Redis is unreachable; the future
        fails with it when Redis stops answering.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._outbox.query(args, future)
        return future

    async def publish_counted(self, channel: bytes, data: bytes) -> int:
        """PUBLISH (in order with the other publishes) and return how many received it.

        Raises :class:`BackplaneUnavailable` at once while Redis is unreachable, and after
        at most about ``reply_timeout`` seconds when Redis stops answering.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._outbox.publish_counted(channel, data, future)
        return int(await future)

    # -- subscribing -------------------------------------------------------------------------

    async def subscribe(self, channel: bytes, handler: Handler, confirm: bool = True) -> None:
        """Deliver messages on ``channel`` to ``handler(channel, data)``.

        With ``confirm`` (and Redis reachable) this returns once Redis has confirmed the
        subscription, so a message published right after cannot be missed; a confirmation
        that is late is sent for again, and raises :class:`BackplaneUnavailable` in the end.
        """
        await self._subscriber.subscribe(channel, handler, confirm)

    def unsubscribe(self, channel: bytes) -> None:
        """Stop receiving ``channel``."""
        self._subscriber.unsubscribe(channel)
