"""Setting up Redis connections: URLs, raw connections kept out of the pool, reconnect backoff.

The bus holds one redis-py connection per side for as long as it works and drives it
directly (see ``writer.py`` and ``subscriber.py``); redis-py opens it (TLS, AUTH, SELECT,
Sentinel), which is all these helpers ask of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger("hubplane.redis")

BACKOFF_FIRST = 0.05
BACKOFF_MAX = 1.0
#: Seconds Redis has to answer (a batch of commands, a connect, a PING) before the connection
#: counts as failed. A frozen (SIGSTOP) Redis or a half-open socket sends nothing at all,
#: and the kernel even accepts new connections for it; nothing else would ever end the wait.
REPLY_TIMEOUT = 2.5

#: What a lost or unreachable Redis raises, whichever layer notices it first.
NETWORK_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, EOFError)

_pack = hiredis.pack_command


def connect_redis(url: str, **kwargs: Any) -> aioredis.Redis:
    """A redis-py asyncio client for ``url``: redis://, rediss:// (TLS), unix://, or
    ``redis+sentinel://host:port[,host:port]/service_name[/db]`` for a Sentinel-managed master.
    """
    # No retries inside redis-py: the bus has its own reconnect loop, and redis-py's default
    # backoff (seconds) would keep a node deaf long after Redis is back.
    options: dict[str, Any] = {
        "socket_keepalive": True,
        "socket_connect_timeout": 2.0,
        "health_check_interval": 0,
        "retry": Retry(NoBackoff(), 0),
        # RESP2: every Redis speaks it, and redis-py's RESP3 path sends each pub/sub message
        # through its push-notification handlers (which format the payload for a debug log
        # line, whether that logger is on or not).
        "protocol": 2,
    }
    options.update(kwargs)
    if url.startswith("redis+sentinel://"):
        from redis.asyncio.sentinel import Sentinel

        rest = url[len("redis+sentinel://") :]
        hosts_part, _, path = rest.partition("/")
        service, _, db = path.partition("/")
        if not service:
            raise ValueError("a Sentinel URL needs a service name: redis+sentinel://h:p/mymaster")
        hosts = []
        for item in hosts_part.split(","):
            host, _, port = item.rpartition(":")
            hosts.append((host or "127.0.0.1", int(port or 26379)))
        sentinel = Sentinel(hosts, socket_connect_timeout=options["socket_connect_timeout"])
        master: aioredis.Redis = sentinel.master_for(service, db=int(db or 0), **options)
        return master
    # The URL's own options win over ours in redis-py: a ?protocol=3 would turn the bus's
    # replies and pub/sub messages into RESP3 shapes it does not read, so it is left out.
    parts = urlsplit(url)
    if "protocol" in parts.query:
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "protocol"]
        url = urlunsplit(parts._replace(query=urlencode(query)))
    client: aioredis.Redis = aioredis.Redis.from_url(url, **options)
    return client


CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def is_cluster_url(url: str) -> bool:
    """True for ``redis+cluster://`` and ``rediss+cluster://`` (a Redis Cluster's seeds)."""
    return url.startswith(CLUSTER_SCHEMES)


def cluster_seeds(url: str) -> list[tuple[str, int]]:
    """The seed nodes of a cluster URL:
    ``redis+cluster://[user:password@]host:port[,host:port...][/0][?options]``.

    Raises :class:`ValueError` for a URL that is not one (a database other than 0: a Redis
    Cluster has only database 0)."""
    if not is_cluster_url(url):
        raise ValueError(f"not a Redis Cluster URL: {safe_url(url)}")
    rest = url.partition("://")[2]
    rest = rest.partition("?")[0]
    rest = rest.rpartition("@")[2]
    hosts_part, _, path = rest.partition("/")
    if path not in ("", "0"):
        raise ValueError("a Redis Cluster has database 0 only: use an empty path or /0")
    seeds = []
    for item in hosts_part.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # [IPv6]:port
            host, _, port = item[1:].partition("]")
            port = port.lstrip(":")
        else:
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        try:
            seeds.append((host or "127.0.0.1", int(port or 6379)))
        except ValueError:
            raise ValueError(f"bad host:port {item!r} in a Redis Cluster URL") from None
    if not seeds:
        raise ValueError("a Redis Cluster URL needs at least one host:port")
    return seeds


