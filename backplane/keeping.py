"""What a connection keeps for others: its groups on this node (the lifetime managers note
them) and the items hub code stores on it (``context.items``)."""

from __future__ import annotations

from typing import Any

#: Shared by every connection that never joined a group (most never do).
NO_GROUPS: frozenset[str] = frozenset()


class Keeping:
    """Groups and items of a connection (set by the connection's ``__init__``)."""

    __slots__ = ("groups", "_items")

    groups: set[str] | frozenset[str]
    _items: dict[Any, Any] | None

    @property
    def items(self) -> dict[Any, Any]:
        """Per-connection storage for hub code (``context.items``)."""
        items = self._items
        if items is None:
            items = self._items = {}
        return items

    def add_group(self, group: str) -> None:
        """Note that the connection joined ``group`` (lifetime managers call this)."""
        if not isinstance(self.groups, set):
            self.groups = set()
        self.groups.add(group)

    def discard_group(self, group: str) -> None:
        """Note that the connection left ``group``."""
        if isinstance(self.groups, set):
            self.groups.discard(group)

    def clear_groups(self) -> None:
        """Forget every group (the connection ended)."""
        self.groups = NO_GROUPS
