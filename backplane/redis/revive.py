"""Taking over a durable connection whose node died: its record, then its channels' history.

The node holding a durable connection recorded it (``durable.py``) before sending a byte of
it: every message the client may have seen is in the record's log with its number, and so is
how far the client was read. What the dead node never delivered is in the history of the
connection's channels (``history.py``): per channel, what was published after the connection
joined (``since:<channel>``) and after the last message the record says was delivered from
each publisher (its *position*).

:func:`read_record` and :func:`read_history` read those (the taker has claimed the entry,
so the dead node, if it is not dead after all, can no longer change it); :func:`plan` checks
them and says what to deliver, in order. It refuses (:class:`Refused`) rather than resume with
something missing:

- a record that is not complete: not written by the node that held the connection, a log
  with holes;
- history that does not reach back: a publisher's numbers do not continue from its position
  (each message names the publisher's previous one on its channel, ``prev``), or the stream
  was trimmed past the last record.

Publishers without numbers (.NET nodes, hand-written ones) keep no history: what they
published while the connection had no node is not delivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack
from redis.exceptions import ResponseError

from . import wire
from .capture import Positions
from .keys import history_key, resume_log_key, resume_pos_key, watched_key

if TYPE_CHECKING:
    from .bus import RedisBus


class Refused(Exception):
    """The connection cannot be resumed without missing something (the message says what)."""


StreamId = tuple[int, int]


def stream_id(value: bytes | str) -> StreamId:
    """``b"1700000000000-3"`` -> ``(1700000000000, 3)``."""
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class Record:
    """A durable connection's record, as its node left it."""

    connection_id: str
    hub: str
    user: str
    node: str
    durable: str
    protocol: str
    sent: int
    #: the client acknowledged everything up to here (the log starts after it)
    trimmed: int
    acked: int
    groups: list[str]
    #: channel -> since when it counts (a stream id)
    since: dict[bytes, StreamId]
    #: (number, framed message) of every message the client has not acknowledged
    log: list[tuple[int, bytes]]
    positions: Positions
    #: when it was last written (ms, Redis time)
    at: int


@dataclass
class History:
    """What a channel's history stream holds after a point."""

    #: (stream id, the invocation as published), in stream order
    entries: list[tuple[StreamId, wire.RedisInvocation]] = field(default_factory=list)
    #: the first id still in the stream when older ones were trimmed, else None
    trimmed_before: StreamId | None = None

    def complete_after(self, point: StreamId) -> bool:
        """True when nothing published after ``point`` was trimmed away."""
        return self.trimmed_before is None or self.trimmed_before <= point


@dataclass
class Plan:
    """What the new node delivers after the record's log, and where delivery then stands."""

    #: (channel, invocation) in order
    messages: list[tuple[bytes, wire.RedisInvocation]]
    delivered: Positions
    #: history entries looked at, and those skipped (delivered already, or not for it)
    seen: int = 0


def _text(raw: Mapping[bytes, bytes], name: str) -> str:
    value = raw.get(name.encode())
    return value.decode() if value is not None else ""


