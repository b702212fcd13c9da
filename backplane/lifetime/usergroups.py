"""User groups: groups a user is in, so that connections the user opens later join them too.

A record says "user U is in group G until T". Adding one puts the user's current
connections in the group (the caller does that, through the manager) and the record makes
each connection the user opens before T join it as it connects, on whichever node that is.
A user keeps at most ``MAX_GROUPS_PER_USER`` records, the latest added (as Azure SignalR
Service keeps them). The Redis store (``backplane/redis/usergroups.py``) shares the records
across the cluster; ``MemoryUserGroups`` keeps them for one node.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..errors import LimitExceededError

logger = logging.getLogger("hubplane.lifetime")

#: The ttl of a record added without one: a year, as Azure SignalR Service has it.
DEFAULT_TTL = 365 * 24 * 3600.0
#: Records kept per user; adding one more drops the one added longest ago.
MAX_GROUPS_PER_USER = 100


class UserGroupStore(ABC):
    """The user-group records of one hub."""

    def __init__(self) -> None:
        #: Whether connections join their user's groups as they connect (the node turns it
        #: on when it serves the REST API; off, a connection costs no look-up).
        self.apply_on_connect = False

    @abstractmethod
    async def add(self, user: str, group: str, ttl: float) -> None:
        """Record that ``user`` is in ``group`` for ``ttl`` seconds (positive) from now."""

    @abstractmethod
    async def remove(self, user: str, group: str) -> bool:
        """Drop the record; True when there was a live one."""

    @abstractmethod
    async def clear(self, user: str) -> list[str]:
        """Drop every record of ``user``; the groups that were live."""

    @abstractmethod
    async def contains(self, user: str, group: str) -> bool:
        """True when ``user`` has a live record for ``group``."""

    @abstractmethod
    async def groups(self, user: str) -> list[str]:
        """The groups of ``user``'s live records."""


class MemoryUserGroups(UserGroupStore):
    """The records of one node, in process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        # user -> group -> expiry; dicts keep insertion order, which is the order of adding.
        self._records: dict[str, dict[str, float]] = {}

    def _live(self, user: str) -> dict[str, float]:
        records = self._records.get(user)
        if records is None:
            return {}
        now = self._clock()
        for group in [g for g, expires in records.items() if expires <= now]:
            del records[group]
        if not records:
            del self._records[user]
        return records

    async def add(self, user: str, group: str, ttl: float) -> None:
        """Record that ``user`` is in ``group`` for ``ttl`` seconds from now."""
        records = self._live(user)
        if not records:
            records = self._records[user] = {}
        records.pop(group, None)  # re-adding makes it the latest
        records[group] = self._clock() + ttl
        while len(records) > MAX_GROUPS_PER_USER:
            del records[next(iter(records))]

    async def remove(self, user: str, group: str) -> bool:
        """Drop the record; True when there was a live one."""
        records = self._live(user)
        found = records.pop(group, None) is not None
        if not records:
            self._records.pop(user, None)
        return found

    async def clear(self, user: str) -> list[str]:
        """Drop every record of ``user``; the groups that were live."""
        groups = list(self._live(user))
        self._records.pop(user, None)
        return groups

    async def contains(self, user: str, group: str) -> bool:
        """True when ``user`` has a live record for ``group``."""
        return group in self._live(user)

    async def groups(self, user: str) -> list[str]:
        """The groups of ``user``'s live records."""
        return list(self._live(user))


C = TypeVar("C")


async def join_user_groups(
    store: UserGroupStore | None,
    connection: C,
    user: str | None,
    join: Callable[[C, str], Awaitable[None]],
) -> None:
    """Put a connection that just connected in its user's groups (when the store applies).

    A failing look-up (Redis unreachable) is logged and the connection goes on without them.
    """
    if store is None or user is None or not store.apply_on_connect:
        return
    try:
        groups = await store.groups(user)
    except Exception as exc:  # noqa: BLE001 - the connection must not fail for it
        logger.warning("could not read the groups of user %r: %s", user, exc)
        return
    for group in groups:
        try:
            await join(connection, group)
        except LimitExceededError as exc:
            # The connection goes on, in the groups it could join (the oldest records first).
            logger.warning("user %r: %s", user, exc)
            return
