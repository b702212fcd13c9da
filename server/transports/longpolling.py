"""The long-polling transport: each GET returns what the server has for the client.

- The first poll of a connection returns ``200`` with an empty body at once: the client waits
  for it before it sends its handshake.
- Later polls wait until bytes are pending and return them all (whole messages), or return
  ``200`` empty after :data:`POLL_TIMEOUT` (below the clients' fixed 100 s request timeout).
- ``204`` means the connection is over: the server ended it (after its last bytes were
  delivered), ``DELETE`` ended it, or a newer poll of the same connection took over.
- Between polls the connection is inactive; one that has not polled for ``--disconnect-timeout``
  seconds is disposed. Server pings are off: polls arriving are the sign of life.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from backplane import HubConnection

from ..httputil import NO_CACHE, no_cache
from .http import SEND_TIMEOUT, HttpSession, close_connection, forget, wait_disconnect

if TYPE_CHECKING:
    from ..registry import ConnectionRecord
    from .base import SessionStore

logger = logging.getLogger("hubplane.longpolling")

# ASP.NET Core's LongPolling.PollTimeout; the JS and Java clients give up on a poll after 100 s.
POLL_TIMEOUT = 90.0
# How long a new poll waits for the one it supersedes to answer.
SUPERSEDE_WAIT = 5.0
# A poll that keeps being superseded while it waits gives up with 409.
MAX_SUPERSEDE_ROUNDS = 10


class LongPollingSession(HttpSession):
    """A long-polling connection: the poll in progress and the inactivity timer."""

    __slots__ = ("store", "ready", "current", "expiry", "unsent")

    def __init__(
        self, store: SessionStore, record: ConnectionRecord, connection: HubConnection
    ) -> None:
        super().__init__(record, connection)
        # The table holding this session; it also owns the tear-down tasks of timers and DELETEs.
        self.store = store
        # ``outbound.ready()`` running as a task that is never cancelled (cancelling it would
        # cancel the buffer's shared wake-up future); each poll waits on it without owning it.
        self.ready: asyncio.Task[None] | None = None
        # The poll in progress: (its stop signal, resolved when it has answered).
        self.current: tuple[asyncio.Future[str], asyncio.Future[None]] | None = None
        self.expiry: asyncio.TimerHandle | None = None
        # A batch taken for a poll whose response did not reach the client: the next poll
        # sends it first (it was taken from the buffer before anything queued there now).
        self.unsent = b""
        self.arm_expiry()

    def arm_expiry(self) -> None:
        """(Re)start the inactivity timer: no poll within the disconnect timeout ends it."""
        if self.expiry is not None:
            self.expiry.cancel()
        self.expiry = asyncio.get_running_loop().call_later(
            self.store.disconnect_timeout, self._expired
        )

    def _expired(self) -> None:
        self.expiry = None
        if self.store.cut_off() and not self.ended:
            # Its polls may be stuck behind a Redis outage on other nodes: wait for them.
            self.arm_expiry()
            return
        if self.current is None and not self.ended:
            logger.info("%s: no poll within the disconnect timeout", self.connection.log_name)
            self.end()

    def end(self) -> asyncio.Task[None] | None:
        """End the connection now; a poll in progress answers 204.

        Returns the task tearing the connection down (None when it had already ended).
        """
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        current = self.current
        if current is not None and not current[0].done():
            current[0].set_result("ended")
        if not forget(self.store, self):
            return None
        return self.store.spawn(close_connection(self))

    async def poll(self, receive: Any, send: Any) -> None:
        """Answer one poll (not the first) of this connection."""
        loop = asyncio.get_running_loop()
        # A newer poll takes over: the one in progress answers 204 first (as ASP.NET Core).
        for _ in range(MAX_SUPERSEDE_ROUNDS):
            previous = self.current
            if previous is None:
                break
            if not previous[0].done():
                previous[0].set_result("superseded")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(previous[1]), SUPERSEDE_WAIT)
        else:
            await respond(send, 409, b"text/plain")
            return
        if self.ended:
            await respond(send, 204, b"text/plain")
            return
        stop: asyncio.Future[str] = loop.create_future()
        done: asyncio.Future[None] = loop.create_future()
        current = self.current = (stop, done)
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        watcher = loop.create_task(wait_disconnect(receive))
        try:
            await self._answer(stop, watcher, send)
        finally:
            if not watcher.done():
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher
            done.set_result(None)
            if self.current is current:
                self.current = None
                if not self.ended:
                    self.arm_expiry()

    async def _answer(
        self, stop: asyncio.Future[str], watcher: asyncio.Task[None], send: Any
    ) -> None:
        loop = asyncio.get_running_loop()
        outbound = self.connection.outbound
        deadline = loop.time() + POLL_TIMEOUT
        while True:
            if stop.done():
                await respond(send, 204, b"text/plain")
                return
            if self.unsent or outbound.size:
                await self._send_batch(watcher, send)
                return
            if outbound.closed:
                # Everything was delivered and the connection is over.
                self.end()
                await respond(send, 204, b"text/plain")
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                await respond(send, 200, b"text/plain")
                return
            ready = self.ready
            if ready is None or ready.done():
                ready = self.ready = loop.create_task(outbound.ready())
            waits: set[asyncio.Future[Any]] = {ready, stop, watcher}
            finished, _ = await asyncio.wait(
                waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if watcher in finished:
                return  # the client went away (it aborts its poll when it stops)

    async def _send_batch(self, watcher: asyncio.Task[None], send: Any) -> None:
        """Answer with everything pending; what does not reach the client stays pending.

        A client that went away is noticed before the batch is taken (one turn of the loop
        lets a disconnect the server has seen reach ``watcher``) and while the response is
        written (a write waiting for a slow socket when the client leaves: uvicorn then
        drops the response without a word). A send that raises (ASGI servers may raise
        ``OSError`` for a closed connection) or is cancelled keeps the batch too.
        """
        await asyncio.sleep(0)
        if watcher.done():
            return
        data = self.unsent + self.connection.outbound.take()
        self.unsent = b""
        delivered = False
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await respond(send, 200, b"application/octet-stream", data)
            delivered = not watcher.done()
        except TimeoutError:
            logger.info("%s: send timed out, aborting", self.connection.log_name)
            self.end()
        except OSError:
            logger.debug("%s: the client left during a poll", self.connection.log_name)
        finally:
            if not delivered:
                self.unsent = data


def empty_poll_response() -> Response:
    """200 with no body: the first poll's answer (the client then sends its handshake), and a
    poll's that found no way to its connection yet (the official clients simply poll again)."""
    return no_cache(Response(b"", media_type="application/octet-stream"))


async def respond(send: Any, status: int, content_type: bytes, body: bytes = b"") -> None:
    """A whole poll response with the no-cache headers."""
    headers = [(b"content-type", content_type), *NO_CACHE]
    if status != 204:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class PollResponse:
    """The ASGI response of a poll; it needs ``receive`` to notice a client that left."""

    def __init__(self, session: LongPollingSession) -> None:
        self.session = session

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.session.poll(receive, send)
