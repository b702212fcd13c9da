"""Recording stateful connections in Redis (``--durable-resume``): nothing leaves unrecorded.

``docs/design/durable-resume.md`` tells why; in short, after a crash another node must know
every message the client may have seen and how far the client was read. So per durable
connection, beside its resume entry (``keys.resume_key``, one hash slot):

- the entry gets ``durable`` (the recording node), ``protocol``, ``sent`` (the last number
  recorded), ``trimmed`` (the client acknowledged up to there), ``acked`` (the number of the
  last Ack sent to the client), ``groups`` and
  ``since:<channel>`` for each of its channels (when it joined: its history counts from
  there), ``at`` (the last record);
- ``:log`` (ZSET) holds every numbered message the client has not acknowledged, scored by its
  number; ``:pos`` (HASH) where delivery stands on its channels (``capture.positions``).

The connection's outbound buffer is gated (``OutboundBuffer.hold``): every write waits until
the record written after it is confirmed. Once per event-loop turn the connections with new
writes are recorded, each with what changed since its last confirmed record, in one
``keys.RECORD`` call (or a few, :data:`MAX_RECORDS` connections each): each connection's
record is atomic (never half written). One record per connection is in flight at a time, so a
slow Redis makes the next carry more. A Redis outage holds durable connections' output (up to
``--max-buffer-size``, then they close as too slow) instead of letting the record fall behind.

The record is fenced: a call made after another node claimed the entry changes nothing and
tells :attr:`DurableRecorder.on_taken`. Acks wait while an invocation runs
(``MessageBuffer.hold_acks``), so what the client saw acknowledged has its completion recorded.

Every channel of a durable connection is *watched* (``history.py``): announced when it
becomes watched and again every quarter window, so publishers keep its history
(``announce.py``).

On a Redis Cluster a connection's three keys share a hash slot (``keys.resume_key``), and
the connections of one call must too: the records of a turn go in one call per slot.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgpack

from ..lifetime.base import ClientConnection
from ..outbound import OutboundBuffer
from ..stateful import MessageBuffer
from .announce import ChannelWatches
from .capture import Positions, positions
from .keys import RECORD, resume_log_key, resume_pos_key
from .outbox import BackplaneUnavailable
from .slots import key_slot

if TYPE_CHECKING:
    from .base import ClusterNode
    from .manager import RedisLifetimeManager

logger = logging.getLogger("hubplane.durable")

#: Seconds added to ``--disconnect-timeout`` in the watch window (see :class:`DurableRecorder`).
WINDOW_MARGIN = 5.0
#: A record outlives a connection whose node died and whose client never came back.
RECORD_TTL = 7 * 24 * 3600
#: Retrying a record that failed (Redis unreachable or slow): first and longest wait.
RETRY_FIRST = 0.05
RETRY_MAX = 1.0
#: How often a record's expiry is pushed back (seconds; the records live RECORD_TTL).
EXPIRE_EVERY = 24 * 3600.0
#: Records per script call, and about how many bytes of messages (more go in another call).
MAX_RECORDS = 256
MAX_RECORD_BYTES = 512 * 1024

_packb = functools.partial(msgpack.packb, use_bin_type=True)
_NONE: frozenset[bytes] = frozenset()


class RecordedConnection(ClientConnection, Protocol):
    """What recording needs of a connection (``backplane.connection.HubConnection`` has it)."""

    @property
    def outbound(self) -> OutboundBuffer:
        """Its outbound buffer (gated while recorded)."""
        ...

    @property
    def message_buffer(self) -> MessageBuffer | None:
        """Stateful reconnect's numbers and replay (None when it is off)."""
        ...

    @property
    def log_name(self) -> str:
        """How log records name it."""
        ...


@dataclass(slots=True)
class DurableStats:
    """What recording cost and what went wrong."""

    #: Record calls confirmed, messages they added to logs, and those messages' bytes.
    records: int = 0
    messages: int = 0
    bytes: int = 0
    #: Record calls that failed (Redis unreachable or too slow) and were retried.
    failures: int = 0
    #: Connections whose entry another node had claimed, or had lost (nothing to record to).
    taken: int = 0
    lost: int = 0


@dataclass(slots=True)
class _Sent:
    """What one record call carries for one connection (applied to its state once confirmed)."""

    mark: int
    sent: int
    client_ack: int
    acked: int
    channels: frozenset[bytes]
    groups: frozenset[str]
    positions: dict[bytes, dict[str, int]]
    expire: bool
    messages: int
    size: int
    waiters: list[asyncio.Future[None]]


class _Call:
    """One RECORD call being built: its keys, arguments, connections and bytes."""

    __slots__ = ("keys", "args", "batch", "size")

    def __init__(self, node_id: str) -> None:
        self.keys: list[bytes] = []
        self.args: list[Any] = [node_id]
        self.batch: list[tuple[_State, _Sent]] = []
        self.size = 0


