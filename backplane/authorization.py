"""``@authorize``: who may connect to a hub and who may call a method.

::

    @authorize                          # authenticated users only
    class ChatHub(Hub):
        @authorize(roles=["admin"])     # ... and for this method, admins only
        async def kick(self, connection_id: str) -> None: ...

        @authorize(policy=lambda user: user.claims.get("plan") == "pro")
        async def export(self) -> bytes: ...

Every rule on the class and on the method must pass; each needs an authenticated user.
``roles`` passes when the user has any of them; ``policy(user)`` (sync or async) when it
returns something true. A hub whose class rules fail is refused at negotiate and at the
transport (401 without a user, 403 with one); a method whose rules fail answers the call
with the reference error and runs nothing.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar, overload

from .user import User

AUTHORIZE_ATTR = "__hubplane_authorize__"
logger = logging.getLogger("hubplane.authorization")

T = TypeVar("T")
Policy = Callable[["User"], bool | Awaitable[bool]]


class AuthorizationRule:
    """One ``@authorize``: an authenticated user, optionally in a role, optionally a policy."""

    __slots__ = ("roles", "policy")

    def __init__(self, roles: Iterable[str] | None = None, policy: Policy | None = None) -> None:
        self.roles: frozenset[str] = frozenset(roles or ())
        self.policy = policy

    async def allows(self, user: User | None) -> bool:
        """True when ``user`` satisfies this rule."""
        if user is None:
            return False
        if self.roles and not any(user.is_in_role(role) for role in self.roles):
            return False
        if self.policy is not None:
            try:
                verdict = self.policy(user)
                if inspect.isawaitable(verdict):
                    verdict = await verdict
            except Exception:
                # A policy that fails refuses (and says why in the log), never hangs the call.
                logger.exception("authorization policy %r failed for user %r", self.policy, user)
                return False
            if not verdict:
                return False
        return True

    def __repr__(self) -> str:
        return f"AuthorizationRule(roles={sorted(self.roles)!r}, policy={self.policy!r})"


@overload
def authorize(target: T) -> T: ...


@overload
def authorize(
    target: None = None,
    *,
    roles: Iterable[str] | None = None,
    policy: Policy | None = None,
) -> Callable[[T], T]: ...


def authorize(
    target: Any = None,
    *,
    roles: Iterable[str] | None = None,
    policy: Policy | None = None,
) -> Any:
    """Require an authenticated user (and ``roles``/``policy``) for a hub class or method."""
    if isinstance(roles, str):
        roles = [roles]
    rule = AuthorizationRule(roles, policy)

    def apply(obj: T) -> T:
        # The rules live in the object's own __dict__, so a subclass adds to its base's
        # rules (collected along the MRO) instead of sharing a list with it.
        own = obj.__dict__.get(AUTHORIZE_ATTR) if hasattr(obj, "__dict__") else None
        if own is None:
            own = []
            setattr(obj, AUTHORIZE_ATTR, own)
        own.append(rule)
        return obj

    if target is not None:
        return apply(target)
    return apply


def class_rules(hub_type: type) -> list[AuthorizationRule]:
    """Every ``@authorize`` rule on a hub class and its bases."""
    rules: list[AuthorizationRule] = []
    for klass in reversed(hub_type.__mro__):
        rules.extend(klass.__dict__.get(AUTHORIZE_ATTR, ()))
    return rules


def method_rules(func: Callable[..., Any]) -> list[AuthorizationRule]:
    """The ``@authorize`` rules on one method."""
    return list(getattr(func, "__dict__", {}).get(AUTHORIZE_ATTR, ()))


async def allowed(rules: Sequence[AuthorizationRule], user: User | None) -> bool:
    """True when ``user`` satisfies every rule (no rules: everyone)."""
    for rule in rules:
        if not await rule.allows(user):
            return False
    return True


def unauthorized_error(target: str) -> str:
    """The reference server's Completion error for a refused method."""
    return f"Failed to invoke '{target}' because user is unauthorized"
