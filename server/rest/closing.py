"""Closing connections: each gets a Close carrying ``?reason=`` that allows no reconnect."""

from __future__ import annotations

from backplane.lifetime.base import TO_ALL, TO_CONNECTION, TO_GROUP, TO_USER

from .call import NO_CONTENT, OK, Call
from .request import Reply


async def close_connection(call: Call) -> Reply:
    """``DELETE .../connections/{id}?reason=``: 200 (also when no node has it)."""
    await call.lifetime.close_connections(TO_CONNECTION, call.params["connection"], call.reason())
    return OK


async def close_all(call: Call) -> Reply:
    """``POST .../:closeConnections?excluded=&reason=``: every connection of the hub."""
    await call.lifetime.close_connections(TO_ALL, "", call.reason(), call.excluded())
    return NO_CONTENT


async def close_group(call: Call) -> Reply:
    """``POST .../groups/{group}/:closeConnections?excluded=&reason=``."""
    group = call.params["group"]
    await call.lifetime.close_connections(TO_GROUP, group, call.reason(), call.excluded())
    return NO_CONTENT


async def close_user(call: Call) -> Reply:
    """``POST .../users/{user}/:closeConnections?excluded=&reason=``."""
    user = call.params["user"]
    await call.lifetime.close_connections(TO_USER, user, call.reason(), call.excluded())
    return NO_CONTENT
