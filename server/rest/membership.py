"""A connection's groups: add, remove, remove from all (wherever the connection is)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable

from backplane.errors import ConnectionNotFoundError

from .call import OK, Call
from .errors import RestError
from .request import Reply


async def for_each_live(changes: Iterable[Awaitable[None]]) -> None:
    """Run group changes at once; one for a connection that has just left is no error."""
    for outcome in await asyncio.gather(*changes, return_exceptions=True):
        if isinstance(outcome, BaseException) and not isinstance(outcome, ConnectionNotFoundError):
            raise outcome


async def _known(call: Call) -> str:
    cid = call.params["connection"]
    if not await call.presence.has_connection(cid):
        raise RestError(404, f"connection {cid!r} does not exist")
    return cid


async def add_to_group(call: Call) -> Reply:
    """``PUT .../groups/{group}/connections/{id}``: 200, 404 for an unknown connection."""
    cid = await _known(call)
    await call.lifetime.add_to_group(cid, call.params["group"])
    return OK


async def remove_from_group(call: Call) -> Reply:
    """``DELETE .../groups/{group}/connections/{id}``: 200, 404 for an unknown connection."""
    cid = await _known(call)
    await call.lifetime.remove_from_group(cid, call.params["group"])
    return OK


async def remove_from_all_groups(call: Call) -> Reply:
    """``DELETE .../connections/{id}/groups``: 200 (nothing to do for an unknown one)."""
    cid = call.params["connection"]
    groups = await call.presence.groups_of(cid)
    await for_each_live(call.lifetime.remove_from_group(cid, g) for g in groups)
    return OK