class _State:
    """One durable connection: what Redis has, what it is being sent."""

    __slots__ = (
        "connection",
        "manager",
        "keys",
        "slot",
        "sent",
        "client_ack",
        "acked",
        "positions",
        "extra",
        "channels",
        "recorded_channels",
        "recorded_groups",
        "protocol_recorded",
        "expire_at",
        "dirty",
        "in_flight",
        "retry",
        "delay",
        "waiters",
        "live",
    )

    def __init__(
        self, connection: RecordedConnection, manager: RedisLifetimeManager, entry: bytes
    ) -> None:
        self.connection = connection
        self.manager = manager
        cluster = manager.node.cluster
        self.keys = (entry, resume_log_key(entry, cluster), resume_pos_key(entry, cluster))
        #: The keys' hash slot on a Redis Cluster (one call per slot), else 0.
        self.slot = key_slot(entry) if cluster else 0
        # As Redis has it (confirmed): numbers, positions, channels with a since, groups.
        self.sent = 0
        self.client_ack = 0
        self.acked = 0
        self.positions: dict[bytes, dict[str, int]] = {}
        self.recorded_channels: frozenset[bytes] = frozenset()
        self.recorded_groups: frozenset[str] | None = None
        self.protocol_recorded = False
        self.expire_at = 0.0  # when the record's expiry is to be pushed back (monotonic)
        #: Positions to record besides the node's own (those of a connection taken over).
        self.extra: Positions = {}
        #: The connection's channels now.
        self.channels: frozenset[bytes] = frozenset()
        self.dirty = False
        self.in_flight = False
        self.retry: asyncio.TimerHandle | None = None
        self.delay = RETRY_FIRST
        #: Who waits for the next record (group changes).
        self.waiters: list[asyncio.Future[None]] = []
        self.live = True


