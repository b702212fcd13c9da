"""Every Lua script hubplane runs declares every key it touches (KEYS) and builds none from
ARGV: Redis Cluster routes a script by its declared keys, and a key built inside it may live
on another shard.

Each script of ``backplane/redis/keys.py`` runs on the session's Redis with ``redis.call``
and ``redis.pcall`` behind a guard that refuses a key not in KEYS, on arguments that take
it down its key-touching paths. A script the table below does not know fails the test, so a
new script comes with its case. The cases run on the session's Redis Cluster too, with the
keys in the cluster layout: a script whose keys are not all in one slot fails there
(CROSSSLOT).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from backplane.redis import keys
from backplane.redis.keys import PresenceKeys

# Where each command Redis runs for hubplane takes its keys: the first argument, every
# argument, or none. A command missing here fails the guard: add it with its key positions.
_FIRST = (
    "GET SET HGET HSET HSETNX HDEL HMGET SADD SREM SMEMBERS SCARD SSCAN ZADD ZSCORE ZREM ZRANGE "
    "ZRANGEBYSCORE ZCARD ZREMRANGEBYSCORE PEXPIRE PEXPIREAT EXPIRE XADD"
).split()
_ALL = ["DEL", "UNLINK", "EXISTS"]
# SPUBLISH's channel is no key, but on a cluster it must be in the script's slot: the cluster
# run refuses one that is not ("a non local key").
_NONE = ["PUBLISH", "SPUBLISH", "PUBSUB", "TIME", "PING"]

_GUARD = (
    "local __keys = {}\n"
    "for _, k in ipairs(KEYS) do __keys[k] = true end\n"
    "local __spec = {"
    + ", ".join([f"{c} = 'first'" for c in _FIRST] + [f"{c} = 'all'" for c in _ALL])
    + ", "
    + ", ".join(f"{c} = 'none'" for c in _NONE)
    + "}\n"
    + """
local function __check(cmd, ...)
  local spec = __spec[string.upper(cmd)]
  if spec == nil then error('GUARD: no key positions for ' .. cmd) end
  local args = {...}
  local last = 0
  if spec == 'first' then last = 1 elseif spec == 'all' then last = #args end
  for i = 1, last do
    if not __keys[args[i]] then
      error('GUARD: ' .. cmd .. ' touches undeclared key ' .. tostring(args[i]))
    end
  end
end
local function __call(cmd, ...) __check(cmd, ...) return redis.call(cmd, ...) end
local function __pcall(cmd, ...) __check(cmd, ...) return redis.pcall(cmd, ...) end
"""
)


def guarded(source: str) -> str:
    """``source`` with every ``redis.call``/``redis.pcall`` checked against KEYS first."""
    body = source.replace("redis.pcall(", "__pcall(").replace("redis.call(", "__call(")
    return _GUARD + body


def scripts() -> dict[str, str]:
    """Every Lua script in keys.py, by name."""
    return {
        name: value
        for name, value in vars(keys).items()
        if name.isupper()
        and not name.startswith("_")
        and isinstance(value, str)
        and "redis.call" in value
    }


Case = Callable[[aioredis.Redis, str], Any]


class Run:
    """Runs scripts with the guard on the session's Redis, under a private prefix."""

    def __init__(self, client: Any, cluster: bool = False) -> None:
        self.client = client
        #: Keys in the Redis Cluster layout.
        self.cluster = cluster
        self.prefix = f"scripts-{uuid.uuid4().hex[:8]}:".encode()
        self.hub = PresenceKeys(self.prefix + b"Hub", cluster)
        self.ran: set[str] = set()

    async def __call__(self, name: str, script_keys: list[bytes], *args: Any) -> Any:
        self.ran.add(name)
        source = guarded(getattr(keys, name))
        return await self.client.eval(source, len(script_keys), *script_keys, *args)


@pytest.fixture(params=["redis", "cluster"])
async def run(request: pytest.FixtureRequest) -> AsyncIterator[Run]:
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        port = cluster.master_ports()[0]
        client: Any = RedisCluster(host="127.0.0.1", port=port)
    else:
        client = aioredis.Redis.from_url(request.getfixturevalue("redis_server").url)
    try:
        yield Run(client, request.param == "cluster")
    finally:
        await client.aclose()


async def test_the_guard_refuses_an_undeclared_key(run: Run) -> None:
    with pytest.raises(aioredis.ResponseError, match="GUARD: SADD touches undeclared key"):
        await run.client.eval(guarded("redis.call('SADD', ARGV[1], 'x')"), 0, b"built")
    with pytest.raises(aioredis.ResponseError, match="GUARD: no key positions for BITOP"):
        await run.client.eval(guarded("redis.call('BITOP', 'AND', KEYS[1], KEYS[1])"), 1, b"k")


