"""Fixtures of the lifetime tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.lifetime.cluster import Cluster


@pytest.fixture
async def cluster(redis_server: Any) -> AsyncIterator[Cluster]:
    """Nodes in this process sharing the session's Redis under a private prefix."""
    c = Cluster(redis_server.url)
    try:
        yield c
    finally:
        await c.close()
