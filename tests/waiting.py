"""Waiting for a condition in an in-process (asyncio) test, instead of sleeping a fixed time.

A fixed sleep is either too short on a busy machine (a flaky failure) or longer than needed
(a slow suite), and a negative checked after it proves nothing. Wait for something that must
become true instead; prove a negative by a later event that must come after it.
(The end-to-end tests, which are synchronous, have ``eventually`` in ``tests/e2e/test_cluster.py``.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def until(
    probe: Callable[[], T], timeout: float = 5.0, what: str = "condition", interval: float = 0.005
) -> T:
    """Poll ``probe()`` until it returns something true, and return that; fail with ``what``
    (and the last value) when it is still false after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = probe()
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout}s; last value: {value!r}")
        await asyncio.sleep(interval)
