"""Holding the messages of a connection that is moving to this node, until its state comes.

Before a node asks another for a stateful connection (``backplane/moving.py``), it subscribes
to the connection's channels (its own, its user's, its groups', ``all``) and holds what
arrives for it. The other node answers with the connection's replay and, per channel, the
number of the last message it delivered from each publisher (:func:`positions`, the same
numbers that make Redis delivery exactly once, ``sequence.py``). What was held and is past
those numbers was never delivered there: it goes to the connection after its replay. What is
not past them was, and is dropped. Messages without numbers (a .NET node, a service publishing
by hand) cannot be told apart and are all delivered: they may arrive twice during a move.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from ..lifetime.base import SerializedMessage
from .sequence import PublishSequence, ReceiveSequence

#: Channel -> publisher -> the number of the last message delivered from it.
Positions = dict[bytes, dict[str, int]]
#: How long after a move copies of what the former node delivered are looked for: far longer
#: than a message takes through Redis.
FENCE_SECONDS = 30.0


class Capture:
    """What arrived for one moving connection, with where it came from."""

    __slots__ = ("connection_id", "channels", "held", "subscribed", "delivered", "fence_until")

    def __init__(self, connection_id: str, channels: Collection[bytes]) -> None:
        self.connection_id = connection_id
        self.channels = frozenset(channels)
        #: (channel, publisher, number, message) in arrival order.
        self.held: list[tuple[bytes, str | None, int, SerializedMessage]] = []
        #: Channels subscribed for this capture (to drop again if the move fails).
        self.subscribed: list[bytes] = []
        #: After the move: what the former node delivered and this one may still hear (its
        #: copies still on their way through Redis), until when that is checked.
        self.delivered: Positions = {}
        self.fence_until = 0.0

    def offer(
        self,
        channel: bytes,
        origin: str | None,
        seq: int,
        message: SerializedMessage,
        excluded: Collection[str] | None,
    ) -> None:
        """A message on one of the node's channels: held when it is for this connection."""
        if channel in self.channels and not (excluded and self.connection_id in excluded):
            self.held.append((channel, origin, seq, message))

    def release(self, delivered: Positions, now: float) -> list[SerializedMessage]:
        """What was held and not ``delivered`` by the node the connection comes from.

        From now on :meth:`fenced` tells the copies of ``delivered`` messages that are still on
        their way (the former node delivered them itself before publishing reached Redis).
        """
        out: list[SerializedMessage] = []
        for channel, origin, seq, message in self.held:
            if origin is not None and seq:
                if seq <= delivered.get(channel, {}).get(origin, 0):
                    continue
            out.append(message)
        self.held.clear()
        self.delivered = {channel: dict(heard) for channel, heard in delivered.items()}
        self.fence_until = now + FENCE_SECONDS
        return out

    def fenced(self, channel: bytes, origin: str, seq: int) -> bool:
        """True for a message the former node delivered already (drop it for this one)."""
        heard = self.delivered.get(channel)
        if not heard:
            return False
        last = heard.get(origin)
        if last is None:
            return False
        if seq <= last:
            return True
        # A publisher's messages come in order: nothing older follows this one.
        del heard[origin]
        if not heard:
            del self.delivered[channel]
        return False


def positions(
    node_id: str,
    channels: Iterable[bytes],
    published: PublishSequence,
    received: ReceiveSequence,
) -> Positions:
    """Where delivery stands on ``channels`` at this node: the last number delivered from each
    publisher (this node's own publishes count as delivered: it writes to local members
    directly)."""
    result: Positions = {}
    for channel in channels:
        heard = received.positions(channel)
        own = published.last(channel)
        if own:
            heard[node_id] = own
        if heard:
            result[channel] = heard
    return result


def read_positions(value: object) -> Positions:
    """:func:`positions` as it came over the wire (msgpack), checked."""
    result: Positions = {}
    if not isinstance(value, dict):
        return result
    for channel, heard in value.items():
        if isinstance(channel, bytes) and isinstance(heard, dict):
            result[channel] = {
                str(origin): seq
                for origin, seq in heard.items()
                if isinstance(seq, int) and not isinstance(seq, bool)
            }
    return result