def parse_record(
    raw: Mapping[bytes, bytes], log: Iterable[bytes], positions: Mapping[bytes, bytes]
) -> Record:
    """The record from its entry (HGETALL), log (ZRANGE) and positions (HGETALL)."""
    if not raw:
        raise Refused("no resume entry")
    try:
        groups_raw = raw.get(b"groups")
        groups = [str(g) for g in msgpack.unpackb(groups_raw)] if groups_raw else []
        since = {
            key[len(b"since:") :]: stream_id(value)
            for key, value in raw.items()
            if key.startswith(b"since:")
        }
        entries = []
        for member in log:
            number, data = msgpack.unpackb(member)
            entries.append((int(number), bytes(data)))
        entries.sort()
        delivered: Positions = {}
        for key, value in positions.items():
            channel, _, origin = key.rpartition(b"\0")
            delivered.setdefault(channel, {})[origin.decode()] = int(value)
        return Record(
            connection_id=_text(raw, "id"),
            hub=_text(raw, "hub"),
            user=_text(raw, "user"),
            node=_text(raw, "node"),
            durable=_text(raw, "durable"),
            protocol=_text(raw, "protocol"),
            sent=int(raw.get(b"sent") or 0),
            trimmed=int(raw.get(b"trimmed") or 0),
            acked=int(raw.get(b"acked") or 0),
            groups=groups,
            since=since,
            log=entries,
            positions=delivered,
            at=int(raw.get(b"at") or 0),
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise Refused(f"a malformed record: {exc}") from exc


def check_record(record: Record, holder: str) -> None:
    """Refuse a record that does not hold everything its client may have seen."""
    if not record.durable:
        raise Refused("the connection was not recorded (its node ran without --durable-resume)")
    if record.durable != holder:
        raise Refused(f"the record was written by {record.durable}, not by its node {holder}")
    if not record.protocol:
        raise Refused("the record holds no protocol")
    numbers = [number for number, _ in record.log]
    if numbers != list(range(record.trimmed + 1, record.sent + 1)):
        raise Refused(
            f"the log does not hold every message after #{record.trimmed} up to "
            f"#{record.sent} ({len(numbers)} messages)"
        )
    if record.acked < 0:
        raise Refused("negative numbers in the record")


async def read_record(bus: RedisBus, entry: bytes) -> Record:
    """Read the record of the connection whose resume entry is ``entry`` (one round trip;
    on a Redis Cluster the three keys share the entry's slot, ``keys.resume_key``)."""
    raw, log, positions = await asyncio.gather(
        bus.query("HGETALL", entry),
        bus.query("ZRANGE", resume_log_key(entry, bus.cluster), 0, -1),
        bus.query("HGETALL", resume_pos_key(entry, bus.cluster)),
    )
    return parse_record(raw or {}, log or [], positions or {})


def _info(reply: Any) -> dict[bytes, Any]:
    if isinstance(reply, dict):
        return {k if isinstance(k, bytes) else str(k).encode(): v for k, v in reply.items()}
    if isinstance(reply, list):
        return {reply[i]: reply[i + 1] for i in range(0, len(reply) - 1, 2)}
    return {}


def parse_history(rows: Iterable[Any], info: Mapping[bytes, Any]) -> History:
    """A channel's history from ``XRANGE`` rows and its ``XINFO STREAM`` (empty: no stream)."""
    history = History()
    for entry_id, fields in rows:
        data = fields.get(b"m") if isinstance(fields, dict) else None
        if data is None:
            continue
        try:
            invocation = wire.read_invocation(data)
        except wire.WireError:
            continue
        history.entries.append((stream_id(entry_id), invocation))
    length = info.get(b"length")
    added = info.get(b"entries-added")
    first = info.get(b"first-entry")
    if info and first:
        first_id = stream_id(first[0])
        # Redis 7 counts what was ever added; before it, assume the worst.
        if added is None or length is None or int(added) > int(length):
            history.trimmed_before = first_id
    return history


async def read_history(
    bus: RedisBus, prefix: bytes, since: Mapping[bytes, StreamId]
) -> dict[bytes, History]:
    """The history of each channel of ``since`` after its point (one round trip).

    Refuses when a channel is not watched now: publishers may not have kept its history.
    """
    channels = list(since)
    cluster = bus.cluster  # each query goes to the shard of its key
    scores = bus.query("ZMSCORE", watched_key(prefix, cluster), *channels)
    clock = bus.query("TIME")
    queries = []
    for channel, point in since.items():
        key = history_key(prefix, channel, cluster, bus.sharded)
        start = f"({point[0]}-{point[1]}"
        queries.append(bus.query("XRANGE", key, start, "+"))
        queries.append(bus.query("XINFO", "STREAM", key))
    replies = await asyncio.gather(*queries, return_exceptions=True)
    try:
        watched, now = await scores, await clock
    except ResponseError as exc:  # ZMSCORE needs Redis 6.2, as the history does
        raise Refused(f"this Redis keeps no history ({exc})") from exc
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
    unwatched = [
        c for c, score in zip(channels, watched, strict=True) if not score or float(score) < now_ms
    ]
    if unwatched:
        raise Refused(f"no history was kept of {unwatched!r} (not watched)")
    histories = {}
    for i, channel in enumerate(since):
        rows, info = replies[2 * i], replies[2 * i + 1]
        if isinstance(rows, BaseException):
            raise rows
        if isinstance(info, BaseException):
            if "no such key" not in str(info):
                raise info
            info = {}
        histories[channel] = parse_history(rows or [], _info(info))
    return histories


def plan(connection_id: str, record: Record, histories: Mapping[bytes, History]) -> Plan:
    """What to deliver after the log: per channel the history past each publisher's position,
    merged in stream order. Raises :class:`Refused` when something may be missing."""
    delivered: Positions = {ch: dict(heard) for ch, heard in record.positions.items()}
    at: StreamId = (record.at, 0)
    ordered: list[tuple[StreamId, bytes, wire.RedisInvocation]] = []
    seen = 0
    for channel, history in histories.items():
        if not history.complete_after(at):
            raise Refused(f"the history of {channel!r} was trimmed past the connection's record")
        since = record.since.get(channel, (0, 0))
        positions = delivered.setdefault(channel, {})
        last: dict[str, int] = {}  # publisher -> its last number seen after its position
        for entry_id, invocation in history.entries:
            origin, seq = invocation.origin, invocation.seq
            if origin is None or not seq:
                continue
            seen += 1
            position = positions.get(origin, 0)
            before = last.get(origin, position)
            if seq <= before:
                continue  # delivered already, or a copy (a publish that was retried)
            prev = invocation.prev
            if before:
                if prev and prev != before:
                    raise Refused(
                        f"{origin}'s messages on {channel!r} after #{before} up to #{prev} "
                        "are not in the history"
                    )
            elif prev and not history.complete_after(since):
                raise Refused(
                    f"{origin}'s message #{prev} on {channel!r} is no longer in the history"
                )
            last[origin] = seq
            if invocation.return_channel:
                continue  # a client result asked of the dead node's client: failed there
            if invocation.excluded and connection_id in invocation.excluded:
                continue
            ordered.append((entry_id, channel, invocation))
        positions.update(last)
    ordered.sort(key=lambda item: item[0])  # stable: each channel keeps its order
    return Plan([(channel, inv) for _, channel, inv in ordered], delivered, seen)
