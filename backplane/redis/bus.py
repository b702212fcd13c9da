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
state writes are dropped (the owners rewrite their state on reconnect) and queries fail
at once with :class:`BackplaneUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, RedisError, ResponseError

from .connect import BACKOFF_FIRST, BACKOFF_MAX, connect_redis, safe_url
from .connect import NETWORK_ERRORS as _NETWORK_ERRORS
from .connect import backoff as _backoff
from .connect import close_connection as _close
from .connect import open_connection as _open
from .connect import read_reply as _reply
from .connect import round_trip as _round_trip
from .keys import PUBLISH_MANY
from .outbox import KEEP, MAX_BATCH, PUBLISH, QUERY, STATE, BackplaneUnavailable, BusStats

# Re-exported: what importers of the bus used before connect.py and outbox.py existed.
__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "KEEP",
    "MAX_BATCH",
    "PUBLISH",
    "QUERY",
    "STATE",
    "BackplaneUnavailable",
    "BusStats",
    "RedisBus",
    "connect_redis",
]

logger = logging.getLogger("hubplane.redis")

Handler = Callable[[bytes, bytes], None]
ReconnectHook = Callable[[], Awaitable[None]]

# After a reconnect the writer holds its queue this long, so the other nodes' subscribers
# (retrying at most BACKOFF_MAX apart) are back before the buffered publishes go out.
FLUSH_DELAY = 1.5
SUBSCRIBE_CONFIRM_TIMEOUT = 5.0


class _Command:
    __slots__ = ("kind", "args", "future")

    def __init__(self, kind: int, args: tuple[Any, ...], future: asyncio.Future[Any] | None):
        self.kind = kind
        self.args = args
        self.future = future


_pack = hiredis.pack_command


def _is_noscript(result: object) -> bool:
    return isinstance(result, NoScriptError) or (
        isinstance(result, ResponseError) and "NOSCRIPT" in str(result)
    )


class RedisBus:
    """The node's Redis connections (one writer, one subscriber), shared by all hubs."""

    def __init__(
        self,
        url: str,
        *,
        buffer_limit: int = 10000,
    ) -> None:
        self.url = url
        self.buffer_limit = buffer_limit
        self.stats = BusStats()
        self._writer_client = connect_redis(url)
        self._reader_client = connect_redis(url)
        self._queue: deque[_Command] = deque()
        self._wake = asyncio.Event()
        self._writer_up = False
        self._reader_up = False
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._handlers: dict[bytes, Handler] = {}
        self._writer_conn: AbstractConnection | None = None
        # Commands sent whose replies have not all been read.
        self._in_flight = 0
        self._reader_conn: AbstractConnection | None = None
        self._sub_queue: deque[tuple[bool, bytes]] = deque()
        self._sub_wake = asyncio.Event()
        self._confirm: dict[bytes, list[asyncio.Future[None]]] = {}
        self._reconnect_hooks: list[ReconnectHook] = []
        self._resubscribed_hooks: list[Callable[[], None]] = []
        self._writer_ready = asyncio.Event()
        self._reader_ready = asyncio.Event()
        self._scripts: dict[str, str] = {}  # sha -> source, loaded on every (re)connect
        self.last_error: str | None = None
        #: How long start() waits for Redis before going on in the background.
        self.connect_wait = 5.0
        #: Commands per pipelined round trip (1 turns pipelining off, for comparison).
        self.max_batch = MAX_BATCH
        #: Seconds the writer holds its queue after reconnecting (see FLUSH_DELAY).
        self.flush_delay = FLUSH_DELAY
        #: Seconds between keep-alive PINGs on the idle subscriber connection.
        self.ping_interval = 5.0
        self._last_read = 0.0
        self._hold_until = 0.0
        #: Send runs of publishes as one Lua call (False: one PUBLISH command each).
        self.publish_script = True
        self._publish_sha = self.register_script(PUBLISH_MANY)

    # -- state -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while both the writer and the subscriber are connected."""
        return self._writer_up and self._reader_up

    @property
    def queued(self) -> int:
        """Commands waiting for the writer (held through an outage, up to the bound)."""
        return len(self._queue)

    def on_resubscribed(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` each time the subscriber is back after losing its connection."""
        self._resubscribed_hooks.append(hook)

    def on_reconnect(self, hook: ReconnectHook) -> None:
        """Run ``hook`` after the writer has (re)connected, before buffered publishes go out."""
        self._reconnect_hooks.append(hook)

    def register_script(self, source: str) -> str:
        """Remember a Lua script (loaded on every connect); returns its SHA1."""
        import hashlib

        sha = hashlib.sha1(source.encode()).hexdigest()
        self._scripts[sha] = source
        return sha

    async def start(self, wait: float | None = None) -> None:
        """Start the writer and the subscriber; wait up to ``wait`` seconds for Redis.

        A Redis that is not there yet is not an error: the node serves local traffic and
        keeps retrying in the background.
        """
        if wait is None:
            wait = self.connect_wait
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run_writer(), name="hubplane-redis-writer"),
            loop.create_task(self._run_reader(), name="hubplane-redis-reader"),
        ]
        try:
            await asyncio.wait_for(
                asyncio.gather(self._writer_ready.wait(), self._reader_ready.wait()), wait
            )
        except TimeoutError:
            logger.warning(
                "Redis at %s is not reachable yet; retrying in the background", self._safe_url
            )

    async def flush(self, timeout: float = 2.0) -> bool:
        """Wait until Redis has replied to every command queued so far (while connected, up
        to ``timeout`` seconds); True when nothing is left."""
        deadline = time.monotonic() + timeout
        while (self._queue or self._in_flight) and self._writer_up:
            if time.monotonic() >= deadline:
                break
            self._wake.set()
            await asyncio.sleep(0.005)
        return not (self._queue or self._in_flight)

    async def stop(self) -> None:
        """Flush what is queued (briefly), then close both connections."""
        # Closing a socket with replies unread resets it, and Redis may then drop the
        # commands it had not read yet: the batch on the wire is waited for too.
        await self.flush(2.0)
        self._closing = True
        self._wake.set()
        self._sub_wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._fail_pending(BackplaneUnavailable("the node is stopping"))
        await _close(self._writer_conn)
        await _close(self._reader_conn)
        self._writer_conn = self._reader_conn = None
        for client in (self._writer_client, self._reader_client):
            try:
                await client.aclose()
            except Exception:
                logger.debug("closing a Redis client failed", exc_info=True)

    @property
    def _safe_url(self) -> str:
        return safe_url(self.url)

    # -- writing -----------------------------------------------------------------------------

    def publish(self, channel: bytes, data: bytes) -> None:
        """Queue a PUBLISH (kept through an outage, up to the buffer bound)."""
        queue = self._queue
        if not (self._writer_up and self._reader_up):
            # Either side down means Redis is (about to be found) unreachable.
            self.stats.buffered += 1
            if len(queue) >= self.buffer_limit:
                self._drop_oldest_publish()
                if len(queue) >= self.buffer_limit:
                    self.stats.dropped += 1
                    return
        queue.append(_Command(PUBLISH, ("PUBLISH", channel, data), None))
        if len(queue) == 1:
            self._wake.set()

    def command(self, *args: Any, keep: bool = False) -> None:
        """Queue a state write.

        Dropped while Redis is unreachable (owners rewrite their state later), unless
        ``keep``: then it waits in the queue like a publish and goes out after reconnecting.
        """
        if keep:
            self._queue.append(_Command(KEEP, args, None))
        elif self._writer_up:
            self._queue.append(_Command(STATE, args, None))
        else:
            return
        self._wake.set()

    async def query(self, *args: Any) -> Any:
        """Run a command after everything queued before it and return its reply."""
        if not self._writer_up:
            raise BackplaneUnavailable(f"Redis is unreachable ({self.last_error or 'connecting'})")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Command(QUERY, args, future))
        self._wake.set()
        return await future

    async def publish_counted(self, channel: bytes, data: bytes) -> int:
        """PUBLISH (in order with the other publishes) and return how many received it.

        Raises :class:`BackplaneUnavailable` at once while Redis is unreachable.
        """
        if not self._writer_up:
            raise BackplaneUnavailable(f"Redis is unreachable ({self.last_error or 'connecting'})")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Command(PUBLISH, ("PUBLISH", channel, data), future))
        self._wake.set()
        return int(await future)

    def _drop_oldest_publish(self) -> None:
        for i, cmd in enumerate(self._queue):
            if cmd.kind == PUBLISH and cmd.future is None:
                del self._queue[i]
                self.stats.dropped += 1
                return

    def _fail_pending(self, exc: Exception) -> None:
        keep: deque[_Command] = deque()
        for cmd in self._queue:
            if cmd.future is not None:
                # Somebody waits for this reply: tell them now rather than much later.
                if not cmd.future.done():
                    cmd.future.set_exception(exc)
            elif cmd.kind in (PUBLISH, KEEP) and not self._closing:
                keep.append(cmd)
        self._queue = keep

    async def _run_writer(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                await self._connect_writer()
            except _NETWORK_ERRORS + (RedisError,) as exc:
                self._writer_down(exc)
                await asyncio.sleep(_backoff(attempt - 1 if attempt else 0))
                attempt += 1
                continue
            if attempt:
                self.stats.reconnects += 1
                logger.warning(
                    "Redis writer reconnected to %s; flushing %d queued commands in %.1f s",
                    self._safe_url,
                    len(self._queue),
                    self.flush_delay,
                )
                self._hold_until = asyncio.get_running_loop().time() + self.flush_delay
            attempt = 0
            try:
                await self._drain_forever()
            except _NETWORK_ERRORS + (RedisError,) as exc:
                # A connection that went stale while idle (Redis restarted) gets one
                # immediate replacement, so nobody waiting on the queue is failed for it.
                if self._closing:
                    return
                logger.warning("Redis writer connection failed (%s); reconnecting", exc)
                attempt = 1

    async def _connect_writer(self) -> None:
        await _close(self._writer_conn)
        self._writer_conn = None
        connection = await _open(self._writer_client)
        try:
            await self._load_scripts(connection, ping=True)
        except BaseException:
            await _close(connection)
            raise
        self._writer_conn = connection
        self._writer_up = True
        self.last_error = None
        # Hooks run before buffered publishes flush: presence is rewritten first.
        held = self._queue
        self._queue = deque()
        for hook in self._reconnect_hooks:
            try:
                await hook()
            except _NETWORK_ERRORS:
                self._queue.extend(held)
                raise
            except Exception:
                logger.exception("a Redis reconnect hook failed")
        self._queue.extend(held)
        self._writer_ready.set()
        if self._queue:
            self._wake.set()

    async def _load_scripts(self, connection: AbstractConnection, ping: bool = False) -> None:
        shas = list(self._scripts)
        commands = [("SCRIPT", "LOAD", self._scripts[sha]) for sha in shas]
        replies = await _round_trip(connection, *([("PING",)] if ping else []), *commands)
        for sha, loaded in zip(shas, replies[1:] if ping else replies, strict=True):
            if isinstance(loaded, Exception):
                raise loaded
            if (loaded.decode() if isinstance(loaded, bytes) else loaded) != sha:
                raise RuntimeError("Lua script SHA mismatch")

    def _writer_down(self, exc: BaseException) -> None:
        if self._writer_up:
            logger.error(
                "Redis writer lost its connection to %s: %s; serving local traffic, "
                "buffering up to %d publishes",
                self._safe_url,
                exc,
                self.buffer_limit,
            )
        self._writer_up = False
        self.last_error = str(exc) or type(exc).__name__
        self._fail_pending(BackplaneUnavailable(f"Redis is unreachable ({self.last_error})"))

    async def _drain_forever(self) -> None:
        loop = asyncio.get_running_loop()
        connection = self._writer_conn
        assert connection is not None
        # redis-py's reply callbacks (HGETALL to a dict, ...), applied to query replies.
        callbacks = self._writer_client.response_callbacks
        queue = self._queue
        wake = self._wake
        while not self._closing:
            if not self._queue:
                wake.clear()
                await wake.wait()
                continue
            queue = self._queue
            hold = self._hold_until - loop.time()
            if hold > 0:
                # Publishes wait for the other nodes to resubscribe; the rest goes now.
                batch = [c for c in queue if c.kind != PUBLISH]
                if not batch:
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), hold)
                    continue
                self._queue = queue = deque(c for c in queue if c.kind == PUBLISH)
            else:
                n = min(len(queue), self.max_batch)
                batch = [queue.popleft() for _ in range(n)]
            # Runs of plain PUBLISHes travel as one script call: Redis does the same work,
            # and one command is packed and one reply parsed instead of hundreds.
            groups: list[list[_Command]] = []
            run: list[_Command] = []
            for cmd in batch:
                if cmd.kind == PUBLISH and cmd.future is None and self.publish_script:
                    run.append(cmd)
                    continue
                if run:
                    groups.append(run)
                    run = []
                groups.append([cmd])
            if run:
                groups.append(run)
            packed: list[bytes] = []
            for group in groups:
                first = group[0]
                if first.kind == PUBLISH and first.future is None and self.publish_script:
                    args: list[Any] = ["EVALSHA", self._publish_sha, 0]
                    for cmd in group:
                        args.append(cmd.args[1])
                        args.append(cmd.args[2])
                    packed.append(_pack(tuple(args)))
                else:
                    packed.append(_pack(first.args))
            started = time.perf_counter()
            self._in_flight = len(batch)
            try:
                await connection.send_packed_command(b"".join(packed), check_health=False)
                results = [await _reply(connection) for _ in groups]
            except BaseException:
                self._in_flight = 0
                # Nothing is known to have been applied: put the batch back (a publish may
                # then go out twice after a reconnect; at-least-once beats silent loss).
                queue.extendleft(reversed([c for c in batch if c.kind != STATE]))
                raise
            self._in_flight = 0
            stats = self.stats
            stats.round_trips.observe(time.perf_counter() - started)
            stats.batch_sizes.observe(len(batch))
            stats.batches += 1
            retry: list[_Command] = []
            for group, result in zip(groups, results, strict=True):
                if _is_noscript(result):
                    retry.extend(group)  # Redis lost our scripts (SCRIPT FLUSH): reload, resend
                    continue
                first = group[0]
                if first.kind == QUERY and not isinstance(result, Exception):
                    callback = callbacks.get(first.args[0])
                    if callback is not None:
                        try:
                            result = callback(result)
                        except Exception as exc:  # a reply of an unexpected shape
                            result = exc
                for cmd in group:
                    if cmd.kind == PUBLISH:
                        self.stats.published += 1
                    if isinstance(result, Exception):
                        if cmd.future is not None and not cmd.future.done():
                            cmd.future.set_exception(result)
                        else:
                            self.stats.errors += 1
                            logger.warning("Redis command %s failed: %s", cmd.args[0], result)
                    elif cmd.future is not None and not cmd.future.done():
                        cmd.future.set_result(result)
            if retry:
                logger.warning("Redis lost hubplane's Lua scripts: loading them again")
                await self._load_scripts(connection)
                queue.extendleft(reversed(retry))

    # -- subscribing -------------------------------------------------------------------------

    async def subscribe(self, channel: bytes, handler: Handler, confirm: bool = True) -> None:
        """Deliver messages on ``channel`` to ``handler(channel, data)``.

        With ``confirm`` (and Redis reachable) this returns once Redis has confirmed the
        subscription, so a message published right after cannot be missed.
        """
        new = channel not in self._handlers
        self._handlers[channel] = handler
        if not new and channel not in self._confirm:
            return  # subscribed and confirmed
        future: asyncio.Future[None] | None = None
        if confirm and self._reader_up:
            # A second caller for a channel still being confirmed waits for the same reply.
            future = asyncio.get_running_loop().create_future()
            self._confirm.setdefault(channel, []).append(future)
        if new:
            self._sub_queue.append((True, channel))
            self._sub_wake.set()
        if future is not None:
            try:
                await asyncio.wait_for(asyncio.shield(future), SUBSCRIBE_CONFIRM_TIMEOUT)
            except TimeoutError:
                logger.warning("Redis did not confirm the subscription to %r in time", channel)

    def unsubscribe(self, channel: bytes) -> None:
        """Stop receiving ``channel``."""
        if self._handlers.pop(channel, None) is None:
            return
        self._sub_queue.append((False, channel))
        self._sub_wake.set()

    async def _run_reader(self) -> None:
        attempt = 0
        while not self._closing:
            connection: AbstractConnection | None = None
            sender: asyncio.Task[None] | None = None
            try:
                connection = await _open(self._reader_client)
                # No read timeout (a URL's socket_timeout would cut idle reads): the sender's
                # PINGs find a dead connection instead.
                connection.socket_timeout = None
                self._reader_conn = connection
                # Start from scratch on every connection: subscribe to every channel held.
                self._sub_queue.clear()
                channels = list(self._handlers)
                await connection.send_command("SUBSCRIBE", *(channels or [b"hubplane:idle"]))
                if attempt:
                    self.stats.reconnects += 1
                    logger.warning(
                        "Redis subscriber reconnected to %s (%d channels)",
                        self._safe_url,
                        len(channels),
                    )
                    for hook in self._resubscribed_hooks:
                        try:
                            hook()
                        except Exception:
                            logger.exception("a Redis resubscribe hook failed")
                attempt = 0
                self._reader_up = True
                self._reader_ready.set()
                loop = asyncio.get_running_loop()
                sender = loop.create_task(self._run_sub_sender(connection))
                await self._read_forever(connection)
            except asyncio.CancelledError:
                raise
            except _NETWORK_ERRORS + (RedisError,) as exc:
                if self._reader_up:
                    logger.error("Redis subscriber lost its connection: %s", exc)
                self._reader_up = False
                self.last_error = str(exc) or type(exc).__name__
                await asyncio.sleep(_backoff(attempt))
                attempt += 1
            finally:
                self._reader_up = False
                self._reader_conn = None  # tells the sender to stop, should a cancel be lost
                if sender is not None:
                    # Ended here, on the loop: a sender left to the garbage collector
                    # mid-write would try to disconnect with no loop running.
                    sender.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await sender
                for waiters in self._confirm.values():
                    for fut in waiters:
                        if not fut.done():
                            fut.set_result(None)
                self._confirm.clear()
                await _close(connection)

    async def _run_sub_sender(self, connection: AbstractConnection) -> None:
        """Send queued SUBSCRIBE/UNSUBSCRIBE commands in order, coalescing runs.

        When idle it PINGs every ``ping_interval`` seconds, and drops the connection when
        nothing at all has come back for three intervals: a socket that died silently
        (a NAT or balancer timeout) would otherwise leave the node deaf for good.
        """
        queue = self._sub_queue
        loop = asyncio.get_running_loop()
        # (Python 3.11's wait_for may swallow a cancel that meets a wake-up: the loop also
        # ends when the reader has moved on from this connection.)
        while self._reader_conn is connection and not self._closing:
            if not queue:
                self._sub_wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._sub_wake.wait(), self.ping_interval)
                if queue:
                    continue
                if loop.time() - self._last_read > 3 * self.ping_interval:
                    logger.error("Redis subscriber heard nothing for too long: reconnecting")
                    await connection.disconnect()
                    return
                try:
                    await connection.send_command("PING", check_health=False)
                except _NETWORK_ERRORS:
                    return
                continue
            action, channel = queue.popleft()
            run = [channel]
            while queue and queue[0][0] == action and len(run) < 512:
                run.append(queue.popleft()[1])
            try:
                await connection.send_command("SUBSCRIBE" if action else "UNSUBSCRIBE", *run)
            except _NETWORK_ERRORS:
                return  # the reader notices, reconnects and resubscribes everything

    async def _read_forever(self, connection: AbstractConnection) -> None:
        read = connection.read_response
        loop_time = asyncio.get_running_loop().time
        self._last_read = loop_time()
        handlers = self._handlers
        stats = self.stats
        while not self._closing:
            response = await read()
            self._last_read = loop_time()
            if response is None:
                continue
            # ['message', channel, data] is by far the most common reply.
            if response[0] == b"message":
                stats.received += 1
                channel = response[1]
                handler = handlers.get(channel)
                if handler is not None:
                    try:
                        handler(channel, response[2])
                    except Exception:
                        logger.exception("handling a message on %r failed", channel)
            elif response[0] == b"subscribe":
                waiters = self._confirm.pop(response[1], None)
                if waiters:
                    for fut in waiters:
                        if not fut.done():
                            fut.set_result(None)
