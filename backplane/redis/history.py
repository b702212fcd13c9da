"""Watched channels, on the publishing side: what is published there is kept for a while.

A channel with a member recorded for ``--durable-resume`` somewhere (``durable.py``) is
*watched*: ``<prefix>hubplane:watched`` (ZSET channel -> expiry, ms of Redis time) lists it and
``<prefix>hubplane:watch`` announces it (``msgpack [window ms, [channel, ...]]``). Every node
and emitter of this release keeps the set it heard of (reloading the ZSET on every
(re)connect) and publishes on a watched channel with ``keys.HISTORY_PUBLISH``: the message goes
into the channel's history stream (``<prefix>hubplane:hist:{<channel>}``) and is published, in
one script (on a Redis Cluster with sharded pub/sub, ``keys.SHARD_HISTORY_PUBLISH`` on the
channel's shard: the stream's name starts with the hash tag of the channel's slot). A node
that takes over the connection of a node that crashed finds there what the
dead node never delivered (``revive.py``).

A watch lasts ``window`` after its last announcement; history is kept for as long (trimmed with
``MINID ~``, and the stream expires with it). Nodes announce each channel again well before its
window ends. Sans-waiting on the hot path: :meth:`WatchedChannels.publish` is one dict look-up
for a channel nobody watches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import msgpack

from .keys import WATCHED, history_key, watch_channel, watched_key
from .outbox import BackplaneUnavailable

if TYPE_CHECKING:
    from .bus import RedisBus

logger = logging.getLogger("hubplane.redis")


class WatchedChannels:
    """The watched channels this process knows of, and publishing with history there."""

    def __init__(self, bus: RedisBus, prefix: bytes) -> None:
        self.bus = bus
        self.prefix = prefix
        #: channel -> (until when it is watched, on the monotonic clock; history kept, ms)
        self.channels: dict[bytes, tuple[float, int]] = {}
        #: On a Redis Cluster the keys take a slot's hash tag (``keys.history_key``).
        self.cluster = bus.cluster
        self.sharded = bus.sharded
        self.key = watched_key(prefix, self.cluster)
        self.announcements = watch_channel(prefix)
        self._reload_sha = bus.register_script(WATCHED)
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        #: Messages published with history.
        self.kept = 0

    # -- publishing ---------------------------------------------------------------------------

    def keep(self, channel: bytes) -> tuple[bytes, int] | None:
        """The history key of ``channel`` and how long to keep its messages (ms), or None
        when it is not watched."""
        entry = self.channels.get(channel)
        if entry is None:
            return None
        if time.monotonic() > entry[0]:
            del self.channels[channel]
            return None
        return history_key(self.prefix, channel, self.cluster, self.sharded), entry[1]

    def publish(self, channel: bytes, data: bytes) -> bool:
        """Publish ``data`` on ``channel`` with history when it is watched; False (nothing
        done) when it is not."""
        kept = self.keep(channel)
        if kept is None:
            return False
        self.kept += 1
        self.bus.publish_history(kept[0], channel, data, kept[1])
        return True

    # -- learning what is watched -------------------------------------------------------------

    def watch(self, channels: list[bytes], window_ms: int) -> None:
        """``channels`` are watched for ``window_ms`` from now (an announcement)."""
        until = time.monotonic() + window_ms / 1000
        for channel in channels:
            current = self.channels.get(channel)
            keep = max(window_ms, current[1]) if current is not None else window_ms
            self.channels[channel] = (max(until, current[0]) if current else until, keep)

    def on_announcement(self, _channel: bytes, data: bytes) -> None:
        """A node announced channels it watches."""
        try:
            window, channels = msgpack.unpackb(data)
            self.watch([bytes(c) for c in channels], int(window))
        except Exception:
            logger.warning("dropping a malformed watch announcement")

    async def reload(self) -> None:
        """Read the watched channels from Redis (after a (re)connect)."""
        rows = await self.bus.query("EVALSHA", self._reload_sha, 1, self.key)
        now = int(rows[0])
        monotonic = time.monotonic()
        for channel, expiry in zip(rows[1::2], rows[2::2], strict=True):
            left = int(float(expiry)) - now
            if left > 0:
                current = self.channels.get(channel)
                keep = max(left, current[1]) if current is not None else left
                self.channels[channel] = (monotonic + left / 1000, keep)

    def _reload_soon(self) -> None:
        async def reload() -> None:
            try:
                await self.reload()
            except BackplaneUnavailable:
                pass
            except Exception:
                logger.exception("loading the watched channels failed")

        task = asyncio.get_running_loop().create_task(reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_reconnect(self) -> None:
        # Runs inside the writer's connect, before it drains: the query must not be awaited.
        self._reload_soon()

    async def start(self) -> None:
        """Hear announcements and load what is watched now (once; the bus is started)."""
        if self._started:
            return
        self._started = True
        self.bus.on_reconnect(self._on_reconnect)
        self.bus.on_resubscribed(self._reload_soon)
        await self.bus.subscribe(self.announcements, self.on_announcement)
        try:
            await asyncio.wait_for(self.reload(), self.bus.reply_timeout)
        except (BackplaneUnavailable, TimeoutError):
            pass  # loaded on reconnect

    def stop(self) -> None:
        """Stop reloading."""
        for task in list(self._tasks):
            task.cancel()
