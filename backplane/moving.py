"""Moving a stateful connection to another node: quiet it, write it down, take it up there.

A client that negotiated stateful reconnect may come back on any node. The node holding the
connection, asked by the node the client reached, first quiets it (:func:`quiesce`): the
invocations it received answer, its streams to the client end with an error completion, the
client results awaited from it fail; all of that is numbered into its replay like any other
message. Then it writes the connection down (:func:`export`): protocol, user, groups, the
replay with its numbers, how much it has received, and the ``context.items`` that msgpack can
carry (the others stay behind). The other node takes it up (:func:`restore`), detached until
the client's socket is accepted; the hub's ``on_connected`` does not run again, and
``on_disconnected`` runs once, where the connection finally ends.

Sans-HTTP: the server decides when to move a connection and carries the state between nodes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import msgpack

from .connection import HubConnection
from .handler import HubConnectionHandler
from .protocol import CompletionMessage, get_protocol
from .stateful import REPLAY_MIN, MessageBuffer
from .user import User

logger = logging.getLogger("hubplane.connection")

#: The error completion of a stream to the client that the move ended.
STREAM_MOVED = "The stream was ended because the connection moved to another server."
#: The error of a client result awaited from a client whose connection moved.
RESULT_MOVED = "The connection moved to another server before the client answered."
#: The version of :func:`export`'s layout (a node refuses a layout it does not know).
LAYOUT = 1


async def quiesce(connection: HubConnection, timeout: float) -> bool:
    """Let the connection's work end so that all it produced is in its replay.

    Invocations received so far answer (within ``timeout`` seconds), streams to the client
    end with an error completion, uploads fail, client results fail. False when the
    invocations did not answer in time: the connection cannot move now.
    """
    try:
        async with asyncio.timeout(timeout):
            await connection.settle()
    except TimeoutError:
        return False
    tracker = connection.stream_tracker
    ending = list(tracker.running.items())
    readers = tracker.readers
    tracker.abort()  # stops streams to the client, fails uploads
    for invocation_id, _ in ending:
        connection.write_message(CompletionMessage.with_error(invocation_id, STREAM_MOVED))
    connection.fail_results(RESULT_MOVED)
    tasks = [task for _, task in ending] + list(readers)
    if tasks:
        # The methods reading failed uploads write their completions as they end.
        _, late = await asyncio.wait(tasks, timeout=timeout)
        if late:
            return False
    return not connection.closing


def _portable(items: Mapping[Any, Any], log_name: str) -> dict[Any, Any]:
    kept: dict[Any, Any] = {}
    for key, value in items.items():
        try:
            msgpack.packb([key, value], use_bin_type=True)
        except Exception:
            logger.info("%s: context.items[%r] does not serialize: it stays behind", log_name, key)
            continue
        kept[key] = value
    return kept


def export(connection: HubConnection) -> dict[str, Any]:
    """The connection written down for another node (plain values, for msgpack)."""
    buffer = connection.message_buffer
    protocol = connection.protocol
    if buffer is None or protocol is None:
        raise ValueError("only a stateful connection past its handshake can move")
    user = connection.user
    return {
        "layout": LAYOUT,
        "id": connection.connection_id,
        "protocol": protocol.name,
        "user": user.id if user is not None else None,
        "groups": sorted(connection.groups),
        "buffer": buffer.export(),
        "items": _portable(connection.items, connection.log_name),
    }


def restore(
    handler: HubConnectionHandler,
    state: Mapping[str, Any],
    *,
    user: User | None,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
) -> HubConnection:
    """The connection of ``state`` on this node, detached until a socket takes it up.

    Raises ValueError for a state this node cannot continue (another layout, a protocol
    this hub does not serve).
    """
    if state.get("layout") != LAYOUT:
        raise ValueError(f"unknown connection layout {state.get('layout')!r}")
    protocol = get_protocol(str(state["protocol"]))
    options = handler.options
    if protocol is None or protocol.name not in options.protocols:
        raise ValueError(f"protocol {state['protocol']!r} is not served here")
    buffer = MessageBuffer.restore(
        list(state["buffer"]), max(4 * options.max_buffer_size, REPLAY_MIN)
    )
    connection = HubConnection(
        handler,
        str(state["id"]),
        transport="WebSockets",
        user=user,
        headers=headers,
        query=query,
    )
    connection.stateful_allowed = True
    connection.take_over(protocol, buffer)
    items = state.get("items")
    if isinstance(items, dict) and items:
        connection.items.update(items)
    return connection