def _release(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


class DurableRecorder:
    """The records of this node's durable connections, and the watches of their channels.

    ``window`` = 2 x (``disconnect_timeout`` + :data:`WINDOW_MARGIN`): a watch lasts that long
    after its announcement and publishers keep that much history. Channels are announced again
    every quarter window, so a watch outlives its holder's crash by more than the disconnect
    timeout (the longest a client may take to come back) plus the margin.
    """

    def __init__(self, node: ClusterNode, disconnect_timeout: float, heartbeat: float) -> None:
        self.node = node
        self.bus = node.bus
        self.window_ms = int(2 * (disconnect_timeout + WINDOW_MARGIN) * 1000)
        self.stats = DurableStats()
        self._record_sha = self.bus.register_script(RECORD)
        self._states: dict[int, _State] = {}
        self._pending: list[_State] = []
        self._scheduled = False
        #: The channels of the connections recorded here, announced as watched.
        self.watches = ChannelWatches(node, self.window_ms, heartbeat)
        #: Told of a connection whose entry another node claimed; True when the connection
        #: was ended for it (it moved), False to try again later (a handover is under way).
        self.on_taken: Callable[[RecordedConnection], bool] = lambda _connection: False

    # -- connections --------------------------------------------------------------------------

    @property
    def connections(self) -> int:
        """Durable connections being recorded."""
        return len(self._states)

    def recording(self, connection: RecordedConnection) -> bool:
        """True when ``connection`` is recorded here."""
        return id(connection) in self._states

    def attach(
        self,
        manager: RedisLifetimeManager,
        connection: RecordedConnection,
        entry: bytes,
        *,
        sent: int = 0,
        positions: Positions | None = None,
    ) -> None:
        """Record ``connection`` (its resume entry is ``entry``) from now on.

        A connection taken over from another node passes what its record already holds
        (``sent``) and where delivery stands (``positions``). Its output is held until
        recorded; a connection that turns out not to be stateful is let go.
        """
        if id(connection) in self._states:
            return
        state = self._states[id(connection)] = _State(connection, manager, entry)
        state.sent = state.client_ack = sent
        state.extra = dict(positions or {})
        self._set_channels(state, frozenset(manager.channels_for(connection)))
        connection.outbound.hold(functools.partial(self._touch, state))
        self._touch(state)

    def changed(self, connection: ClientConnection) -> asyncio.Future[None] | None:
        """``connection``'s groups changed: a future done once that is recorded (or failed to
        be), None when it is not recorded here or nothing changed."""
        state = self._states.get(id(connection))
        if state is None:
            return None
        channels = frozenset(state.manager.channels_for(connection))
        if channels == state.channels:
            return None
        self._set_channels(state, channels)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.waiters.append(waiter)
        state.dirty = False  # _touch schedules it even when writes had marked it
        self._touch(state)
        return waiter

    def forget(self, connection: ClientConnection) -> None:
        """``connection`` ended here (or moved away): stop recording it."""
        state = self._states.pop(id(connection), None)
        if state is not None:
            self._drop(state)

    def _drop(self, state: _State, let_go: bool = False) -> None:
        state.live = False
        self._states.pop(id(state.connection), None)
        if state.retry is not None:
            state.retry.cancel()
            state.retry = None
        self._set_channels(state, frozenset())
        _release(state.waiters)
        state.waiters = []
        if let_go:
            connection = state.connection
            connection.outbound.open()
            buffer = connection.message_buffer
            if buffer is not None:
                buffer.hold_acks = False

    @property
    def watching(self) -> dict[bytes, int]:
        """Watched channel -> durable connections here on it."""
        return self.watches.watching

    def _set_channels(self, state: _State, channels: frozenset[bytes]) -> None:
        self.watches.change(state.channels, channels)
        state.channels = channels

    # -- recording ----------------------------------------------------------------------------

    def _touch(self, state: _State) -> None:
        """The gate: something was written (or changed); record it this loop turn."""
        if state.dirty:
            return
        state.dirty = True
        if state.in_flight or state.retry is not None:
            return  # sent when the call in flight returns, or on the retry
        self._pending.append(state)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self.watches.new:
            self.watches.announce(0.0)
        pending, self._pending = self._pending, []
        calls: dict[int, _Call] = {}  # per hash slot (one on a single Redis)
        cache: Positions = {}
        for state in pending:
            if not state.live or state.in_flight or state.retry is not None:
                continue
            call = calls.get(state.slot)
            if call is None:
                call = calls[state.slot] = _Call(self.node.node_id)
            built = self._build(state, call.keys, call.args, cache)
            if built is None:
                continue
            call.batch.append((state, built))
            call.size += built.size + 64
            if len(call.batch) >= MAX_RECORDS or call.size >= MAX_RECORD_BYTES:
                self._send(call.batch, call.keys, call.args)
                del calls[state.slot]
        for call in calls.values():
            if call.batch:
                self._send(call.batch, call.keys, call.args)

    def _build(
        self, state: _State, keys: list[bytes], args: list[Any], cache: Positions
    ) -> _Sent | None:
        """Add ``state``'s news to a record call; None when there are none (what was written
        may go at once) or the connection turned out not to be recorded."""
        state.dirty = False
        connection = state.connection
        outbound = connection.outbound
        mark = outbound.mark
        buffer = connection.message_buffer
        protocol = connection.protocol
        if protocol is None and not connection.closing:
            outbound.release(mark)  # before the handshake: nothing to record yet
            return None
        if buffer is None or protocol is None:
            # Not stateful after all (version 1, a failed handshake): nothing to record.
            self._drop(state, let_go=True)
            return None
        buffer.hold_acks = True
        entries: list[Any] = []
        size = 0
        for number, data in reversed(buffer.replay):
            if number <= state.sent:
                break
            entries.append(data)
            entries.append(number)
            size += len(data)
        sent = buffer.sent
        client_ack = buffer.client_acked
        acked = buffer.acknowledged
        channels = state.channels
        if channels is state.recorded_channels:
            joined = left = _NONE
        else:
            joined = channels - state.recorded_channels
            left = state.recorded_channels - channels
        groups = state.recorded_groups
        if groups is None or connection.groups != groups:
            groups = frozenset(connection.groups)
        positions = self._positions(state, cache)
        now = time.monotonic()
        expire = now >= state.expire_at
        if (
            not entries
            and sent == state.sent
            and client_ack == state.client_ack
            and acked == state.acked
            and not positions
            and not joined
            and not left
            and groups == state.recorded_groups
            and state.protocol_recorded
            and not expire
            and not connection.closing  # its Close waits for its entry's deletion (handover.py)
        ):
            outbound.release(mark)  # nothing new: what was written may go
            _release(state.waiters)
            state.waiters = []
            return None
        keys.extend(state.keys)
        args.append("" if state.protocol_recorded else protocol.name)
        args.append(sent)
        args.append("" if client_ack == state.client_ack else client_ack)
        args.append(acked)
        args.append("" if groups == state.recorded_groups else _packb(sorted(groups)))
        args.append(RECORD_TTL if expire else 0)
        args.append(len(joined))
        args.extend(joined)
        args.append(len(left))
        args.extend(left)
        args.append(sum(len(heard) for heard in positions.values()))
        for channel, heard in positions.items():
            for origin, seq in heard.items():
                args.append(channel + b"\0" + origin.encode())
                args.append(seq)
        args.append(len(entries) // 2)
        for i in range(len(entries) - 1, 0, -2):  # oldest first: (number, message) pairs
            number = entries[i]
            args.append(number)
            args.append(_packb([number, entries[i - 1]]))
        waiters, state.waiters = state.waiters, []
        state.in_flight = True
        return _Sent(
            mark, sent, client_ack, acked, channels, groups, positions, expire,
            len(entries) // 2, size, waiters,
        )  # fmt: skip

    def _send(self, batch: list[tuple[_State, _Sent]], keys: list[bytes], args: list[Any]) -> None:
        try:
            future = self.bus.query_soon("EVALSHA", self._record_sha, len(keys), *keys, *args)
        except BackplaneUnavailable:
            for state, sent in batch:
                state.in_flight = False
                _release(sent.waiters)  # a group change waits for Redis no longer than this
                self._failed(state)
            return
        future.add_done_callback(functools.partial(self._done, batch))

    def _positions(self, state: _State, cache: Positions) -> dict[bytes, dict[str, int]]:
        """Where delivery stands now and Redis does not know yet (channel -> origin -> n).

        ``cache`` holds what the node's counters say per channel during one flush: the
        members of a group share it.
        """
        manager = state.manager
        recorded = state.positions
        extra = state.extra
        news: dict[bytes, dict[str, int]] = {}
        for channel in state.channels:
            heard = cache.get(channel)
            if heard is None:
                found = positions(self.node.node_id, (channel,), manager.sequence, manager.received)
                heard = cache[channel] = found.get(channel, {})
            more = extra.get(channel) if extra else None
            if more:
                heard = {**heard, **{o: n for o, n in more.items() if n > heard.get(o, 0)}}
            if not heard:
                continue
            known = recorded.get(channel)
            for origin, seq in heard.items():
                if known is None or seq > known.get(origin, 0):
                    news.setdefault(channel, {})[origin] = seq
        if extra:  # positions of channels it is no longer on, from where it came from
            for channel, heard in extra.items():
                if channel not in state.channels:
                    news.setdefault(channel, {}).update(heard)
        return news

    def _done(self, batch: list[tuple[_State, _Sent]], future: asyncio.Future[Any]) -> None:
        error = future.exception() if not future.cancelled() else BackplaneUnavailable("stop")
        if error is None:
            reply = future.result()
            statuses = [int(status) for status in reply[1:]]
            if len(statuses) != len(batch):
                error = RuntimeError(f"{len(statuses)} statuses for {len(batch)} records")
        elif not isinstance(error, BackplaneUnavailable):
            logger.warning("recording %d connections failed: %s", len(batch), error)
        for i, (state, sent) in enumerate(batch):
            state.in_flight = False
            _release(sent.waiters)
            if not state.live:
                continue
            if error is not None:
                self._failed(state)
            else:
                self._recorded(state, sent, statuses[i])

    def _recorded(self, state: _State, sent: _Sent, status: int) -> None:
        if status == 0:
            self.stats.taken += 1
            if self.on_taken(state.connection):
                self._drop(state)
                return
            self._failed(state)  # a handover is under way: it ends this connection, or not
            return
        if status < 0 and state.connection.closing:
            self._drop(state, let_go=True)  # ended by the server: its entry went first
            return
        if status < 0:
            self.stats.lost += 1
            logger.warning(
                "%s: its resume entry is gone from Redis: it goes on without a record "
                "(a resume after a crash of this node would be refused)",
                state.connection.log_name,
            )
            self._drop(state, let_go=True)
            return
        state.sent, state.client_ack, state.acked = sent.sent, sent.client_ack, sent.acked
        state.recorded_channels = sent.channels
        state.recorded_groups = sent.groups
        state.protocol_recorded = True
        if sent.expire:
            state.expire_at = time.monotonic() + EXPIRE_EVERY
        state.extra = {}
        for channel, heard in sent.positions.items():
            state.positions.setdefault(channel, {}).update(heard)
        for channel in list(state.positions):
            if channel not in sent.channels:
                del state.positions[channel]
        state.delay = RETRY_FIRST
        stats = self.stats
        stats.records += 1
        stats.messages += sent.messages
        stats.bytes += sent.size
        state.connection.outbound.release(sent.mark)
        if state.dirty or state.waiters:
            state.dirty = False
            self._touch(state)

    def _failed(self, state: _State) -> None:
        self.stats.failures += 1
        state.dirty = True
        delay = state.delay
        state.delay = min(delay * 2, RETRY_MAX)
        state.retry = asyncio.get_running_loop().call_later(delay, self._retry, state)

    def _retry(self, state: _State) -> None:
        state.retry = None
        if state.live and not state.in_flight:
            state.dirty = False
            self._touch(state)

    # -- watches ------------------------------------------------------------------------------

    def start(self) -> None:
        """Announce watches every beat (the node is started)."""
        self.watches.start()

    def stop(self) -> None:
        """Stop announcing (the watches expire by themselves)."""
        self.watches.stop()
