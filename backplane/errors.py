"""Exception types of the backplane package."""

from __future__ import annotations


class HubplaneError(Exception):
    """Base class of every hubplane error."""


class HubException(HubplaneError):
    """An error whose message is sent to the calling client verbatim."""


class ProtocolError(HubplaneError):
    """Bytes that do not form a valid hub protocol message or handshake."""


class MessageTooLargeError(ProtocolError):
    """An incoming message exceeds the configured maximum size."""


class HubRegistrationError(HubplaneError):
    """A hub class cannot be registered (for example two methods share a name)."""


class ConnectionNotFoundError(HubException, LookupError):
    """No live node owns the connection (its message reaches a calling client verbatim)."""
