"""Every Redis key hubplane writes and every Lua script it runs, in one place.

Keys (``docs/redis-protocol.md``; ``B`` = prefix + hub wire name, ``N`` = node id):

- ``<prefix>hubplane:nodes``: ZSET of node ids scored by last heartbeat (ms since epoch)
- ``<prefix>hubplane:node:N``: HASH id, host, pid, started (ms), hubs (msgpack list of B)
- ``B:hubplane:conns``: HASH connection id -> msgpack ``[N, user or nil]``
- ``B:hubplane:node:N`` / ``B:hubplane:user:U`` / ``B:hubplane:group:G``: SETs of connection ids
- ``B:hubplane:groups-of:C``: SET of the groups of connection C
- ``<prefix>hubplane:owner:C``: the node owning connection C in the no-sticky mode (a STRING)
- ``<prefix>hubplane:resume:{T}``: HASH id, hub, user, node of a stateful connection whose
  token hashes to T (where a node finds a connection its client comes back to); with
  ``--durable-resume`` also durable, at, protocol, sent, trimmed, acked, groups and
  ``since:<channel>``
- ``<prefix>hubplane:resume:{T}:log``: ZSET of a durable connection's unacknowledged messages,
  scored by their number; ``...:pos``: HASH ``<channel>\0<publisher>`` -> the last number
  delivered (``docs/design/durable-resume.md``); on a Redis Cluster the three share the
  entry's slot (the two others start with that slot's tag when the prefix's braces would
  keep the entry's tag from counting)
- ``<prefix>hubplane:watched``: ZSET of the channels with a durable member, scored by when the
  watch expires (ms, Redis time); ``<prefix>hubplane:hist:{<channel>}``: STREAM of what was
  published on a watched channel lately (field ``m``: the invocation as published). On a
  Redis Cluster both names start with a slot's hash tag (``slots.slot_tag``): the history
  with the tag of its channel's slot (with classic pub/sub, of slot 0), the ZSET with that of
  the ``watch`` channel, so the scripts that write them publish on those channels from the
  same shard (SPUBLISH)
- ``<prefix>hubplane:stats:N``: STRING, node N's figures for the admin API's cluster view
  (JSON, rewritten every second while the admin API is on, expiring by itself)
- ``B:hubplane:user-groups:{user:U}:added`` / ``...:expires``: ZSETs of the groups of user U
  (the REST API's user groups), scored by when each was added (µs) and when it expires (ms,
  Redis time); both in one hash slot, touched only by the ``USER_GROUPS_*`` scripts

- ``<prefix>hubplane:purging:N``: STRING, the id of the node purging dead node N (a lease
  with a TTL, so two survivors do not purge one node at once; renewed while it lasts)

Every script declares every key it touches in KEYS and builds none from ARGV (Redis Cluster
routes a script by its keys; ``tests/lifetime/test_scripts.py`` runs each one with a guard
that refuses an undeclared key). On a Redis Cluster the keys of one call share a hash slot
(the callers split ``RECORD``'s batches per slot).
Pub/sub channels are not keys: see ``wire.Channels``, except two of the node's own, named
here because a script counts the first one's subscribers:

- ``<prefix>hubplane:node:N``: node N subscribes to it for its whole life (nothing is
  published on it); no subscriber means N's connection closed (see ``liveness.py``)
- ``<prefix>hubplane:purged``: the id of each node purged, published by the node that purged it
- ``<prefix>hubplane:watch``: channels newly (or again) watched, ``msgpack [window ms, [channel,
  ...]]``, published by the node holding their durable members
"""

from __future__ import annotations

import hashlib

from .slots import key_slot, slot_tag

# -- keys ------------------------------------------------------------------------------------


def nodes_key(prefix: bytes, cluster: bool = False) -> bytes:
    """The ZSET of live node ids, scored by their last heartbeat.

    On a Redis Cluster the name is one hash tag, ``{<prefix>hubplane:nodes}``, which starts
    the node's HASH and its purge lease too: the purge scripts touch the three at once.
    (Whatever braces the prefix holds, the three names start with the same characters up
    to the tag's closing brace, so their first tag is the same.)
    """
    if cluster:
        return hash_tag(prefix + b"hubplane:nodes")
    return prefix + b"hubplane:nodes"


