"""No sticky sessions: any node takes any request of any connection.

With ``--token-secret`` (the same on every node) negotiate hands out a *signed* connection
token that carries the connection id, the hub, the negotiate version and the stateful flag, so
every node can check it without asking the one that minted it. The node that receives the
connection's first transport request (the WebSocket upgrade, the SSE stream, the first poll)
adopts the connection and records itself as its owner in Redis (``SET NX``). A later request
landing on another node (a POST, a poll, a DELETE) is forwarded to the owner over Redis and its
answer relayed back; a WebSocket needs no forwarding, being one request.

Forwarding (ours, documented in docs/redis-protocol.md), on ``<prefix>hubplane:fwd:<node>``:
``[request id, reply node, token, method, body]``; the answer on
``<prefix>hubplane:fwdr:<node>``: ``[request id, status, content type, body]``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgpack

from backplane.redis.bus import BackplaneUnavailable
from backplane.redis.keys import owner_key

if TYPE_CHECKING:
    from backplane.redis.node import RedisNode

logger = logging.getLogger("hubplane.nosticky")

TOKEN_PREFIX = "h1."
OWNER_TTL = 24 * 3600  # seconds; the owner marks the key ENDED when the connection ends
# What the owner key holds once the connection ended: its token can start nothing again.
ENDED = "\x00ended"
POST_TIMEOUT = 30.0
MAX_FORWARDED_BODY = 4 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenClaims:
    """What a signed connection token says."""

    __slots__ = ("connection_id", "hub_path", "version", "stateful", "issued")

    def __init__(
        self, connection_id: str, hub_path: str, version: int, stateful: bool, issued: float
    ) -> None:
        self.connection_id = connection_id
        self.hub_path = hub_path
        self.version = version
        self.stateful = stateful
        self.issued = issued


class TokenSigner:
    """Mints and checks connection tokens with an HMAC-SHA256 over their contents."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"hubplane connection token\0" + secret.encode()).digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:16]

    def mint(self, connection_id: str, hub_path: str, version: int, stateful: bool) -> str:
        """A token for a new connection."""
        payload = msgpack.packb(
            [connection_id, hub_path, version, stateful, int(time.time() * 1000)]
        )
        return TOKEN_PREFIX + _b64(payload) + "." + _b64(self._mac(payload))

    def verify(self, token: str) -> TokenClaims | None:
        """The claims of a genuine token, or None."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        body, _, mac = token[len(TOKEN_PREFIX) :].partition(".")
        try:
            payload, given = _unb64(body), _unb64(mac)
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(given, self._mac(payload)):
            return None
        try:
            cid, path, version, stateful, issued = msgpack.unpackb(payload)[:5]
        except Exception:
            return None
        return TokenClaims(str(cid), str(path), int(version), bool(stateful), issued / 1000.0)


Answer = tuple[int, str, bytes]  # status, content type, body
# (token, method, body, gone): ``gone`` resolves when the client left the forwarding node.
Handler = Callable[[str, str, bytes, "asyncio.Future[None]"], Awaitable[Answer]]


class Forwarder:
    """Owner records and request forwarding between nodes, over the node's Redis bus."""

    def __init__(self, node: RedisNode, handle: Handler, tombstone_ttl: float = 60.0) -> None:
        self.node = node
        self.tombstone_ttl = max(1, int(tombstone_ttl))
        self.bus = node.bus
        self.handle = handle
        prefix = node.prefix
        self._fwd_prefix = prefix + b"hubplane:fwd:"
        self._reply_prefix = prefix + b"hubplane:fwdr:"
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Answer]] = {}
        self._serving: dict[tuple[str, int], asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.forwarded = 0  # requests this node sent to owners
        self.served = 0  # forwarded requests this node answered as the owner

    async def start(self) -> None:
        """Listen for forwarded requests and for answers."""
        me = self.node.node_id.encode()
        await self.bus.subscribe(self._fwd_prefix + me, self._on_request)
        await self.bus.subscribe(self._reply_prefix + me, self._on_answer)

    def _owner_key(self, connection_id: str) -> bytes:
        return owner_key(self.node.prefix, connection_id)

    async def claim(self, connection_id: str) -> str:
        """Become the owner unless another node is; returns the owner's id."""
        key = self._owner_key(connection_id)
        me = self.node.node_id
        if await self.bus.query("SET", key, me, "NX", "EX", OWNER_TTL):
            return me
        owner = await self.bus.query("GET", key)
        return owner.decode() if owner is not None else me

    async def owner(self, connection_id: str) -> str | None:
        """The node that owns a connection, if any."""
        owner = await self.bus.query("GET", self._owner_key(connection_id))
        return owner.decode() if owner is not None else None

    def release(self, connection_id: str) -> None:
        """The connection ended here: its token must not start another one.

        The key keeps an ENDED mark for longer than tokens stay fresh, and the write is kept
        through a Redis outage.
        """
        self.bus.command(
            "SET", self._owner_key(connection_id), ENDED, "EX", self.tombstone_ttl, keep=True
        )

    async def forward(
        self,
        owner: str,
        token: str,
        method: str,
        body: bytes,
        timeout: float,
        gone: asyncio.Future[None] | None = None,
    ) -> Answer:
        """Send a request to the owner and wait for its answer.

        When ``gone`` resolves first (the client left), the owner is told to drop the request.
        """
        request_id = next(self._ids)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self._waiting[request_id] = future
        channel = self._fwd_prefix + owner.encode()
        try:
            data = msgpack.packb([request_id, self.node.node_id, token, method, body])
            receivers = await self.bus.publish_counted(channel, data)
            if receivers == 0:
                return 404, "text/plain", b"No Connection with that ID"
            self.forwarded += 1
            waits: set[asyncio.Future[Any]] = {future}
            if gone is not None:
                waits.add(gone)
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when="FIRST_COMPLETED")
            if future in done:
                return future.result()
            if gone is not None and gone in done:
                cancel = msgpack.packb([request_id, self.node.node_id, "", "CANCEL", b""])
                self.bus.publish(channel, cancel)
                return 499, "text/plain", b""
            return 504, "text/plain", b"The node holding the connection did not answer"
        except BackplaneUnavailable:
            return 503, "text/plain", b"Redis is unreachable"
        finally:
            self._waiting.pop(request_id, None)

    def _on_request(self, channel: bytes, data: bytes) -> None:
        try:
            request_id, reply_node, token, method, body = msgpack.unpackb(data)[:5]
        except Exception:
            logger.warning("dropping a malformed forwarded request")
            return
        key = (str(reply_node), int(request_id))
        if method == "CANCEL":
            gone = self._serving.get(key)
            if gone is not None and not gone.done():
                gone.set_result(None)
            return
        task = asyncio.get_running_loop().create_task(
            self._serve(int(request_id), str(reply_node), str(token), str(method), bytes(body))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(
        self, request_id: int, reply_node: str, token: str, method: str, body: bytes
    ) -> None:
        gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._serving[(reply_node, request_id)] = gone
        try:
            status, content_type, answer = await self.handle(token, method, body, gone)
        except Exception:
            logger.exception("a forwarded %s failed", method)
            status, content_type, answer = 500, "text/plain", b"Internal Server Error"
        finally:
            self._serving.pop((reply_node, request_id), None)
        self.served += 1
        self.bus.publish(
            self._reply_prefix + reply_node.encode(),
            msgpack.packb([request_id, status, content_type, answer]),
        )

    def _on_answer(self, channel: bytes, data: bytes) -> None:
        try:
            request_id, status, content_type, body = msgpack.unpackb(data)[:4]
        except Exception:
            logger.warning("dropping a malformed forwarded answer")
            return
        future = self._waiting.get(int(request_id))
        if future is not None and not future.done():
            future.set_result((int(status), str(content_type), bytes(body)))

    def stop(self) -> None:
        """Fail waiting forwards and stop serving."""
        for gone in self._serving.values():
            if not gone.done():
                gone.set_result(None)
        for task in list(self._tasks):
            task.cancel()
        for future in self._waiting.values():
            if not future.done():
                future.set_result((503, "text/plain", b"Server is shutting down"))


def claims_fresh(claims: TokenClaims, max_age: float) -> bool:
    """A token may start a connection only this long after negotiate minted it."""
    return time.time() - claims.issued <= max_age


def capture_send() -> tuple[Callable[[dict[str, Any]], Awaitable[None]], dict[str, Any]]:
    """An ASGI ``send`` that records one HTTP response (for answering forwarded polls)."""
    captured: dict[str, Any] = {"status": 500, "headers": [], "body": b""}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            captured["status"] = message["status"]
            captured["headers"] = message.get("headers", [])
        elif message["type"] == "http.response.body":
            captured["body"] += message.get("body", b"")

    return send, captured
