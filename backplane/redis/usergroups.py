"""User groups shared by the cluster: the records in Redis (``keys.user_groups_keys``).

Each record lives in two ZSETs of one hash slot and every read or write is one Lua script
with both keys declared, on Redis's clock, so nodes with skewed clocks agree on expiry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..lifetime.usergroups import MAX_GROUPS_PER_USER, UserGroupStore
from . import keys

if TYPE_CHECKING:
    from .bus import RedisBus


def _decoded(raw: Any) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else str(x) for x in raw or ()]


class RedisUserGroups(UserGroupStore):
    """One hub's user-group records in Redis."""

    def __init__(self, bus: RedisBus, base: bytes) -> None:
        super().__init__()
        self.bus = bus
        self.base = base
        self._add = bus.register_script(keys.USER_GROUPS_ADD)
        self._list = bus.register_script(keys.USER_GROUPS_LIST)
        self._contains = bus.register_script(keys.USER_GROUPS_CONTAINS)
        self._remove = bus.register_script(keys.USER_GROUPS_REMOVE)
        self._clear = bus.register_script(keys.USER_GROUPS_CLEAR)

    async def _run(self, sha: str, user: str, *args: Any) -> Any:
        added, expires = keys.user_groups_keys(self.base, user)
        return await self.bus.query("EVALSHA", sha, 2, added, expires, *args)

    async def add(self, user: str, group: str, ttl: float) -> None:
        """Record that ``user`` is in ``group`` for ``ttl`` seconds (at least 1 ms)."""
        await self._run(self._add, user, group, max(1, int(ttl * 1000)), MAX_GROUPS_PER_USER)

    async def remove(self, user: str, group: str) -> bool:
        """Drop the record; True when there was a live one."""
        return bool(await self._run(self._remove, user, group))

    async def clear(self, user: str) -> list[str]:
        """Drop every record of ``user``; the groups that were live."""
        return _decoded(await self._run(self._clear, user))

    async def contains(self, user: str, group: str) -> bool:
        """True when ``user`` has a live record for ``group``."""
        return bool(await self._run(self._contains, user, group))

    async def groups(self, user: str) -> list[str]:
        """The groups of ``user``'s live records, oldest added first."""
        return _decoded(await self._run(self._list, user))
