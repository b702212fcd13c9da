"""Removing presence entries in bounded steps: a dead node's, and this node's stale ones.

A node's entries are a SET of its connection ids per hub, and per connection a record, a
user entry and group entries. Walking them all in one Lua call would block Redis for as long
as the node was large, and would have to build keys the script does not declare. So the
walk happens here, :data:`CHUNK` connections at a time: ``SSCAN`` the node's SET, read the
records and the groups of that chunk in one pipelined round trip, then remove each
connection with ``REMOVE_CONNECTION``, whose keys are all declared (one more round trip).
Redis serves everybody else between two steps.

A purge of a dead node is claimed first (``PURGE_BEGIN``: not if it came back, and not by two
survivors at once: the claim is a lease that expires, renewed at each step, so a purger that
dies midway leaves the node to the next one) and ended with ``PURGE_END``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import Any

import msgpack

from . import keys
from .bus import RedisBus
from .keys import PresenceKeys

#: Connections per step: one SSCAN, one pipelined read, one pipelined batch of removals.
CHUNK = 100
#: How long a purge's claim lasts without being renewed (ms).
LEASE_MS = 30_000
#: Reads and removals of one connection whose groups keep changing under the walk.
ATTEMPTS = 3

#: What a sweep keeps: connection id -> its groups on this node, or None for one to remove.
Local = Callable[[str], Collection[str] | None]


class PresencePurge:
    """The removal of presence entries in chunks, for one node (``node_id``) of one bus."""

    def __init__(self, bus: RedisBus, prefix: bytes, node_id: str) -> None:
        self.bus = bus
        self.prefix = prefix
        self.node_id = node_id
        self.cluster = bus.cluster
        self.nodes_key = keys.nodes_key(prefix, self.cluster)
        self.remove_sha = bus.register_script(keys.REMOVE_CONNECTION)
        self._begin_sha = bus.register_script(keys.PURGE_BEGIN)
        self._end_sha = bus.register_script(keys.PURGE_END)

    # -- one connection ----------------------------------------------------------------------

    def remove_command(
        self,
        hub: PresenceKeys,
        connection_id: str,
        node_id: str,
        user: str | None,
        groups: Collection[str],
    ) -> tuple[Any, ...]:
        """The command removing one connection of ``node_id`` from presence, every key given."""
        declared = [hub.conns, hub.node(node_id), hub.groups_of(connection_id)]
        if user is not None:
            declared.append(hub.user(user))
        names = list(groups)
        declared.extend(hub.group(g) for g in names)
        flag = "1" if user is not None else "0"
        return (
            "EVALSHA",
            self.remove_sha,
            len(declared),
            *declared,
            connection_id,
            node_id,
            flag,
            *names,
        )

    # -- a dead node -------------------------------------------------------------------------

    async def purge(self, node_id: str, cutoff: int) -> int | None:
        """Purge ``node_id`` unless it beat after ``cutoff`` (ms, Redis time), is gone already
        or is being purged by another node: the number of its connections removed, or None."""
        bus = self.bus
        lease = keys.purge_lease_key(self.prefix, node_id, self.cluster)
        node_key = keys.node_key(self.prefix, node_id, self.cluster)
        hubs = await bus.query(
            "EVALSHA",
            self._begin_sha,
            3,
            self.nodes_key,
            node_key,
            lease,
            node_id,
            cutoff,
            self.node_id,
            LEASE_MS,
        )
        if hubs is None:
            return None
        removed = 0
        for base in msgpack.unpackb(hubs, raw=True) if hubs else ():
            removed += await self.sweep(PresenceKeys(base, self.cluster), node_id, None, lease)
        await bus.query(
            "EVALSHA", self._end_sha, 3, self.nodes_key, node_key, lease, node_id, self.node_id
        )
        return removed

    # -- a node's SET, chunk by chunk -------------------------------------------------------

    async def sweep(
        self, hub: PresenceKeys, node_id: str, local: Local | None, lease: bytes | None = None
    ) -> int:
        """Walk ``node_id``'s SET of ``hub``: remove every connection that ``local`` does not
        keep (all of them without ``local``), and from the kept ones the groups they are not
        in locally. Returns the connections removed."""
        bus = self.bus
        removed = 0
        cursor: Any = 0
        while True:
            cursor, members = await bus.query("SSCAN", hub.node(node_id), cursor, "COUNT", CHUNK)
            gone: list[str] = []
            kept: list[str] = []
            for member in members:
                cid = member.decode()
                (gone if local is None or local(cid) is None else kept).append(cid)
            if gone:
                removed += await self._remove(hub, node_id, gone)
            if kept and local is not None:
                await self._trim_groups(hub, kept, local)
            if lease is not None:
                bus.command("PEXPIRE", lease, LEASE_MS)
            if int(cursor) == 0:
                return removed

    async def _remove(self, hub: PresenceKeys, node_id: str, ids: list[str]) -> int:
        bus = self.bus
        removed = 0
        for _ in range(ATTEMPTS):
            # One round trip for the chunk's records and groups, one for its removals.
            records, *groups = await asyncio.gather(
                bus.query("HMGET", hub.conns, *ids),
                *(bus.query("SMEMBERS", hub.groups_of(cid)) for cid in ids),
            )
            commands = []
            for cid, record, names in zip(ids, records, groups, strict=True):
                user = _user_of(record)
                decoded = [g.decode() for g in names]
                commands.append(self.remove_command(hub, cid, node_id, user, decoded))
            done = await asyncio.gather(*(bus.query(*c) for c in commands))
            again = [cid for cid, ok in zip(ids, done, strict=True) if not ok]
            removed += len(ids) - len(again)
            if not again:
                break
            ids = again
        return removed

    async def _trim_groups(self, hub: PresenceKeys, kept: list[str], local: Local) -> None:
        """Take kept connections out of the groups Redis lists them in but they have left."""
        bus = self.bus
        listed = await asyncio.gather(*(bus.query("SMEMBERS", hub.groups_of(c)) for c in kept))
        for cid, names in zip(kept, listed, strict=True):
            groups = local(cid)  # now, after the read: a join meanwhile is kept
            if groups is None:
                continue  # it left meanwhile: its own removal takes care of it
            for raw in names:
                group = raw.decode()
                if group not in groups:
                    bus.command("SREM", hub.group(group), cid)
                    bus.command("SREM", hub.groups_of(cid), group)


def _user_of(record: bytes | None) -> str | None:
    """The user id in a connection's presence record (``msgpack [node, user]``), if any."""
    if record is None:
        return None
    try:
        fields = msgpack.unpackb(record, raw=False)
    except Exception:
        return None
    user = fields[1] if isinstance(fields, list) and len(fields) > 1 else None
    return user if isinstance(user, str) else None
