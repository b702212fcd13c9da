"""An authenticated user, as authenticators make it and hubs and authorization read it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class User:
    """An authenticated user: an id, claims and roles."""

    __slots__ = ("id", "claims", "roles")

    def __init__(
        self,
        id: str,
        claims: Mapping[str, Any] | None = None,
        roles: Iterable[str] = (),
    ) -> None:
        self.id = id
        self.claims: dict[str, Any] = dict(claims or {})
        self.roles: frozenset[str] = frozenset(roles)

    def is_in_role(self, role: str) -> bool:
        """True when the user has ``role``."""
        return role in self.roles

    @property
    def expires_at(self) -> float | None:
        """When the user's token expires (its ``exp`` claim, seconds since the epoch), if known."""
        exp = self.claims.get("exp")
        return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, roles={sorted(self.roles)!r})"
