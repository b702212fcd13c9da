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
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgpack
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from backplane.redis.bus import BackplaneUnavailable
from backplane.redis.keys import owner_key

from .httputil import no_cache
from .tokens import TOKEN_PREFIX as TOKEN_PREFIX
from .tokens import TokenClaims as TokenClaims
from .tokens import TokenSigner as TokenSigner
from .tokens import claims_fresh as claims_fresh
from .transports import longpolling
from .transports.http import wait_disconnect
from .transports.longpolling import LongPollingSession

if TYPE_CHECKING:
    from backplane.redis.node import RedisNode

    from .registry import ConnectionRecord, ConnectionRegistry
    from .sessions import HttpSessions

logger = logging.getLogger("hubplane.nosticky")

OWNER_TTL = 24 * 3600  # seconds; the owner marks the key ENDED when the connection ends
# What the owner key holds once the connection ended: its token can start nothing again.
ENDED = "\x00ended"
POST_TIMEOUT = 30.0
REDIS_UNREACHABLE = b"Redis is unreachable"
# How long a request finding no owner record waits for its owner to write it again (a Redis
# restart lost it; the owner rewrites it on reconnecting).
RECLAIM_WAIT = 2.0
MAX_FORWARDED_BODY = 4 * 1024 * 1024


Answer = tuple[int, str, bytes]  # status, content type, body
OWNER_GONE: Answer = (503, "text/plain", b"The node holding the connection is gone")
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
        self._owners: dict[int, str] = {}  # request id -> the node it was forwarded to
        self._serving: dict[tuple[str, int], asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.forwarded = 0  # requests this node sent to owners
        self.served = 0  # forwarded requests this node answered as the owner

    async def start(self) -> None:
        """Listen for forwarded requests and for answers."""
        me = self.node.node_id.encode()
        await self.bus.subscribe(self._fwd_prefix + me, self._on_request)
        await self.bus.subscribe(self._reply_prefix + me, self._on_answer)
        self.node.on_node_dead(self._node_dead)

    def reclaim(self, connection_ids: list[str]) -> None:
        """Write this node's owner records again (after a reconnect: Redis may have lost them
        in a restart, and every request landing elsewhere would then find no owner)."""
        me = self.node.node_id
        for cid in connection_ids:
            self.bus.command("SET", self._owner_key(cid), me, "EX", OWNER_TTL)

    def _node_dead(self, node_id: str) -> None:
        """The owner died: its forwarded requests are answered 503 now, not at their timeout."""
        for request_id, owner in list(self._owners.items()):
            future = self._waiting.get(request_id)
            if owner == node_id and future is not None and not future.done():
                future.set_result(OWNER_GONE)

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
        self._owners[request_id] = owner
        channel = self._fwd_prefix + owner.encode()
        try:
            data = msgpack.packb([request_id, self.node.node_id, token, method, body])
            receivers = await self.bus.publish_counted(channel, data)
            deadline = loop.time() + RECLAIM_WAIT
            while receivers == 0 and not self.node.is_dead(owner) and loop.time() < deadline:
                # Nobody got it, so it may go again: a live owner whose subscriber is still
                # coming back after a Redis restart listens again within moments.
                await asyncio.sleep(0.1)
                receivers = await self.bus.publish_counted(channel, data)
            if receivers == 0:
                return 404, "text/plain", b"No Connection with that ID"
            self.forwarded += 1
            if self.node.is_dead(owner):  # found dead since the caller checked it
                return OWNER_GONE
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
            return 503, "text/plain", REDIS_UNREACHABLE
        finally:
            self._waiting.pop(request_id, None)
            self._owners.pop(request_id, None)

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


class NoSticky:
    """No-sticky routing: where a connection token is served, and forwarding to that node.

    Without ``--token-secret`` every token is this node's own: :meth:`locate` only looks in the
    registry. With it but without Redis (one node) a signed token is adopted here. With both, a
    :class:`Forwarder` (made at :meth:`start`) records owners in Redis and relays requests.
    """

    def __init__(
        self,
        registry: ConnectionRegistry,
        sessions: HttpSessions,
        signer: TokenSigner | None,
        node: RedisNode | None,
        disconnect_timeout: float,
    ) -> None:
        self.registry = registry
        self.sessions = sessions
        self.signer = signer
        self.node = node
        self.disconnect_timeout = disconnect_timeout
        self.forwarder: Forwarder | None = None
        # When this node's Redis connection last came back (see cut_off).
        self._back_at: float | None = None

    async def start(self) -> None:
        """With a signer and Redis: listen for forwarded requests, release ended connections."""
        if self.signer is None or self.node is None:
            return
        # No sticky sessions: connections are owned by the node that started them, and
        # requests landing elsewhere are forwarded to it.
        forwarder = self.forwarder = Forwarder(
            self.node,
            self.handle_forwarded,
            # Longer than a token stays fresh: an ended connection's token starts nothing.
            tombstone_ttl=self.disconnect_timeout + 60,
        )
        await forwarder.start()
        self.registry.removed_hooks.append(lambda record: forwarder.release(record.connection_id))
        self.node.bus.on_reconnect(self._reclaim)

    def _recently_back(self) -> bool:
        back = self._back_at
        return back is not None and time.monotonic() - back < RECLAIM_WAIT + 3.0

    def cut_off(self) -> bool:
        """True while requests for this node's connections may not reach it: Redis is down,
        or came back less than a disconnect timeout ago (the clients' requests stuck on other
        nodes meanwhile are still finding their way); idle long-polling sessions are kept."""
        if self.forwarder is None or self.node is None:
            return False
        if not self.node.bus.connected:
            return True
        back = self._back_at
        return back is not None and time.monotonic() - back < self.disconnect_timeout

    async def _reclaim(self) -> None:
        self._back_at = time.monotonic()
        if self.forwarder is not None:
            owned = [r.connection_id for r in self.registry.records.values() if r.owned]
            self.forwarder.reclaim(owned)

    @staticmethod
    async def _owner_after_reclaim(forwarder: Forwarder, cid: str) -> str | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECLAIM_WAIT
        owner = None
        while owner is None and loop.time() < deadline:
            await asyncio.sleep(0.1)
            owner = await forwarder.owner(cid)
        return owner

    def record_elsewhere(self, token: str) -> bool:
        """True when no connection of ``token`` runs here (its requests need Redis)."""
        record = self.registry.get(token)
        return record is None or record.connection is None

    async def redis_back(self, timeout: float) -> bool:
        """Wait (up to ``timeout`` seconds) until Redis is reachable; False if it is not."""
        if self.node is None:
            return True
        bus = self.node.bus
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not bus.connected:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def stop(self) -> None:
        """Fail waiting forwards and stop serving forwarded ones."""
        if self.forwarder is not None:
            self.forwarder.stop()

    async def locate(self, token: str, path: str, start: bool) -> ConnectionRecord | str | int:
        """Where a request for ``token`` is served, when this node has no live connection for it.

        Returns the record to serve here (adopting a connection negotiated elsewhere), the id of
        the node that owns the connection (forward to it), or an HTTP status to refuse with.
        ``start`` is true for requests that may start a transport (WebSocket, SSE, first poll);
        callers authenticate the request before, so a refused one claims nothing.
        """
        signer = self.signer
        record = self.registry.get(token)
        if signer is None:
            return record if record is not None else 404
        claims = signer.verify(token)
        if claims is None or claims.hub_path != path:
            return record if record is not None else 404
        if self.registry.ended_recently(token):
            return 404  # a token starts one connection, once
        fresh = claims_fresh(claims, self.disconnect_timeout)
        forwarder = self.forwarder
        if forwarder is None:  # one node: the token is all there is to check
            if record is None and not (start and fresh):
                return 404
            return self.registry.adopt(token, claims)
        cid = claims.connection_id or token
        me = forwarder.node.node_id
        try:
            owner = await forwarder.owner(cid)
            if owner is None and (not (start and fresh) or self._recently_back()):
                # A Redis that restarted empty lost the owner records; each owner writes its
                # own again as soon as it reconnects: give it that moment before a 404 (or
                # before claiming a connection that may still run elsewhere).
                owner = await self._owner_after_reclaim(forwarder, cid)
            if owner is None:
                if not (start and fresh):
                    return 400 if fresh else 404
                owner = await forwarder.claim(cid)
                if owner == me:
                    adopted = self.registry.adopt(token, claims)
                    adopted.owned = True
                    return adopted
            if owner == ENDED:
                return 404
            if owner == me:
                if record is not None and record.connection is not None:
                    return record
                return 404  # claimed here, but it ended (or never started) here
            if forwarder.node.is_dead(owner):
                return 404
            # A stale heartbeat is no proof of death (after a Redis freeze every heartbeat
            # looks old for a moment): the forward finds out, a gone owner has no listener.
        except BackplaneUnavailable:
            return 503
        return owner

    async def handle_forwarded(
        self, token: str, method: str, body: bytes, gone: asyncio.Future[None]
    ) -> tuple[int, str, bytes]:
        """Answer a request another node forwarded for a connection this node runs."""
        session = self.sessions.get(token)
        if session is None or session.ended:
            return 404, "text/plain", b"No Connection with that ID"
        if method == "POST":
            async with session.post_lock:
                if session.ended or session.connection.closing:
                    return 404, "text/plain", b"No Connection with that ID"
                await session.connection.receive(body, None)
            return 200, "text/plain", b""
        if not isinstance(session, LongPollingSession):
            return 409, "text/plain", b"Connection already active"
        if method == "DELETE":
            session.end()
            return 202, "text/plain", b""
        send, captured = capture_send()

        async def receive() -> dict[str, Any]:
            await asyncio.shield(gone)  # resolves when the client left the forwarding node
            return {"type": "http.disconnect"}

        await session.poll(receive, send)
        content_type = "application/octet-stream"
        for name, value in captured["headers"]:
            if name == b"content-type":
                content_type = value.decode()
        return int(captured["status"]), content_type, bytes(captured["body"])

    async def forward(self, owner: str, token: str, request: Request) -> Response:
        """Relay a POST, poll or DELETE to the node that owns the connection."""
        assert self.forwarder is not None
        body = b""
        if request.method == "POST":
            chunks = []
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_FORWARDED_BODY:
                    return PlainTextResponse("Request body too large", status_code=413)
                chunks.append(chunk)
            body = b"".join(chunks)
        # Read from the module each time: tests shorten the poll timeout.
        timeout = longpolling.POLL_TIMEOUT + 10.0 if request.method == "GET" else POST_TIMEOUT
        # A poll's client may give up (it aborts its poll when it stops): the owner is told.
        gone = (
            asyncio.get_running_loop().create_task(wait_disconnect(request.receive))
            if request.method == "GET"
            else None
        )
        try:
            status, content_type, answer = await self.forwarder.forward(
                owner, token, request.method, body, timeout, gone
            )
        finally:
            if gone is not None:
                gone.cancel()
        if status == 503 and request.method == "GET" and answer == REDIS_UNREACHABLE:
            # Redis failed under the poll: an empty poll rather than an error, which would
            # end the connection.
            return longpolling.empty_poll_response()
        response = Response(answer, status_code=status, media_type=content_type)
        if request.method == "GET":
            no_cache(response)
        return response