def hash_tag(inner: bytes) -> bytes:
    """``{inner}``, so that names starting with it share a slot on a Redis Cluster. An
    ``inner`` starting with ``}`` would make an empty tag, which Redis ignores: such a name
    starts with the tag of its own slot first (see ``slots.slot_tag``)."""
    tag = b"{" + inner + b"}"
    if inner.startswith(b"}"):
        return slot_tag(key_slot(tag)) + tag
    return tag


def node_key(prefix: bytes, node_id: str, cluster: bool = False) -> bytes:
    """The HASH describing a node (on a Redis Cluster: in the slot of the nodes ZSET)."""
    if cluster:
        return nodes_key(prefix, True) + b":node:" + node_id.encode()
    return prefix + b"hubplane:node:" + node_id.encode()


def node_channel(prefix: bytes, node_id: str) -> bytes:
    """The channel a node subscribes to for as long as it lives (the same name as its HASH)."""
    return prefix + b"hubplane:node:" + node_id.encode()


def purged_channel(prefix: bytes) -> bytes:
    """The channel announcing each purged node's id."""
    return prefix + b"hubplane:purged"


def owner_key(prefix: bytes, connection_id: str) -> bytes:
    """The STRING naming the node that owns a connection (no-sticky mode)."""
    return prefix + b"hubplane:owner:" + connection_id.encode()


def resume_key(prefix: bytes, token: str) -> bytes:
    """The HASH of a stateful connection, by its token's hash (the token itself is a secret).

    The hash is a hash tag (``{...}``): the connection's other records will share its slot.
    """
    digest = hashlib.sha256(token.encode()).hexdigest()[:32].encode()
    return prefix + b"hubplane:resume:{" + digest + b"}"


def purge_lease_key(prefix: bytes, node_id: str, cluster: bool = False) -> bytes:
    """The STRING naming the node purging ``node_id`` (expires by itself; on a Redis
    Cluster in the slot of the nodes ZSET)."""
    if cluster:
        return nodes_key(prefix, True) + b":purging:" + node_id.encode()
    return prefix + b"hubplane:purging:" + node_id.encode()


def node_stats_key(prefix: bytes, node_id: str) -> bytes:
    """The STRING of a node's latest figures (admin API; it expires by itself)."""
    return prefix + b"hubplane:stats:" + node_id.encode()


def user_groups_keys(base: bytes, user: str) -> tuple[bytes, bytes]:
    """The two ZSETs of a user's groups (by time added, by expiry), in one hash slot.

    The hash tag ``{user:U}`` comes before anything that tells the two apart, so whatever
    braces the prefix or the user id hold, the first tag of both names is the same, and it
    is never empty.
    """
    stem = base + b":hubplane:user-groups:{user:" + user.encode() + b"}"
    return stem + b":added", stem + b":expires"


def _beside(entry: bytes, suffix: bytes, cluster: bool) -> bytes:
    """``entry + suffix``; on a Redis Cluster in the entry's slot even when the prefix's
    braces keep the entry's tag from counting (a prefix like ``{}``): then it starts with
    the tag of the entry's slot."""
    key = entry + suffix
    if cluster and key_slot(key) != key_slot(entry):
        return slot_tag(key_slot(entry)) + key
    return key


def resume_log_key(entry: bytes, cluster: bool = False) -> bytes:
    """The ZSET of a durable connection's unacknowledged messages (beside its entry)."""
    return _beside(entry, b":log", cluster)


def resume_pos_key(entry: bytes, cluster: bool = False) -> bytes:
    """The HASH of where delivery to a durable connection stands (beside its entry)."""
    return _beside(entry, b":pos", cluster)


