"""When each connection of a hub next needs its timers run, so that a tick looks at the
connections whose deadline has come instead of at every connection.

An idle connection is looked at once per keep-alive interval (to ping it) instead of once a
tick; one that is still handshaking, or uses stateful reconnect (an Ack a second), every tick.

A timer wheel: deadlines are rounded up to a whole tick (``resolution``) and kept in one list
per tick, so scheduling is an append and a tick takes its lists whole (no per-item heap
work: at 50,000 connections a heap of tuples cost more than the scan it replaced). Each item
is scheduled once per look and never moved earlier, so no list holds a stale entry. The price:
a connection that ends stays in its list until its deadline comes (at most a keep-alive
interval, or a client timeout for one that is not pinged), about 1 KB each, and is dropped
then.
"""

from __future__ import annotations

import heapq
import math
from typing import Generic, TypeVar

T = TypeVar("T")


class Deadlines(Generic[T]):
    """Items, each due at one time; ``pop_due`` hands out those whose time has come."""

    __slots__ = ("resolution", "_next", "_slots", "_order", "_count")

    def __init__(self, resolution: float = 1.0) -> None:
        #: The width of a slot, in seconds: a deadline is met at the first tick after it.
        self.resolution = resolution
        self._next: list[T] = []  # due at the next tick, whatever its time
        self._slots: dict[int, list[T]] = {}  # slot number -> the items due in it
        self._order: list[int] = []  # a heap of the slot numbers in use
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def schedule(self, item: T, due: float, now: float) -> None:
        """``item`` is due at ``due``; at or before ``now``: at the next tick."""
        self._count += 1
        if due <= now:
            self._next.append(item)
            return
        slot = math.ceil(due / self.resolution)
        items = self._slots.get(slot)
        if items is None:
            self._slots[slot] = items = []
            heapq.heappush(self._order, slot)
        items.append(item)

    def soon(self, item: T) -> None:
        """``item`` is due at the next tick (a new connection)."""
        self._count += 1
        self._next.append(item)

    def pop_due(self, now: float) -> list[T]:
        """Every item due at ``now`` or before (once each); schedule them again after."""
        out, self._next = self._next, []
        order, slots = self._order, self._slots
        last = math.floor(now / self.resolution)
        while order and order[0] <= last:
            out.extend(slots.pop(heapq.heappop(order)))
        self._count -= len(out)
        return out
