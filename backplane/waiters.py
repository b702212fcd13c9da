"""The one-shot wake-up futures that the buffers of this package park on."""

from __future__ import annotations

import asyncio


def wake(waiter: asyncio.Future[None] | None) -> asyncio.Future[None] | None:
    """Resolve ``waiter`` if there is one still pending; the slot's new value is None.

    Use as ``self._waiter = wake(self._waiter)``.
    """
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
    return None
