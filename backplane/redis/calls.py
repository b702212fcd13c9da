"""Asking another node something over Redis and waiting for its answer.

A node listens on ``<prefix>hubplane:call:<node>`` for requests ``[id, reply node, method,
args]`` and answers on ``<prefix>hubplane:answer:<reply node>`` with ``[id, status, value]``
(msgpack; documented in docs/redis-protocol.md). A request reaching no subscriber (the node
is gone) is answered 404 at once; one that gets no answer in time, 504. Used to hand a
stateful connection over to the node its client came back to.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgpack

from .outbox import BackplaneUnavailable

if TYPE_CHECKING:
    from .base import ClusterNode

logger = logging.getLogger("hubplane.redis")

#: What a served call returns: an HTTP-like status and a msgpack-able value.
Answer = tuple[int, Any]
Serve = Callable[[str, list[Any]], Awaitable[Answer]]


class NodeCalls:
    """Requests to other nodes, and serving theirs, on the node's Redis bus."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.bus = node.bus
        self._call_prefix = node.prefix + b"hubplane:call:"
        self._answer_prefix = node.prefix + b"hubplane:answer:"
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Answer]] = {}
        self._serving: set[asyncio.Task[None]] = set()
        self._methods: dict[str, Serve] = {}

    def serve(self, method: str, handler: Serve) -> None:
        """Answer requests for ``method`` with ``handler(method, args)``."""
        self._methods[method] = handler

    async def start(self) -> None:
        """Listen for requests and answers (the node must be started)."""
        me = self.node.node_id.encode()
        await self.bus.subscribe(self._call_prefix + me, self._on_request)
        await self.bus.subscribe(self._answer_prefix + me, self._on_answer)

    async def call(self, node_id: str, method: str, args: list[Any], timeout: float) -> Answer:
        """Ask ``node_id``; 404 when no such node listens, 503 without Redis, 504 late."""
        request_id = next(self._ids)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        data = msgpack.packb([request_id, self.node.node_id, method, args], use_bin_type=True)
        try:
            if not await self.bus.publish_counted(self._call_prefix + node_id.encode(), data):
                return 404, None
            return await asyncio.wait_for(future, timeout)
        except BackplaneUnavailable:
            return 503, None
        except TimeoutError:
            return 504, None
        finally:
            self._waiting.pop(request_id, None)

    def _on_request(self, channel: bytes, data: bytes) -> None:
        try:
            request_id, reply_node, method, args = msgpack.unpackb(data, strict_map_key=False)[:4]
            handler = self._methods[str(method)]
        except Exception:
            logger.warning("dropping a malformed or unknown node call")
            return
        task = asyncio.get_running_loop().create_task(
            self._answer(int(request_id), str(reply_node), handler, str(method), list(args))
        )
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _answer(
        self, request_id: int, reply_node: str, handler: Serve, method: str, args: list[Any]
    ) -> None:
        try:
            status, value = await handler(method, args)
        except Exception:
            logger.exception("serving a %s call failed", method)
            status, value = 500, None
        self.bus.publish(
            self._answer_prefix + reply_node.encode(),
            msgpack.packb([request_id, status, value], use_bin_type=True),
        )

    def _on_answer(self, channel: bytes, data: bytes) -> None:
        try:
            request_id, status, value = msgpack.unpackb(data, strict_map_key=False)[:3]
        except Exception:
            logger.warning("dropping a malformed node call answer")
            return
        future = self._waiting.get(int(request_id))
        if future is not None and not future.done():
            future.set_result((int(status), value))

    def stop(self) -> None:
        """Stop serving; callers still waiting hear 503."""
        for task in list(self._serving):
            task.cancel()
        for future in self._waiting.values():
            if not future.done():
                future.set_result((503, None))
