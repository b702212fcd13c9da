"""Redis Cluster routing, sans-I/O: hash slots, which key routes a command, the slot map.

A Redis Cluster splits the key space (and the sharded pub/sub channels) into 16384 hash
slots; each slot has one master. A key's slot is CRC16 of the key, or of its hash tag (the
part between the first ``{`` and the next ``}``, when not empty), modulo 16384. A command
goes to the master of its key's slot; a node that does not serve the slot answers ``MOVED``
(for good) or ``ASK`` (during a migration), naming the node that does.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

from redis.crc import key_slot as _crc_slot
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    MovedError,
    ReadOnlyError,
    TryAgainError,
)

SLOTS = 16384

#: A node's address: (host, port).
Address = tuple[str, int]


def key_slot(key: bytes | str) -> int:
    """The hash slot of a key or a sharded channel (hash tags honoured)."""
    return int(_crc_slot(key.encode() if isinstance(key, str) else key))


@cache
def _slot_tags() -> tuple[bytes, ...]:
    """Per slot, the smallest decimal number whose hash is that slot (about 110,000 numbers
    tried, once: some 70 ms)."""
    tags: list[bytes | None] = [None] * SLOTS
    left, n = SLOTS, 0
    while left:
        text = str(n).encode()
        slot = binascii.crc_hqx(text, 0) % SLOTS
        if tags[slot] is None:
            tags[slot] = text
            left -= 1
        n += 1
    return tuple(t for t in tags if t is not None)


def slot_tag(slot: int) -> bytes:
    """A hash tag for ``slot``: ``b"{" + slot_tag(s) + b"}" + anything`` hashes to slot ``s``,
    whatever braces ``anything`` holds (the smallest decimal number that hashes there)."""
    return b"{" + _slot_tags()[slot] + b"}"


def by_slot(channels: Iterable[bytes]) -> list[list[bytes]]:
    """``channels`` in runs of one slot each (SSUBSCRIBE takes channels of one slot only)."""
    runs: dict[int, list[bytes]] = {}
    for channel in channels:
        runs.setdefault(key_slot(channel), []).append(channel)
    return list(runs.values())


def _name(arg: Any) -> bytes:
    return arg.upper() if isinstance(arg, bytes) else str(arg).upper().encode()


# Commands with no key: any master answers them.
_KEYLESS = {b"INFO", b"TIME", b"PING", b"SCRIPT", b"CLUSTER"}


def routing_key(args: Sequence[Any]) -> bytes | str | None:
    """The key (or sharded channel) whose slot a command goes to; None: any master.

    Scripts route by their first declared key (a script with none goes anywhere);
    ``PUBSUB SHARDNUMSUB`` and ``XINFO STREAM`` by their first argument after the
    subcommand; every other command hubplane sends has its key first.
    """
    name = _name(args[0])
    if name in (b"EVALSHA", b"EVAL"):
        return args[3] if int(args[2]) > 0 else None
    if name in (b"PUBSUB", b"XINFO"):
        return args[2] if len(args) > 2 and _name(args[1]) != b"NUMSUB" else None
    if name in _KEYLESS or len(args) < 2:
        return None
    return args[1]  # type: ignore[no-any-return]


def redirection(error: object) -> tuple[str, int, Address] | None:
    """``("MOVED" | "ASK", slot, address)`` when ``error`` is a cluster redirection (redis-py
    parses ``-MOVED 3999 host:port`` into a :class:`MovedError` that no longer says MOVED)."""
    if isinstance(error, AskError):  # MovedError is one too
        kind = "MOVED" if isinstance(error, MovedError) else "ASK"
        return kind, error.slot_id, (error.host, error.port)
    text = str(error)
    kind, _, rest = text.partition(" ")
    if kind not in ("MOVED", "ASK"):
        return None
    slot, _, where = rest.partition(" ")
    host, _, port = where.strip().rpartition(":")
    try:
        return kind, int(slot), (host, int(port))
    except ValueError:
        return None


_PASSING = (TryAgainError, ClusterDownError, MasterDownError, BusyLoadingError, ReadOnlyError)


def is_retryable(error: object) -> bool:
    """True for a cluster state that passes by itself: a failover (CLUSTERDOWN, MASTERDOWN,
    READONLY from a master demoted to replica), a migration (TRYAGAIN), a loading node."""
    if isinstance(error, _PASSING):
        return True
    text = str(error)
    return text.startswith(("CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "LOADING", "READONLY"))


class SlotMap:
    """Which master serves each slot, from ``CLUSTER SLOTS``."""

    __slots__ = ("_owners", "masters")

    def __init__(self, owners: list[Address | None]) -> None:
        self._owners = owners
        #: Every master serving at least one slot, in slot order.
        self.masters: list[Address] = list(dict.fromkeys(a for a in owners if a is not None))

    @classmethod
    def from_cluster_slots(cls, reply: Sequence[Any], default_host: str) -> SlotMap:
        """The map from a ``CLUSTER SLOTS`` reply: ``[start, end, [host, port, id], ...]``
        per range. An empty host (a node that does not know its address) is the host the
        reply came from."""
        owners: list[Address | None] = [None] * SLOTS
        for row in reply:
            start, end, master = int(row[0]), int(row[1]), row[2]
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            address = (host or default_host, int(master[1]))
            for slot in range(start, end + 1):
                owners[slot] = address
        return cls(owners)

    def owner(self, slot: int) -> Address | None:
        """The master of ``slot`` (None: nobody serves it now)."""
        return self._owners[slot]

    def route(self, key: bytes | str | None) -> Address | None:
        """The master for a command with ``key`` (None for a key: the first master)."""
        if key is None:
            return self.masters[0] if self.masters else None
        return self._owners[key_slot(key)]

    def moved(self, slot: int, address: Address) -> None:
        """Redis said ``MOVED``: ``slot`` is ``address``'s now."""
        self._owners[slot] = address
        if address not in self.masters:
            self.masters.append(address)

    def slots_of(self, address: Address) -> list[int]:
        """The slots ``address`` serves."""
        return [s for s, a in enumerate(self._owners) if a == address]
