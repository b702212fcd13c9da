"""``:send``: a client method called on every connection, a user's, a group's or one."""

from __future__ import annotations

from backplane.lifetime.base import TO_ALL, TO_CONNECTION, TO_GROUP, TO_USER

from .body import invocation_of
from .call import ACCEPTED, Call
from .request import Reply


async def send_all(call: Call) -> Reply:
    """``POST /api/hubs/{hub}/:send?excluded=``: every connection of the hub."""
    message = invocation_of(call.request)
    await call.lifetime.deliver(TO_ALL, "", message, call.excluded())
    return ACCEPTED


async def send_user(call: Call) -> Reply:
    """``POST .../users/{user}/:send``: every connection of a user."""
    message = invocation_of(call.request)
    await call.lifetime.deliver(TO_USER, call.params["user"], message)
    return ACCEPTED


async def send_group(call: Call) -> Reply:
    """``POST .../groups/{group}/:send?excluded=``: a group's members."""
    message = invocation_of(call.request)
    await call.lifetime.deliver(TO_GROUP, call.params["group"], message, call.excluded())
    return ACCEPTED


async def send_connection(call: Call) -> Reply:
    """``POST .../connections/{id}/:send``: one connection."""
    message = invocation_of(call.request)
    await call.lifetime.deliver(TO_CONNECTION, call.params["connection"], message)
    return ACCEPTED
