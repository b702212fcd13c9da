"""Watching the channels of a node's durable connections: counted, announced, announced again.

A channel with a durable member is *watched* (``history.py``): publishers keep its history
for a while. The node holding the members announces each of its channels when it becomes
watched and again every quarter window (``keys.WATCH_CHANNELS``: the watched ZSET and an
announcement on the ``watch`` channel, in one script), so a watch outlives its holder's
crash by more than the time its clients may take to come back. On a Redis Cluster with
sharded pub/sub the script SPUBLISHes (``keys.SHARD_WATCH_CHANNELS``) from the ZSET's shard,
which is the announcement channel's (``keys.watched_key``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import TYPE_CHECKING, Any

import msgpack

from .keys import SHARD_WATCH_CHANNELS, WATCH_CHANNELS
from .outbox import BackplaneUnavailable

if TYPE_CHECKING:
    from .base import ClusterNode

_packb = functools.partial(msgpack.packb, use_bin_type=True)


class ChannelWatches:
    """The watched channels of one node's durable connections, and their announcements."""

    def __init__(self, node: ClusterNode, window_ms: int, heartbeat: float) -> None:
        self.node = node
        self.bus = node.bus
        self.window_ms = window_ms
        self.refresh_every = window_ms / 4000
        self.heartbeat = heartbeat
        script = SHARD_WATCH_CHANNELS if self.bus.sharded else WATCH_CHANNELS
        self._sha = self.bus.register_script(script)
        #: Watched channel -> durable connections here on it; when it was last announced.
        self.watching: dict[bytes, int] = {}
        self._announced: dict[bytes, float] = {}
        #: Channels became watched since the last announcement (announce at the next flush).
        self.new = False
        self._task: asyncio.Task[None] | None = None

    def change(self, old: frozenset[bytes], new: frozenset[bytes]) -> None:
        """A connection's channels went from ``old`` to ``new``."""
        watching = self.watching
        for channel in new - old:
            count = watching.get(channel, 0)
            watching[channel] = count + 1
            if not count:
                self._announced[channel] = 0.0
                self.new = True
        for channel in old - new:
            count = watching.get(channel, 0) - 1
            if count > 0:
                watching[channel] = count
            else:
                watching.pop(channel, None)
                self._announced.pop(channel, None)

    def announce(self, older_than: float) -> None:
        """Announce the watched channels not announced since ``older_than`` (monotonic)."""
        self.new = False
        due = [c for c, at in self._announced.items() if at <= older_than]
        if not due:
            return
        now = time.monotonic()
        for channel in due:
            self._announced[channel] = now
        history = self.node.history
        announcement = _packb([self.window_ms, due])
        args = (history.announcements, announcement, self.window_ms, *due)
        try:
            future = self.bus.query_soon("EVALSHA", self._sha, 1, history.key, *args)
        except BackplaneUnavailable:
            self._failed(due)
            return
        future.add_done_callback(functools.partial(self._announced_or_not, due))

    def _announced_or_not(self, due: list[bytes], future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            self._failed(due)
        else:
            # This node publishes there too: it knows at once.
            self.node.history.watch(due, self.window_ms)

    def _failed(self, due: list[bytes]) -> None:
        for channel in due:
            if channel in self._announced:
                self._announced[channel] = 0.0  # due again at the next beat

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            self.announce(time.monotonic() - self.refresh_every)

    def start(self) -> None:
        """Announce watches every beat (the node is started)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._refresh_forever(), name="hubplane-durable-watch"
            )

    def stop(self) -> None:
        """Stop announcing (the watches expire by themselves)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
