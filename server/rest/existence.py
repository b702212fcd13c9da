"""``HEAD`` checks: 200 when a connection, a user or a group has a live connection anywhere in
the cluster, else 404 (presence, which converges within seconds of a node's death)."""

from __future__ import annotations

from .call import Call, found
from .request import Reply


async def connection_exists(call: Call) -> Reply:
    """``HEAD .../connections/{id}``."""
    return found(await call.presence.has_connection(call.params["connection"]))


async def user_exists(call: Call) -> Reply:
    """``HEAD .../users/{user}``: the user has a connection."""
    return found(await call.presence.is_user_online(call.params["user"]))


async def group_exists(call: Call) -> Reply:
    """``HEAD .../groups/{group}``: the group has a member."""
    return found(await call.presence.has_group_members(call.params["group"]))
