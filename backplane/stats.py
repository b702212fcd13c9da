"""Plain counters the server exports as metrics: cheap enough for the per-message paths.

A ``prometheus_client`` histogram costs about 1.1 µs per observation here (a lock and a
loop over the buckets) and a counter about 0.7 µs: several per hub message would cost a
tenth of an echo round trip. The hot paths add to plain integers instead, and the server's
metrics collector reads them when Prometheus scrapes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Protocol

#: Upper bounds (seconds) for the duration of hub method invocations.
INVOCATION_BUCKETS: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01)
INVOCATION_BUCKETS += (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Upper bounds (seconds) for one pipelined Redis round trip.
ROUND_TRIP_BUCKETS: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01)
ROUND_TRIP_BUCKETS += (0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
#: Upper bounds for the number of commands in one pipelined round trip.
BATCH_BUCKETS: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)


class Observer(Protocol):
    """Anything that takes observations: :class:`Buckets`, or a prometheus-client histogram."""

    def observe(self, value: float) -> None:
        """Count one observation."""


class Buckets:
    """Observations counted into fixed buckets, as a Prometheus histogram counts them.

    ``counts[i]`` holds the observations ``<= bounds[i]`` and ``> bounds[i - 1]``; the last
    slot holds those above every bound. ``total`` is their sum.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        """How many observations there were."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, count of observations <= le), ...]`` ending with ``+Inf``."""
        result = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            result.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return result
