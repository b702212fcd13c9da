"""Exception types of the server package."""

from __future__ import annotations


class ServerError(Exception):
    """Base class of server errors."""


class SettingsError(ServerError):
    """A setting has an invalid value; the message says which and why."""


class AuthenticationFailed(ServerError):
    """A credential was presented and is not valid: the request gets 401.

    Authenticators raise it for a refused token; the refusal is one warning line with its
    reason (keep the token out of the message). Any other exception from an authenticator
    is a fault of the authenticator and is logged with its traceback.
    """
