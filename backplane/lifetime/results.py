"""Client results: a hub asks one client for a value and awaits its Completion.

Like ASP.NET Core's ``ClientResultsManager``: one owner per manager for the futures, their
timeouts and their failures, whichever way the Completion comes back. From a client on
this node it comes through the connection, which calls the waiter registered in its
``results`` (and calls it with ``DISCONNECTED`` when it ends first); from another node it
comes over the backplane and is handed to :meth:`ClientResults.complete`.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import (
    ClientDisconnectedError,
    ClientNotFoundError,
    ClientResultFailedError,
    ClientResultTimeoutError,
)
from ..protocol.messages import CompletionMessage, InvocationMessage
from .base import DISCONNECTED, ClientConnection


def new_invocation_id() -> str:
    """A random 22-character id, as .NET's client-result ids (a GUID in base64url)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def completion_outcome(completion: CompletionMessage, future: asyncio.Future[Any]) -> None:
    """Settle ``future`` with a client's Completion: its result, or a ClientResultError."""
    if future.done():
        return
    if completion.error is None:
        future.set_result(completion.result)
    elif completion.error == DISCONNECTED:
        future.set_exception(ClientDisconnectedError(DISCONNECTED))
    else:
        future.set_exception(ClientResultFailedError(completion.error))


def not_found(connection_id: str) -> ClientNotFoundError:
    """The error for a client result asked of a connection no node has."""
    return ClientNotFoundError(f"Connection '{connection_id}' does not exist.")


def timed_out(connection_id: str, timeout: float | None) -> ClientResultTimeoutError:
    """The error for a client result that did not come in time."""
    return ClientResultTimeoutError(
        f"Connection '{connection_id}' did not answer within {timeout} seconds."
    )


class ClientResults:
    """The client results one hub's manager awaits on this node."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        # Results whose Completion comes back through ``complete`` (from other nodes).
        self._pending: dict[str, asyncio.Future[Any]] = {}

    async def invoke_local(
        self, connection: ClientConnection, method: str, args: list[Any], timeout: float | None
    ) -> Any:
        """Ask a connection on this node for a client result and wait for it."""
        if connection.closing or connection.protocol is None:
            raise not_found(connection.connection_id)
        invocation_id = new_invocation_id()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # The connection calls this with its Completion, or with DISCONNECTED when it ends.
        connection.results[invocation_id] = lambda completion: completion_outcome(
            completion, future
        )
        try:
            connection.write_message(InvocationMessage(method, args, invocation_id=invocation_id))
            try:
                return await asyncio.wait_for(future, timeout)
            except TimeoutError:
                raise timed_out(connection.connection_id, timeout) from None
        finally:
            connection.results.pop(invocation_id, None)

    def expect(self, invocation_id: str) -> asyncio.Future[Any]:
        """A future for a result that will arrive through ``complete`` (``discard`` it after)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[invocation_id] = future
        return future

    def discard(self, invocation_id: str) -> None:
        """Stop expecting a result (answered, timed out or failed)."""
        self._pending.pop(invocation_id, None)

    def complete(self, completion: CompletionMessage) -> None:
        """Settle the expected result a Completion answers (unknown ids are ignored)."""
        future = self._pending.get(completion.invocation_id)
        if future is not None:
            completion_outcome(completion, future)

    async def wait(
        self,
        connection_id: str,
        future: asyncio.Future[Any],
        timeout: float | None,
        poll: float,
        alive: Callable[[], Awaitable[bool]] | None,
    ) -> Any:
        """Await an expected result: fail on ``timeout``, or when ``alive()`` turns False.

        ``alive`` is asked every ``poll`` seconds, so a client whose node died fails within
        about ``poll`` seconds rather than at the timeout (or never, without one).
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            step = poll
            if deadline is not None:
                step = min(step, deadline - loop.time())
                if step <= 0:
                    raise timed_out(connection_id, timeout)
            try:
                return await asyncio.wait_for(asyncio.shield(future), step)
            except TimeoutError:
                if alive is not None and not await alive():
                    raise ClientDisconnectedError(DISCONNECTED) from None

    def fail_all(self, error: Callable[[], BaseException]) -> None:
        """Fail every expected result with a fresh ``error()`` each (the manager is stopping)."""
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error())
