"""Stateful reconnect's bookkeeping for one connection, sans-I/O.

Both sides number the messages that stateful reconnect tracks (invocations, stream items,
completions, stream invocations, cancels; not pings, Close, Ack or Sequence). The server keeps
what it sent until the client acknowledges it, so a new socket can replay the rest; it counts
what it received, so a client's replay after a reconnect is not handled twice, and tells the
client with an Ack how far it got. Like ASP.NET Core's ``MessageBuffer``, without the I/O:
the connection decides when to write, wait or close.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Protocol

from .protocol import (
    CancelInvocationMessage,
    CompletionMessage,
    InvocationMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)

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
# The replay may always hold this much before the client is taken as too slow.
REPLAY_MIN = 4 * 1024 * 1024


class Invocations(Protocol):
    """The connection's invocation queue, as far as acknowledgements care."""

    @property
    def busy(self) -> bool:
        """True while an invocation waits or runs."""
        ...


class MessageBuffer:
    """Sequence numbers, acknowledgements and the replay of one stateful connection."""

    __slots__ = (
        "sent",
        "replay",
        "size",
        "limit",
        "received",
        "_incoming_next",
        "_acked",
        "awaiting_sequence",
        "hold_acks",
    )

    def __init__(self, limit: int = REPLAY_MIN) -> None:
        #: The number of the last tracked message sent.
        self.sent = 0
        #: (number, bytes) of every tracked message sent and not yet acknowledged, in order.
        self.replay: deque[tuple[int, bytes]] = deque()
        #: Bytes held in :attr:`replay`.
        self.size = 0
        #: How many bytes :attr:`replay` may hold before the client is taken as too slow.
        self.limit = limit
        #: The number of the last tracked message received and handled.
        self.received = 0
        self._incoming_next = 1
        self._acked = 0
        #: After a reconnect nothing the client sends counts before its Sequence message.
        self.awaiting_sequence = False
        #: Acknowledge only while no invocation waits or runs (``--durable-resume``): an
        #: invocation the client saw acknowledged has its completion recorded, so after a
        #: crash the client sends again exactly those whose completion may be missing.
        self.hold_acks = False

    # -- outgoing ---------------------------------------------------------------------------

    def track(self, data: bytes) -> bool:
        """Number an outgoing message and keep it; False once the replay is over its limit."""
        self.sent += 1
        self.replay.append((self.sent, data))
        self.size += len(data)
        return self.size <= self.limit

    @property
    def client_acked(self) -> int:
        """The number of the last outgoing message the client acknowledged (or could have)."""
        return self.replay[0][0] - 1 if self.replay else self.sent

    def ack(self, sequence_id: int) -> None:
        """The client has every message up to ``sequence_id``: forget them."""
        replay = self.replay
        while replay and replay[0][0] <= sequence_id:
            self.size -= len(replay.popleft()[1])

    def resume(self) -> tuple[int, Iterable[bytes]]:
        """The number the client's next message is, and the bytes to send again, in order."""
        first = self.replay[0][0] if self.replay else self.sent + 1
        return first, [data for _, data in self.replay]

    # -- incoming ---------------------------------------------------------------------------

    def accept(self) -> bool:
        """Count a tracked message from the client; False when it must be ignored.

        Ignored are everything between a reconnect and the client's Sequence message, and a
        message the client replays that was handled already.
        """
        if self.awaiting_sequence:
            return False
        number = self._incoming_next
        self._incoming_next = number + 1
        if number <= self.received:
            return False
        self.received = number
        return True

    def sequence(self, sequence_id: int) -> bool:
        """The client's Sequence message: its next message is ``sequence_id``.

        False when that skips past what was received (a protocol error).
        """
        if sequence_id > self.received + 1:
            return False
        self._incoming_next = sequence_id
        self.awaiting_sequence = False
        return True

    def detached(self) -> None:
        """The socket dropped: what arrives before the client's Sequence is stale."""
        self.awaiting_sequence = True

    def ack_due(self, invocations: Invocations | None = None) -> int | None:
        """The number to acknowledge, when there is something new since the last Ack (and,
        with :attr:`hold_acks`, no invocation of ``invocations`` waits or runs)."""
        if self.hold_acks and invocations is not None and invocations.busy:
            return None
        if self.received > self._acked:
            self._acked = self.received
            return self.received
        return None

    @property
    def acknowledged(self) -> int:
        """The number in the last Ack sent to the client."""
        return self._acked

    # -- moving to another node ---------------------------------------------------------------

    def export(self) -> list[object]:
        """The buffer as plain values (for msgpack): what another node needs to go on."""
        return [self.sent, self.received, [[n, data] for n, data in self.replay]]

    @classmethod
    def restore(cls, state: list[object], limit: int = REPLAY_MIN) -> MessageBuffer:
        """A buffer from :meth:`export`, waiting for the client's Sequence (a new socket)."""
        sent, received, replay = state
        if not isinstance(sent, int) or not isinstance(received, int):
            raise ValueError("a message buffer's counters must be integers")
        if not isinstance(replay, list):
            raise ValueError("a message buffer's replay must be a list")
        buffer = cls(limit)
        buffer.sent = sent
        buffer.received = received
        buffer._incoming_next = received + 1
        buffer._acked = received
        for number, data in replay:
            buffer.replay.append((int(number), bytes(data)))
            buffer.size += len(data)
        buffer.awaiting_sequence = True
        return buffer