def watched_key(prefix: bytes, cluster: bool = False) -> bytes:
    """The ZSET of watched channels (a durable member somewhere), scored by their expiry.

    On a Redis Cluster it starts with the hash tag of the :func:`watch_channel`'s slot:
    ``WATCH_CHANNELS`` announces on that channel from the ZSET's shard.
    """
    key = prefix + b"hubplane:watched"
    return slot_tag(key_slot(watch_channel(prefix))) + key if cluster else key


def watch_channel(prefix: bytes) -> bytes:
    """The channel announcing channels that are (still) watched."""
    return prefix + b"hubplane:watch"


def history_key(
    prefix: bytes, channel: bytes, cluster: bool = False, sharded: bool = True
) -> bytes:
    """The STREAM of what was published lately on a watched ``channel`` (a full channel name).

    On a Redis Cluster it starts with a hash tag (the channel's own braces, if any, come after
    it and count for nothing). With sharded pub/sub, the tag of the channel's slot:
    ``SHARD_HISTORY_PUBLISH`` keeps the message and publishes it (SPUBLISH) on the channel's
    shard in one script. With classic pub/sub, the tag of slot 0, whose master takes every
    classic PUBLISH (``cluster_writer.py``): a channel's messages with and without history
    travel over one connection, in order.
    """
    key = prefix + b"hubplane:hist:{" + channel + b"}"
    if not cluster:
        return key
    return slot_tag(key_slot(channel) if sharded else 0) + key


class PresenceKeys:
    """Redis keys of one hub's presence entries.

    On a Redis Cluster every name starts with the hash tag ``{B}``: a connection's removal
    (``REMOVE_CONNECTION``) touches its record, its node's, user's and groups' SETs at once,
    so one hub's presence lives in one slot (its messages still spread over every shard:
    channels are not keys).
    """

    __slots__ = ("base", "stem", "conns")

    def __init__(self, base: bytes, cluster: bool = False) -> None:
        self.base = base
        #: What every key starts with: ``B``, or ``{B}`` on a Redis Cluster.
        self.stem = hash_tag(base) if cluster else base
        self.conns = self.stem + b":hubplane:conns"

    def node(self, node_id: str) -> bytes:
        """The SET of the hub's connections on node ``node_id``."""
        return self.stem + b":hubplane:node:" + node_id.encode()

    def user(self, user: str) -> bytes:
        """The SET of the hub's connections of ``user``."""
        return self.stem + b":hubplane:user:" + user.encode()

    def group(self, group: str) -> bytes:
        """The SET of the connections in ``group``."""
        return self.stem + b":hubplane:group:" + group.encode()

    def groups_of(self, connection_id: str) -> bytes:
        """The SET of the groups of a connection."""
        return self.stem + b":hubplane:groups-of:" + connection_id.encode()


# -- scripts ---------------------------------------------------------------------------------


def script_sha(source: str) -> str:
    """The SHA1 Redis knows a script by (for EVALSHA)."""
    return hashlib.sha1(source.encode()).hexdigest()


# PUBLISH every (channel, message) pair of ARGV, in order.
PUBLISH_MANY = """
for i = 1, #ARGV, 2 do
  redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
return #ARGV / 2
"""


# Removes one connection's presence entries, every key declared (a key built inside a script
# would keep it from Redis Cluster). KEYS: the hub's conns hash, the node's SET of
# connections, the connection's groups-of SET, the user's SET (when ARGV[3] is '1'), then
# the SET of each of its groups. ARGV: connection id, node id, '1' with a user key else '0',
# then the names of those groups, in the same order.
# The record and the user entry go only while the record names the node (a connection that
# moved on belongs to its new node, groups included). Returns 1, or 0 when groups-of names
# a group not declared (a join raced the caller's read): the declared ones are gone, the
# connection stays in the node's SET, and the caller reads again.
REMOVE_CONNECTION = """
local conn, node = ARGV[1], ARGV[2]
local first = 4
local user = nil
if ARGV[3] == '1' then
  user = KEYS[4]
  first = 5
end
local rec = redis.call('HGET', KEYS[1], conn)
if rec then
  local r = cmsgpack.unpack(rec)
  if r[1] ~= node then
    redis.call('SREM', KEYS[2], conn)
    return 1
  end
  redis.call('HDEL', KEYS[1], conn)
  if user then redis.call('SREM', user, conn) end
end
for i = first, #KEYS do
  redis.call('SREM', KEYS[i], conn)
  redis.call('SREM', KEYS[3], ARGV[i - first + 4])
end
if redis.call('SCARD', KEYS[3]) > 0 then return 0 end
redis.call('SREM', KEYS[2], conn)
return 1
"""