def cluster_node_url(url: str, host: str, port: int) -> str:
    """The plain URL of one node of the cluster of ``url`` (same TLS, credentials, options)."""
    scheme = "rediss" if url.startswith("rediss+") else "redis"
    rest = url.partition("://")[2]
    rest, _, query = rest.partition("?")
    credentials = rest.rpartition("@")[0] if "@" in rest.partition("/")[0] else ""
    hostpart = f"[{host}]" if ":" in host else host
    node = f"{scheme}://{credentials + '@' if credentials else ''}{hostpart}:{port}/0"
    return node + (f"?{query}" if query else "")


def safe_url(url: str) -> str:
    """``url`` fit for a log line (never log a password)."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url


async def open_connection(
    client: aioredis.Redis, timeout: float | None = None
) -> AbstractConnection:
    """A new connection of ``client``'s kind (TCP, TLS, unix, Sentinel master), kept out of
    its pool: the bus holds it for as long as it works.

    Raises :class:`TimeoutError` when Redis has not answered the handshake (AUTH, SELECT,
    CLIENT SETINFO) within ``timeout`` seconds; a connection failed or cancelled half way is
    closed, not left to the garbage collector.
    """
    connection: AbstractConnection = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
    try:
        async with asyncio.timeout(timeout):
            await connection.connect()  # type: ignore[no-untyped-call]
    except TimeoutError:
        await close_connection(connection)
        raise TimeoutError(f"Redis did not answer within {timeout:g} s") from None
    except BaseException:
        await close_connection(connection)
        raise
    return connection


async def close_connection(connection: AbstractConnection | None) -> None:
    """Close a connection from :func:`open_connection` (if any), whatever state it is in."""
    if connection is not None:
        with contextlib.suppress(Exception):
            await connection.disconnect(nowait=True)


async def read_reply(connection: AbstractConnection) -> Any:
    """The next reply on ``connection``; an error reply is returned, not raised."""
    try:
        return await connection.read_response()
    except ResponseError as exc:
        return exc


async def round_trip(connection: AbstractConnection, *commands: tuple[Any, ...]) -> list[Any]:
    """Send ``commands`` in one write and read their replies."""
    await connection.send_packed_command(b"".join(map(_pack, commands)), check_health=False)
    return [await read_reply(connection) for _ in commands]


def backoff(attempt: int) -> float:
    """Seconds to wait before reconnect ``attempt`` (0 first): doubling, capped, jittered."""
    delay: float = min(BACKOFF_MAX, BACKOFF_FIRST * (2**attempt))
    return delay * (0.5 + random.random() / 2)


class HeldConnection:
    """One Redis connection held for as long as it works, and the task that drives it
    (connecting, and reconnecting, by itself): the writer's and the subscriber's shared life."""

    #: The name of the driving task.
    task_name = "hubplane-redis"

    def __init__(self, client: aioredis.Redis, url: str, wake: asyncio.Event) -> None:
        self.client = client
        self.url = url  # for log lines: without a password
        #: Set once the connection has been made for the first time.
        self.ready = asyncio.Event()
        self.connection: AbstractConnection | None = None
        #: Seconds Redis has to answer before the connection counts as failed.
        self.reply_timeout = REPLY_TIMEOUT
        self._wake = wake
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        """Connect, work, reconnect, until :meth:`cancel`."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the driving task."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.task_name)

    def cancel(self) -> None:
        """Stop the task (see :meth:`stopped` and :meth:`close`)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()

    async def stopped(self) -> None:
        """Wait for the task ended by :meth:`cancel`."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def close(self) -> None:
        """Close the connection and the client (after :meth:`stopped`)."""
        await close_connection(self.connection)
        self.connection = None
        try:
            await self.client.aclose()
        except Exception:
            logger.debug("closing a Redis client failed", exc_info=True)
