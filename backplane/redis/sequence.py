"""Exactly once over Redis: numbering what a node publishes, dropping what arrives twice.

Pub/sub delivers at most once per subscription, but a publisher may send a message twice: a
batch whose replies never came (a frozen Redis, a dropped connection) goes out again after the
reconnect, and Redis may have run it already. So every invocation a hubplane node (or emitter)
publishes carries two numbers after its origin (``docs/redis-protocol.md``, section 5.6):

- ``seq``: the publisher's own counter, one sequence for all its channels, strictly rising;
- ``prev``: the ``seq`` of the publisher's previous message on the same channel (0 when it
  does not remember one).

A receiver keeps, per (publisher, channel), the last ``seq`` it delivered: a message at or
below it is a duplicate and is dropped; one whose ``prev`` is not that last ``seq`` follows a
gap (messages the receiver never saw: it was not subscribed, or Redis dropped them), which is
counted and logged. The counter is shared by all channels so that either side may forget a
channel (memory stays bounded) without a later message looking like a replay: after
forgetting, ``prev`` is 0 and no gap is claimed, and a forgotten receiver simply delivers.

Messages without the numbers (a .NET node, an older hubplane, a service publishing by hand)
are delivered as they come. Sans-I/O: the caller passes the time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger("hubplane.redis")

#: A publisher forgets the last number it sent on a channel after this many idle seconds.
PUBLISHER_TTL = 300.0
#: A receiver forgets a (publisher, channel) after this many seconds without a message: far
#: longer than a retried batch takes to come back, which is what duplicates come from.
RECEIVER_TTL = 120.0
#: How often (seconds) either side sweeps what it may forget.
SWEEP_EVERY = 10.0


class PublishSequence:
    """The numbers a publisher stamps on its messages: ``(seq, prev)`` per channel."""

    __slots__ = ("seq", "_last", "_seen", "ttl", "_next_sweep")

    def __init__(self, ttl: float = PUBLISHER_TTL) -> None:
        #: The number of the last message numbered (0 before the first).
        self.seq = 0
        self._last: dict[bytes, int] = {}
        self._seen: dict[bytes, float] = {}
        self.ttl = ttl
        self._next_sweep = 0.0

    def next(self, channel: bytes, now: float) -> tuple[int, int]:
        """Number the next message on ``channel``: its ``seq`` and the channel's ``prev``."""
        seq = self.seq = self.seq + 1
        last = self._last
        prev = last.get(channel, 0)
        last[channel] = seq
        self._seen[channel] = now
        if now >= self._next_sweep:
            self._sweep(now)
        return seq, prev

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SWEEP_EVERY
        cutoff = now - self.ttl
        stale = [channel for channel, seen in self._seen.items() if seen < cutoff]
        for channel in stale:
            del self._seen[channel]
            del self._last[channel]

    def last(self, channel: bytes) -> int:
        """The number of the last message published on ``channel`` (0: none remembered)."""
        return self._last.get(channel, 0)

    @property
    def channels(self) -> int:
        """Channels whose last number is remembered."""
        return len(self._last)


@dataclass(slots=True)
class SequenceStats:
    """What the receiving side saw: duplicates dropped and gaps found."""

    duplicates: int = 0
    gaps: int = 0


class ReceiveSequence:
    """Duplicate and gap detection for every (publisher, channel) a node hears."""

    __slots__ = ("_last", "stats", "ttl", "_next_sweep")

    def __init__(self, ttl: float = RECEIVER_TTL) -> None:
        # channel -> publisher -> [last seq delivered, when it came]
        self._last: dict[bytes, dict[str, list[float]]] = {}
        self.stats = SequenceStats()
        self.ttl = ttl
        self._next_sweep = 0.0

    def accept(self, origin: str, channel: bytes, seq: int, prev: int, now: float) -> bool:
        """True when the message is to be delivered; False for a duplicate."""
        publishers = self._last.get(channel)
        if publishers is None:
            publishers = self._last[channel] = {}
        entry = publishers.get(origin)
        if entry is None:
            publishers[origin] = [seq, now]
        else:
            last = entry[0]
            if seq <= last:
                self.stats.duplicates += 1
                return False
            if prev and prev != last:
                self.stats.gaps += 1
                logger.warning(
                    "backplane gap on %r from %s: its messages after #%d up to #%d never "
                    "arrived here",
                    channel,
                    origin,
                    int(last),
                    prev,
                )
            entry[0] = seq
            entry[1] = now
        if now >= self._next_sweep:
            self._sweep(now)
        return True

    def positions(self, channel: bytes) -> dict[str, int]:
        """Publisher -> the number of the last message delivered from it on ``channel``."""
        publishers = self._last.get(channel)
        if not publishers:
            return {}
        return {origin: int(entry[0]) for origin, entry in publishers.items()}

    def forget_channel(self, channel: bytes) -> None:
        """The node stopped listening to ``channel``: a later subscription starts afresh."""
        self._last.pop(channel, None)

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SWEEP_EVERY
        cutoff = now - self.ttl
        for channel, publishers in list(self._last.items()):
            for origin in [o for o, entry in publishers.items() if entry[1] < cutoff]:
                del publishers[origin]
            if not publishers:
                del self._last[channel]

    @property
    def tracked(self) -> int:
        """(publisher, channel) pairs remembered."""
        return sum(len(publishers) for publishers in self._last.values())