async def test_every_script_declares_every_key_it_touches(run: Run) -> None:
    p, hub, cluster = run.prefix, run.hub, run.cluster
    nodes, node_hash = keys.nodes_key(p, cluster), keys.node_key(p, "dead", cluster)
    lease = keys.purge_lease_key(p, "dead", cluster)
    c = run.client

    await run("PUBLISH_MANY", [], b"scripts:ch", b"m1", b"scripts:ch", b"m2")
    await run("TOUCH", [nodes], "me")
    await run("HEARTBEAT", [nodes], "me", 5000)
    await run("LIVE", [nodes], 5000)
    await run("WATCH", [nodes], p + b"hubplane:node:")
    assert (await run("NODE_BEATS", [nodes]))[1:] == [b"me", int(await c.zscore(nodes, "me"))]

    # A connection with a user and two groups, removed with every key named.
    await c.hset(hub.conns, "c1", msgpack.packb(["n1", "ann"]))
    await c.sadd(hub.node("n1"), "c1")
    await c.sadd(hub.user("ann"), "c1")
    await c.sadd(hub.groups_of("c1"), "g1", "g2")
    await c.sadd(hub.group("g1"), "c1")
    await c.sadd(hub.group("g2"), "c1")
    remove = [hub.conns, hub.node("n1"), hub.groups_of("c1"), hub.user("ann")]
    groups = [hub.group("g1"), hub.group("g2")]
    assert await run("REMOVE_CONNECTION", remove + groups, "c1", "n1", "1", "g1", "g2") == 1
    assert not await c.exists(hub.groups_of("c1"), hub.user("ann"), hub.group("g1"))
    # ... one that moved to another node (only the node's SET entry goes) ...
    await c.hset(hub.conns, "c2", msgpack.packb(["n2", None]))
    await c.sadd(hub.node("n1"), "c2")
    assert await run("REMOVE_CONNECTION", remove[:3], "c2", "n1", "0") == 1
    assert await c.hexists(hub.conns, "c2")
    # ... and one whose groups changed since they were read: it stays for another pass.
    await c.hset(hub.conns, "c3", msgpack.packb(["n1", None]))
    await c.sadd(hub.node("n1"), "c3")
    await c.sadd(hub.groups_of("c3"), "g1", "late")
    three = [hub.conns, hub.node("n1"), hub.groups_of("c3"), hub.group("g1")]
    assert await run("REMOVE_CONNECTION", three, "c3", "n1", "0", "g1") == 0
    assert await c.sismember(hub.node("n1"), "c3")

    # A dead node's purge: claimed (once), ended.
    await c.zadd(nodes, {"dead": 1})
    await c.hset(node_hash, "hubs", msgpack.packb([hub.base], use_bin_type=False))
    claim = [nodes, node_hash, lease]
    assert await run("PURGE_BEGIN", claim, "dead", 10, "me", 30000) == msgpack.packb(
        [hub.base], use_bin_type=False
    )
    assert await run("PURGE_BEGIN", claim, "dead", 10, "other", 30000) is None  # leased
    assert await run("PURGE_END", claim, "dead", "me") == 1
    assert not await c.exists(node_hash, lease) and await c.zscore(nodes, "dead") is None

    entry = keys.resume_key(p, "token")
    await c.hset(entry, "node", "n1")
    assert await run("MOVE_RESUME", [entry], "n1", "n2") == 1

    added, expires = keys.user_groups_keys(hub.base, "ann")
    ug = [added, expires]
    await run("USER_GROUPS_ADD", ug, "g", 60000, 10)
    await run("USER_GROUPS_ADD", ug, "h", 60000, 1)  # past the maximum: the oldest goes
    assert await run("USER_GROUPS_LIST", ug) == [b"h"]
    assert await run("USER_GROUPS_CONTAINS", ug, "h") == 1
    assert await run("USER_GROUPS_REMOVE", ug, "h") == 1
    await run("USER_GROUPS_ADD", ug, "i", 60000, 10)
    assert await run("USER_GROUPS_CLEAR", ug) == [b"i"]

    # Durable records (--durable-resume): recorded while the entry names this node, forgotten.
    log, pos = keys.resume_log_key(entry, cluster), keys.resume_pos_key(entry, cluster)
    await c.hset(entry, "node", "n2")
    record = [
        "n2",  # the node, then one connection:
        "json", 3, "", 2, msgpack.packb(["g1"]), 60,  # protocol, sent, trimmed, acked, groups, ttl
        1, b"scripts:ch",  # channels joined
        0,  # channels left
        1, b"scripts:ch\0n1", 7,  # positions
        2, 2, b"m2", 3, b"m3",  # messages for the log
    ]  # fmt: skip
    assert (await run("RECORD", [entry, log, pos], *record))[1:] == [1]
    assert await c.zcard(log) == 2 and await c.hget(pos, b"scripts:ch\0n1") == b"7"
    assert await run("FORGET_RESUME", [entry, log, pos], "n1") == 0  # another node holds it
    assert await run("FORGET_RESUME", [entry, log, pos], "n2") == 1
    assert not await c.exists(entry, log, pos)
    # Watched channels and their history: on a cluster the history shares its channel's slot
    # and the watched zset the announcements' (the SHARD_ scripts SPUBLISH from there),
    # whatever braces the channel holds.
    watched, announcements = keys.watched_key(p, cluster), keys.watch_channel(p)
    for name in ("WATCH_CHANNELS", "SHARD_WATCH_CHANNELS"):
        await run(name, [watched], announcements, b"x", 60000, b"scripts:ch")
    assert (await run("WATCHED", [watched]))[1] == b"scripts:ch"
    for channel in (b"scripts:ch", p + b"H:group:{g}", p + b"H:group:}{", p + b"H:group:{}"):
        classic = keys.history_key(p, channel, cluster, sharded=False)  # in slot 0
        history = keys.history_key(p, channel, cluster)  # in the channel's slot
        await run("HISTORY_PUBLISH", [classic], channel, b"m4", 60000)
        await run("SHARD_HISTORY_PUBLISH", [history], channel, b"m5", 60000)
        assert await c.xlen(history) == (1 if cluster else 2)

    missing = set(scripts()) - run.ran
    assert not missing, f"scripts without a case here: {sorted(missing)}"


def test_no_script_builds_a_key_from_the_prefix_layout() -> None:
    """The layout words of the keys (``:hubplane:``) appear in no script: keys come in KEYS."""
    for name, source in scripts().items():
        assert not re.search(r"hubplane:", source), name
