"""The one error type of the REST API: a status and a reason the caller reads."""

from __future__ import annotations


class RestError(Exception):
    """A request answered with ``status`` and ``{"error": reason}`` (nothing was done)."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}