# Claims the purge of a node that stopped heartbeating, unless it came back meanwhile or is
# gone already (another node purged it), or another node is purging it now (it holds the
# lease). KEYS: nodes zset, node hash, purge lease. ARGV: node id, cutoff (ms), purger, lease
# (ms). Returns the node's hubs (msgpack list of hub bases; '' when none), or nil.
# The purge itself walks the node's SETs in chunks (purge.py, REMOVE_CONNECTION), so no call
# blocks Redis for long, and ends with PURGE_END.
PURGE_BEGIN = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return false end
if not redis.call('SET', KEYS[3], ARGV[3], 'NX', 'PX', ARGV[4]) then return false end
return redis.call('HGET', KEYS[2], 'hubs') or ''
"""

# Ends a purge: the node leaves the nodes zset and its hash goes (a node that came back
# meanwhile finds itself missing and writes its entries again), the purger's lease too.
# KEYS: nodes zset, node hash, purge lease. ARGV: node id, purger.
PURGE_END = """
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""


# Node liveness uses Redis's clock, so skewed host clocks cannot make a live node look dead.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Every registered node and its heartbeat: WATCH without the subscriber counts, for a Redis
# Cluster, where the nodes' channels live on other shards (``watch.py`` asks each for its
# counts). KEYS: nodes zset. Returns {now, node id, heartbeat (ms), node id, ...}.
NODE_BEATS = (
    _NOW
    + """
local rows = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {now}
for i = 1, #rows, 2 do
  out[#out + 1] = rows[i]
  out[#out + 1] = tonumber(rows[i + 1])
end
return out
"""
)

# Registers a node. KEYS: nodes zset. ARGV: node id.
TOUCH = (
    _NOW
    + """
redis.call('ZADD', KEYS[1], now, ARGV[1])
return now
"""
)

# One heartbeat. KEYS: nodes zset. ARGV: node id, timeout (ms).
# Returns {1 if the node was registered, now, ids of nodes silent for longer than the timeout,
# the node's previous heartbeat or -1}.
HEARTBEAT = (
    _NOW
    + """
local present = redis.call('ZSCORE', KEYS[1], ARGV[1])
if present then redis.call('ZADD', KEYS[1], now, ARGV[1]) end
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return {present and 1 or 0, now, dead, present and tonumber(present) or -1}
"""
)

# Every registered node, its heartbeat and the subscribers of its own channel, in one call.
# KEYS: nodes zset. ARGV: the channels' common start (``<prefix>hubplane:node:``).
# Returns {now, node id, heartbeat (ms), subscribers, node id, ...}.
WATCH = (
    _NOW
    + """
local rows = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local channels = {}
for i = 1, #rows, 2 do channels[#channels + 1] = ARGV[1] .. rows[i] end
local counts = {}
for s = 1, #channels, 500 do
  local part = redis.call('PUBSUB', 'NUMSUB', unpack(channels, s, math.min(s + 499, #channels)))
  for j = 2, #part, 2 do counts[#counts + 1] = part[j] end
end
local out = {now}
for k = 1, #channels do
  out[#out + 1] = rows[2 * k - 1]
  out[#out + 1] = tonumber(rows[2 * k])
  out[#out + 1] = counts[k]
end
return out
"""
)

