"""The writer connection: one task draining the outbox into pipelined commands.

A batch is packed by hiredis in C and written in one call, and the replies are read one by
one: a burst of PUBLISHes costs a few round trips, not one each. redis-py's Pipeline costs
more per batch than the rest of a send (a pool checkout, a retry wrapper, timeouts), so the
hot path keeps clear of it.

When Redis goes away the writer reconnects with backoff, reloads the Lua scripts, runs the
reconnect hooks (presence is rewritten first), then holds the buffered publishes for
``flush_delay`` seconds. A Redis that lost the scripts (SCRIPT FLUSH) gets them again.

Redis has ``reply_timeout`` seconds to answer a batch (and a connect): a frozen (SIGSTOP) or
half-open Redis sends nothing, and a caller of ``query`` or ``publish_counted`` would wait
for ever, the node's heartbeat among them. A watchdog timer finds a batch overdue (an
``asyncio.timeout`` per batch would cost about 5 µs, a sixth of a lone round trip here; the
batch only stamps its due time), and the writer then treats the connection as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, RedisError, ResponseError

from .connect import (
    NETWORK_ERRORS,
    HeldConnection,
    backoff,
    close_connection,
    open_connection,
    read_reply,
    round_trip,
)
from .keys import script_sha
from .outbox import PUBLISH, QUERY, BackplaneUnavailable, BusStats, Command, Outbox

logger = logging.getLogger("hubplane.redis")

ReconnectHook = Callable[[], Awaitable[None]]

# After a reconnect the writer holds its queue this long, so the other nodes' subscribers
# (retrying at most BACKOFF_MAX apart) are back before the buffered publishes go out.
FLUSH_DELAY = 1.5

_pack = hiredis.pack_command


def is_noscript(result: object) -> bool:
    """True when ``result`` is Redis saying it does not know the script (NOSCRIPT)."""
    return isinstance(result, NoScriptError) or (
        isinstance(result, ResponseError) and "NOSCRIPT" in str(result)
    )


class Writer(HeldConnection):
    """The node's writing connection to Redis and the task that drains the outbox into it."""

    task_name = "hubplane-redis-writer"

    def __init__(
        self,
        client: aioredis.Redis,
        outbox: Outbox,
        wake: asyncio.Event,
        stats: BusStats,
        url: str,
    ) -> None:
        super().__init__(client, url, wake)  # woken by the outbox when it has something to send
        self.outbox = outbox
        self.stats = stats
        #: Seconds the writer holds publishes after reconnecting (see FLUSH_DELAY).
        self.flush_delay = FLUSH_DELAY
        # Commands sent whose replies have not all been read.
        self.in_flight = 0
        # While waiting for Redis in the drain loop: when its replies are due (the loop's
        # clock); 0.0 while not waiting. Read by the watchdog (see _watch).
        self._due = 0.0
        self._stalled = False  # the watchdog cancelled the task: Redis did not answer in time
        self._watchdog: asyncio.TimerHandle | None = None
        self._scripts: dict[str, str] = {}  # sha -> source, loaded on every (re)connect
        self._hooks: list[ReconnectHook] = []

    def register_script(self, source: str) -> str:
        """Remember a Lua script (loaded on every connect); returns its SHA1."""
        sha = script_sha(source)
        self._scripts[sha] = source
        return sha

    def on_reconnect(self, hook: ReconnectHook) -> None:
        """Run ``hook`` after (re)connecting, before buffered publishes go out."""
        self._hooks.append(hook)

    async def flush(self, timeout: float) -> bool:
        """Wait until Redis has replied to every command queued so far (while connected, up
        to ``timeout`` seconds); True when nothing is left."""
        outbox = self.outbox
        deadline = time.monotonic() + timeout
        while (outbox.queued or self.in_flight) and outbox.writer_up:
            if time.monotonic() >= deadline:
                break
            self._wake.set()
            await asyncio.sleep(0.005)
        return not (outbox.queued or self.in_flight)

    # -- connecting --------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                await self._connect()
            except NETWORK_ERRORS + (RedisError,) as exc:
                self._down(exc)
                await asyncio.sleep(backoff(attempt - 1 if attempt else 0))
                attempt += 1
                continue
            if attempt:
                self.stats.reconnects += 1
                logger.warning(
                    "Redis writer reconnected to %s; flushing %d queued commands in %.1f s",
                    self.url,
                    self.outbox.queued,
                    self.flush_delay,
                )
                self.outbox.hold_until = asyncio.get_running_loop().time() + self.flush_delay
            attempt = 0
            try:
                await self._drain_forever()
            except asyncio.CancelledError:
                if self._closing or not self._stalled:
                    raise
                # The watchdog's cancel, not a stop: the batch on the wire is back in the
                # queue (see _drain_forever). Everybody waiting for a reply hears now, the
                # publishes and KEEP writes wait for the next connection.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                self._stalled = False
                await self._close_connections()
                self._down(TimeoutError(f"no reply within {self.reply_timeout:g} s"))
                attempt = 1
            except NETWORK_ERRORS + (RedisError,) as exc:
                # A connection that went stale while idle (Redis restarted) gets one
                # immediate replacement, so nobody waiting on the queue is failed for it.
                if self._closing:
                    return
                logger.warning("Redis writer connection failed (%s); reconnecting", exc)
                attempt = 1

    async def _close_connections(self) -> None:
        """Close the connection the writer holds (if any)."""
        await close_connection(self.connection)
        self.connection = None

    async def _open(self) -> None:
        """Open the connection and load the scripts into Redis (bounded by ``reply_timeout``)."""
        # A frozen Redis still accepts connections (the kernel's backlog) but answers
        # neither the handshake nor PING: both are bounded, and the loop retries later.
        timeout = self.reply_timeout
        connection = None
        try:
            async with asyncio.timeout(timeout):
                connection = await open_connection(self.client)
                await self._load_scripts(connection, ping=True)
        except BaseException as exc:
            await close_connection(connection)
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"Redis did not answer within {timeout:g} s") from None
            raise
        self.connection = connection

    async def _connect(self) -> None:
        await self._close_connections()
        await self._open()
        outbox = self.outbox
        outbox.writer_up = True
        outbox.last_error = None
        # Hooks run before buffered publishes flush: presence is rewritten first. The queue's
        # bound does not apply to them: a rewrite is as large as the node's state.
        held = outbox.detach()
        limit, outbox.queue_limit = outbox.queue_limit, sys.maxsize
        try:
            for hook in self._hooks:
                try:
                    await hook()
                except NETWORK_ERRORS:
                    outbox.reattach(held)
                    raise
                except Exception:
                    logger.exception("a Redis reconnect hook failed")
        finally:
            outbox.queue_limit = limit
        outbox.reattach(held)
        self.ready.set()
        if outbox.queued:
            self._wake.set()

    async def _load_scripts(self, connection: AbstractConnection, ping: bool = False) -> None:
        shas = list(self._scripts)
        commands = [("SCRIPT", "LOAD", self._scripts[sha]) for sha in shas]
        replies = await round_trip(connection, *([("PING",)] if ping else []), *commands)
        for sha, loaded in zip(shas, replies[1:] if ping else replies, strict=True):
            if isinstance(loaded, Exception):
                raise loaded
            if (loaded.decode() if isinstance(loaded, bytes) else loaded) != sha:
                raise RuntimeError("Lua script SHA mismatch")

    async def _reload_scripts(self) -> None:
        """Load the scripts again (Redis said NOSCRIPT)."""
        assert self.connection is not None
        await self._load_scripts(self.connection)

    async def _exchange(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write and read their replies (errors as values)."""
        connection = self.connection
        assert connection is not None
        await connection.send_packed_command(b"".join(map(_pack, commands)), check_health=False)
        return [await read_reply(connection) for _ in commands]

    def _down(self, exc: BaseException) -> None:
        outbox = self.outbox
        if outbox.writer_up:
            logger.error(
                "Redis writer lost its connection to %s: %s; serving local traffic, "
                "buffering up to %d publishes",
                self.url,
                exc,
                outbox.buffer_limit,
            )
        outbox.writer_up = False
        outbox.last_error = str(exc) or type(exc).__name__
        outbox.fail_pending(
            BackplaneUnavailable(f"Redis is unreachable ({outbox.last_error})"),
            keep_queued=not self._closing,
        )

    # -- draining ----------------------------------------------------------------------------

    def _watch(self) -> None:
        """The watchdog, every tenth of ``reply_timeout`` while draining: a wait for Redis
        that is overdue ends with the writer's task cancelled (see _run)."""
        loop = asyncio.get_running_loop()
        due = self._due
        if due and loop.time() > due and self._task is not None and not self._stalled:
            self._stalled = True
            self._task.cancel()
            return
        self._watchdog = loop.call_later(max(self.reply_timeout / 10, 0.01), self._watch)

    async def _drain_forever(self) -> None:
        self._due = 0.0
        self._watch()  # armed for as long as this connection is drained
        try:
            await self._drain()
        finally:
            self._due = 0.0
            if self._watchdog is not None:
                self._watchdog.cancel()
                self._watchdog = None

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        exchange = self._exchange
        # redis-py's reply callbacks (HGETALL to a dict, ...), applied to query replies.
        callbacks = self.client.response_callbacks
        outbox = self.outbox
        take = outbox.take
        wake = self._wake
        while not self._closing:
            now = loop.time()
            taken = take(now)
            if taken is None:
                wake.clear()
                if outbox.queued:
                    # Only held publishes: wait for the hold to end, or for other commands.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), outbox.hold_until - now)
                else:
                    await wake.wait()
                continue
            batch, groups, commands = taken
            started = time.perf_counter()
            self.in_flight = len(batch)
            self._due = now + self.reply_timeout  # one time stamp per batch: see _watch
            try:
                results = await exchange(commands)
            except BaseException:
                # A lost connection, or the watchdog (no reply in time). Redis may have run
                # some of the batch already: its publishes go again after reconnecting and
                # may arrive twice (receivers drop duplicates by the publisher's sequence
                # numbers); nothing is lost.
                self.in_flight = 0
                self._due = 0.0
                outbox.put_back(batch)
                raise
            self.in_flight = 0
            self._due = 0.0
            stats = self.stats
            stats.round_trips.observe(time.perf_counter() - started)
            stats.batch_sizes.observe(len(batch))
            stats.batches += 1
            retry: list[Command] = []
            for group, result in zip(groups, results, strict=True):
                if is_noscript(result):
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
                        stats.published += 1
                    if isinstance(result, Exception):
                        if cmd.future is not None and not cmd.future.done():
                            cmd.future.set_exception(result)
                        else:
                            stats.errors += 1
                            logger.warning("Redis command %s failed: %s", cmd.args[0], result)
                    elif cmd.future is not None and not cmd.future.done():
                        cmd.future.set_result(result)
            if retry:
                logger.warning("Redis lost hubplane's Lua scripts: loading them again")
                self._due = loop.time() + self.reply_timeout
                try:
                    await self._reload_scripts()
                except BaseException:
                    outbox.requeue(retry)
                    raise
                self._due = 0.0
                outbox.requeue(retry)
