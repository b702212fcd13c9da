"""One connection's deadlines, sans-I/O: handshake, keep-alive pings, client timeout, token
expiry. The connection's ``tick`` asks them what is due, acts on it, and says when they are
next due, so the handler looks at a connection only then (``deadlines.py``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .options import HubOptions

#: Why a connection whose client fell silent was closed (as ASP.NET Core words it).
CLIENT_TIMEOUT = "Client hasn't sent a message/ping within the configured client timeout."


class CoarseClock:
    """A time every hot path may read for the price of an attribute: the handler's last tick
    plus one tick period, so never earlier than the time it is read (the ticker moves it on)."""

    __slots__ = ("now",)

    def __init__(self, now: float = 0.0) -> None:
        self.now = now


class ConnectionTimers:
    """When a connection was made, last heard from and last pinged, and when its token ends."""

    __slots__ = ("ping_seen", "expires_at", "_clock", "_created", "_last_heard", "_next_ping")

    def __init__(
        self, now: float, keepalive_interval: float, clock: CoarseClock | None = None
    ) -> None:
        #: The client timeout runs from the client's first ping, as in ASP.NET Core.
        self.ping_seen = False
        #: When the user's token expires (seconds since the epoch), if that closes it.
        self.expires_at: float | None = None
        self._clock = clock if clock is not None else CoarseClock(now)
        self._created = now
        self._last_heard = now
        self._next_ping = now + keepalive_interval

    @property
    def heard(self) -> bool:
        """True when the client was heard from since the last tick."""
        return self._last_heard >= self._clock.now

    @heard.setter
    def heard(self, value: bool) -> None:
        # Set on every receive: a stamp of the coarse clock, cheaper than reading a clock per
        # message, and never earlier than the message (no client closed early for it).
        if value:
            stamp = self._clock.now
            if stamp > self._last_heard:
                self._last_heard = stamp

    def handshake_expired(self, now: float, timeout: float) -> bool:
        """True when the handshake has taken ``timeout`` seconds."""
        return now - self._created >= timeout

    def ping_due(self, now: float, interval: float) -> bool:
        """True when a keep-alive ping is due (the next is then ``interval`` away)."""
        if now < self._next_ping:
            return False
        self._next_ping = now + interval
        return True

    def token_expired(self) -> bool:
        """True once the user's token has expired."""
        return self.expires_at is not None and time.time() >= self.expires_at

    def client_timed_out(self, now: float, timeout: float) -> bool:
        """True when the client, having pinged once, has been silent for ``timeout`` seconds."""
        return self.ping_seen and now - self._last_heard >= timeout

    def next_due(self, now: float, options: HubOptions, pinging: bool) -> float:
        """When these timers need a look next (a tick at or after that time): the next ping,
        the client timeout, the token's expiry, whichever comes first.

        Before the client's first ping there is no client timeout, but a look every
        ``client_timeout`` finds the ping (and then its deadline) in time.
        """
        client_timeout = options.client_timeout
        if self.ping_seen:
            due = self._last_heard + client_timeout
        else:
            due = now + client_timeout
        if pinging and self._next_ping < due:
            due = self._next_ping
        expires_at = self.expires_at
        if expires_at is not None:
            due = min(due, now + (expires_at - time.time()))
        return due
