"""Exception types of the server package."""

from __future__ import annotations


class ServerError(Exception):
    """Base class of server errors."""


class SettingsError(ServerError):
    """A setting has an invalid value; the message says which and why."""
