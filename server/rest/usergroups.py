"""A user's groups: the user's connections join now, and those it opens later join as they
connect, until the ttl (``backplane/lifetime/usergroups.py`` keeps the records)."""

from __future__ import annotations

from backplane.lifetime.usergroups import DEFAULT_TTL, UserGroupStore

from .call import NO_CONTENT, OK, Call, found
from .errors import RestError
from .membership import for_each_live
from .request import Reply

#: The longest ttl taken, in seconds (a hundred years).
MAX_TTL = 100 * 365 * 24 * 3600


def _store(call: Call) -> UserGroupStore:
    store = call.lifetime.user_groups
    if store is None:
        raise RestError(501, "this hub's lifetime manager keeps no user groups")
    return store


def _ttl(call: Call) -> float:
    raw = call.request.query("ttl")
    if raw is None or raw == "":
        return DEFAULT_TTL
    if not raw.isdigit() or int(raw) > MAX_TTL:
        raise RestError(400, f"ttl must be a whole number of seconds from 0 to {MAX_TTL}")
    return float(int(raw))


async def add_user(call: Call) -> Reply:
    """``PUT .../users/{user}/groups/{group}?ttl=``: 200; ``ttl=0`` for current connections."""
    user, group = call.params["user"], call.params["group"]
    ttl = _ttl(call)
    if ttl > 0:
        # The record first: a connection arriving meanwhile reads it or is listed below.
        await _store(call).add(user, group, ttl)
    connections = await call.presence.user_connections(user)
    await for_each_live(call.lifetime.add_to_group(cid, group) for cid in connections)
    return OK


async def remove_user(call: Call) -> Reply:
    """``DELETE .../users/{user}/groups/{group}``: 204; the user's connections leave it."""
    user, group = call.params["user"], call.params["group"]
    await _store(call).remove(user, group)
    connections = await call.presence.user_connections(user)
    await for_each_live(call.lifetime.remove_from_group(cid, group) for cid in connections)
    return NO_CONTENT


async def remove_user_from_all(call: Call) -> Reply:
    """``DELETE .../users/{user}/groups``: 204; the user's connections leave every group."""
    user = call.params["user"]
    await _store(call).clear(user)
    presence, lifetime = call.presence, call.lifetime
    for cid in await presence.user_connections(user):
        groups = await presence.groups_of(cid)
        await for_each_live(lifetime.remove_from_group(cid, g) for g in groups)
    return NO_CONTENT


async def user_in_group(call: Call) -> Reply:
    """``HEAD .../users/{user}/groups/{group}``: a live record, or a connection in it."""
    user, group = call.params["user"], call.params["group"]
    if await _store(call).contains(user, group):
        return OK
    members = set(await call.presence.group_members(group))
    return found(any(cid in members for cid in await call.presence.user_connections(user)))
