"""Group changes of connections another node owns: commands out, acks back, and our side.

``add_to_group`` for a connection that is not local publishes a group command on the hub's
internal groups channel; the node owning the connection applies it and publishes an ack to
the sender's ack channel (the ASP.NET Core backplane's layout).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConnectionNotFoundError, LimitExceededError
from . import wire
from .bus import BackplaneUnavailable

if TYPE_CHECKING:
    from ..lifetime.base import ClientConnection
    from .base import ClusterNode
    from .presence import RedisPresence

logger = logging.getLogger("hubplane.redis")


class GroupCommands:
    """One hub's group commands to other nodes, with their acks, and the ones it applies."""

    def __init__(
        self,
        node: ClusterNode,
        channels: wire.Channels,
        presence: RedisPresence,
        connections: Mapping[str, ClientConnection],
        add_local: Callable[[ClientConnection, str], Awaitable[None]],
        remove_local: Callable[[ClientConnection, str], None],
        *,
        ack_timeout: float,
        unknown_owner_grace: float,
    ) -> None:
        self.node = node
        self.bus = node.bus
        self.channels = channels
        self.presence = presence
        self.connections = connections
        self.add_local = add_local
        self.remove_local = remove_local
        self.ack_timeout = ack_timeout
        self.unknown_owner_grace = unknown_owner_grace
        self._ack_id = 0
        self._acks: dict[int, asyncio.Future[None]] = {}
        # Group commands awaiting their ack, by id: sent again when our subscriber comes
        # back, since an ack published while it was away is lost (add/remove are idempotent).
        self._unacked: dict[int, bytes] = {}
        # Commands being applied to our connections; cancelled when the hub stops.
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, action: int, connection_id: str, group: str) -> None:
        """Ask the owner of a remote connection to change its groups, and wait for its ack.

        Fails within about a second when no live node owns the connection (.NET waits
        30 s), using the presence table to tell a slow owner from a missing one.
        """
        if not self.bus.connected:
            # Fail now rather than buffer a change the caller is told has failed.
            raise BackplaneUnavailable(
                f"Redis is unreachable: cannot change the groups of connection '{connection_id}'"
            )
        self._ack_id = command_id = wire.next_command_id(self._ack_id)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[command_id] = future
        data = wire.write_group_command(
            wire.GroupCommand(command_id, self.node.node_id, action, group, connection_id)
        )
        self._unacked[command_id] = data
        try:
            self.bus.publish(self.channels.internal_groups, data)
            owner = await self.presence.owner_of(connection_id)
            owned = owner is not None and await self.node.is_live(owner)
            try:
                await asyncio.wait_for(
                    asyncio.shield(future),
                    self.ack_timeout if owned else self.unknown_owner_grace,
                )
            except TimeoutError:
                if owned:
                    raise TimeoutError(
                        f"Node {owner} did not acknowledge the group change of "
                        f"connection '{connection_id}' in time."
                    ) from None
                raise ConnectionNotFoundError(
                    f"Connection '{connection_id}' does not exist."
                ) from None
        finally:
            self._acks.pop(command_id, None)
            self._unacked.pop(command_id, None)

    def resend(self) -> None:
        """Publish every unacknowledged command again (our subscriber came back)."""
        for data in self._unacked.values():
            self.bus.publish(self.channels.internal_groups, data)

    def on_ack(self, channel: bytes, data: bytes) -> None:
        """An owner acknowledged one of our commands."""
        try:
            command_id = wire.read_ack(data)
        except wire.WireError as exc:
            logger.warning("dropping a malformed ack from Redis: %s", exc)
            return
        future = self._acks.get(command_id)
        if future is not None and not future.done():
            refusal = wire.read_ack_refusal(data)
            if refusal is None:
                future.set_result(None)
            else:
                future.set_exception(LimitExceededError(refusal))

    def on_command(self, channel: bytes, data: bytes) -> None:
        """A node asks for a group change: apply and ack it when the connection is ours."""
        try:
            command = wire.read_group_command(data)
        except wire.WireError as exc:
            logger.warning("dropping a malformed group command from Redis: %s", exc)
            return
        connection = self.connections.get(command.connection_id)
        if connection is None or connection.closing:
            return  # not ours (or ending: no ack, and the sender fails within a second)
        self._spawn(self._apply(connection, command))

    async def _apply(self, connection: ClientConnection, command: wire.GroupCommand) -> None:
        if self.connections.get(connection.connection_id) is not connection:
            return  # it left meanwhile
        refusal = None
        if command.action == wire.GROUP_ADD:
            try:
                await self.add_local(connection, command.group)
            except LimitExceededError as exc:
                refusal = str(exc)  # the sender raises it (REST answers 409)
            except Exception:
                # No ack: the sender's wait ends in an error, not in a false success.
                logger.exception("applying a group command to %s failed", command.connection_id)
                return
        elif command.action == wire.GROUP_REMOVE:
            self.remove_local(connection, command.group)
        self.bus.publish(self.channels.ack(command.server), wire.write_ack(command.id, refusal))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop(self) -> None:
        """Cancel commands being applied and fail the ones awaiting an ack."""
        for task in list(self._tasks):
            task.cancel()
        for future in self._acks.values():
            if not future.done():
                future.set_exception(BackplaneUnavailable("the node is stopping"))
