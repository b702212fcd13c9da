"""One connection's deadlines, sans-I/O: handshake, keep-alive pings, client timeout, token
expiry. The connection's ``tick`` asks them what is due and acts on it."""

from __future__ import annotations

import time


class ConnectionTimers:
    """When a connection was made, last heard from and last pinged, and when its token ends."""

    __slots__ = ("heard", "ping_seen", "expires_at", "_created", "_last_heard", "_next_ping")

    def __init__(self, now: float, keepalive_interval: float) -> None:
        #: Set on every receive; folded into the last-heard time at the next tick (cheaper
        #: than reading the clock per message).
        self.heard = False
        #: The client timeout runs from the client's first ping, as in ASP.NET Core.
        self.ping_seen = False
        #: When the user's token expires (seconds since the epoch), if that closes it.
        self.expires_at: float | None = None
        self._created = now
        self._last_heard = now
        self._next_ping = now + keepalive_interval

    def observe(self, now: float) -> None:
        """Note the time if the client was heard from since the last tick."""
        if self.heard:
            self.heard = False
            self._last_heard = now

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