# Live nodes with their last heartbeat. KEYS: nodes zset. ARGV: timeout (ms).
LIVE = (
    _NOW
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf', 'WITHSCORES')
"""
)

# Move a connection's resume entry from one node to another, only if the first still holds it
# (two nodes reached by the same client race for it: one wins). KEYS[1] the entry; ARGV from
# node, to node.
MOVE_RESUME = """
if redis.call('HGET', KEYS[1], 'node') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'node', ARGV[2])
  return 1
end
return 0
"""


# -- user groups (the REST API's): KEYS[1] the ZSET by time added (µs), KEYS[2] by expiry (ms)

# Redis's clock in ms (``now``) and µs (``now_us``), and the groups whose record is live.
_USER_GROUPS_NOW = """
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = math.floor(now_us / 1000)
local function live()
  local out = {}
  for _, g in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    local e = redis.call('ZSCORE', KEYS[2], g)
    if e and tonumber(e) > now then out[#out + 1] = g end
  end
  return out
end
"""

# Add (or renew) a record and keep the latest ARGV[3] of them. ARGV: group, ttl (ms), max.
# Expired records go first; both keys expire with the last record.
USER_GROUPS_ADD = (
    _USER_GROUPS_NOW
    + """
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('ZREM', KEYS[2], unpack(gone))
end
redis.call('ZADD', KEYS[1], now_us, ARGV[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
local max = tonumber(ARGV[3])
if n > max then
  local old = redis.call('ZRANGE', KEYS[1], 0, n - max - 1)
  redis.call('ZREM', KEYS[1], unpack(old))
  redis.call('ZREM', KEYS[2], unpack(old))
end
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
redis.call('PEXPIREAT', KEYS[2], last[2])
return n
"""
)

# The groups of the live records, oldest added first.
USER_GROUPS_LIST = _USER_GROUPS_NOW + "\nreturn live()\n"

# 1 when the record of ARGV[1] is live, else 0.
USER_GROUPS_CONTAINS = (
    _USER_GROUPS_NOW
    + """
local e = redis.call('ZSCORE', KEYS[2], ARGV[1])
if e and tonumber(e) > now then return 1 end
return 0
"""
)

# Drop the record of ARGV[1]; 1 when it was live.
USER_GROUPS_REMOVE = (
    _USER_GROUPS_NOW
    + """
local e = redis.call('ZSCORE', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if e and tonumber(e) > now then return 1 end
return 0
"""
)

# Drop every record; the groups of those that were live.
USER_GROUPS_CLEAR = (
    _USER_GROUPS_NOW
    + """
local out = live()
redis.call('DEL', KEYS[1], KEYS[2])
return out
"""
)


# Deletes a connection's resume entry and its durable records, unless another node holds the
# entry now (it moved there). KEYS: entry, log, positions. ARGV: this node.
FORGET_RESUME = """
local node = redis.call('HGET', KEYS[1], 'node')
if node and node ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return 1
"""

# PUBLISH on a watched channel, keeping the message in the channel's history first (one
# script: nobody sees the one without the other). KEYS: the history stream. ARGV: channel,
# message, how long to keep history (ms). Returns PUBLISH's count. A history write that fails
# (a full Redis) does not keep the message from being published: the hole it leaves refuses
# the resumes that would need it (revive.py checks the numbers).
HISTORY_PUBLISH = (
    _NOW
    + """
local keep = tonumber(ARGV[3])
local minid = string.format('%d', now - keep)
redis.pcall('XADD', KEYS[1], 'MINID', '~', minid, '*', 'm', ARGV[2])
redis.pcall('PEXPIRE', KEYS[1], keep)
return redis.call('PUBLISH', ARGV[1], ARGV[2])
"""
)

# HISTORY_PUBLISH with sharded pub/sub (a Redis Cluster): SPUBLISH, on the shard of the history
# key, which is the channel's (``history_key``).
SHARD_HISTORY_PUBLISH = HISTORY_PUBLISH.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")

# Watch channels (or watch them longer), forget expired watches, announce. KEYS: watched zset.
# ARGV: announcement channel, announcement, window (ms), channel, ... Returns now (ms).
WATCH_CHANNELS = (
    _NOW
    + """
local expiry = string.format('%d', now + tonumber(ARGV[3]))
for i = 4, #ARGV do redis.call('ZADD', KEYS[1], 'GT', expiry, ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PUBLISH', ARGV[1], ARGV[2])
return now
"""
)

# WATCH_CHANNELS with sharded pub/sub: SPUBLISH, on the shard of the watched zset, which is the
# announcement channel's (``watched_key``).
SHARD_WATCH_CHANNELS = WATCH_CHANNELS.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")

# The watched channels. KEYS: watched zset. Returns {now, channel, expiry, channel, ...}.
WATCHED = (
    _NOW
    + """
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf', 'WITHSCORES')
table.insert(rows, 1, now)
return rows
"""
)

# One batch of records of durable connections, each all or nothing (one script call for all
# the connections with news in one event-loop turn: one reply to read instead of one each;
# docs/design/durable-resume.md). KEYS: per connection its entry, log and positions. ARGV: the
# node, then per connection: protocol ('' = unchanged), sent, trimmed (the client's ack; '' =
# unchanged), acked (the last Ack sent), groups (msgpack; '' = unchanged), ttl (s; 0 = leave),
# then n channels joined and those channels, n left and those, n positions and (field,
# number) pairs, n messages and (number, message) pairs for the log.
# Returns {now, status per connection}: 1 recorded, 0 another node holds the entry, -1 no entry.
RECORD = (
    _NOW
    + """
local stamp = string.format('%d', now)
local me = ARGV[1]
local out = {now}
local i = 2
local function bulk(command, key, first, count)
  for s = first, first + count - 1, 512 do
    redis.call(command, key, unpack(ARGV, s, math.min(s + 511, first + count - 1)))
  end
end
for c = 1, #KEYS, 3 do
  local entry, log, pos = KEYS[c], KEYS[c + 1], KEYS[c + 2]
  local protocol, sent, trimmed, acked = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local groups, ttl = ARGV[i + 4], tonumber(ARGV[i + 5])
  i = i + 6
  local joined, nj = i + 1, tonumber(ARGV[i])
  i = i + nj + 1
  local left, nl = i + 1, tonumber(ARGV[i])
  i = i + nl + 1
  local positions, np = i + 1, tonumber(ARGV[i])
  i = i + 2 * np + 1
  local entries, ne = i + 1, tonumber(ARGV[i])
  i = i + 2 * ne + 1
  local holder = redis.call('HGET', entry, 'node')
  if not holder then
    out[#out + 1] = -1
  elseif holder ~= me then
    out[#out + 1] = 0
  else
    local fields = {'durable', me, 'at', stamp, 'sent', sent, 'acked', acked}
    if trimmed ~= '' then
      fields[#fields + 1] = 'trimmed'
      fields[#fields + 1] = trimmed
    end
    if protocol ~= '' then
      fields[#fields + 1] = 'protocol'
      fields[#fields + 1] = protocol
    end
    if groups ~= '' then
      fields[#fields + 1] = 'groups'
      fields[#fields + 1] = groups
    end
    redis.call('HSET', entry, unpack(fields))
    local since = stamp .. '-0'
    for j = 0, nj - 1 do redis.call('HSETNX', entry, 'since:' .. ARGV[joined + j], since) end
    for j = 0, nl - 1 do redis.call('HDEL', entry, 'since:' .. ARGV[left + j]) end
    if np > 0 then bulk('HSET', pos, positions, 2 * np) end
    if ne > 0 then bulk('ZADD', log, entries, 2 * ne) end
    if trimmed ~= '' then redis.call('ZREMRANGEBYSCORE', log, '-inf', trimmed) end
    if ttl > 0 then
      redis.call('EXPIRE', entry, ttl)
      redis.call('EXPIRE', log, ttl)
      redis.call('EXPIRE', pos, ttl)
    end
    out[#out + 1] = 1
  end
end
return out
"""
)
