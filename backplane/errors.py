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


class LimitExceededError(HubException):
    """A per-connection limit was reached (its message names the setting); nothing else ends."""


class HubRegistrationError(HubplaneError):
    """A hub class cannot be registered (for example two methods share a name)."""


class ConnectionNotFoundError(HubException, LookupError):
    """No live node owns the connection (its message reaches a calling client verbatim)."""


class ClientResultError(HubException):
    """A client result could not be had: the family ``invoke()`` raises."""


class ClientResultFailedError(ClientResultError):
    """The client answered with an error (its handler threw, or it has no handler)."""


class ClientDisconnectedError(ClientResultError):
    """The client, or the node it was connected to, went away before answering."""


class ClientResultTimeoutError(ClientResultError, TimeoutError):
    """The client did not answer within the timeout."""


class ClientNotFoundError(ClientResultError, ConnectionNotFoundError):
    """No node has the connection that was asked for a result."""
