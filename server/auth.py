"""The pluggable authenticator hook: ``async authenticate(request) -> User | str | None``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import HTTPConnection

from backplane import User

AuthResult = User | str | None
Authenticator = Callable[[HTTPConnection], AuthResult | Awaitable[AuthResult]]


async def authenticate(authenticator: Authenticator | None, request: HTTPConnection) -> User | None:
    """Run the hook (sync or async); a plain string result is taken as the user id."""
    if authenticator is None:
        return None
    result: Any = authenticator(request)
    if inspect.isawaitable(result):
        result = await result
    if result is None or isinstance(result, User):
        return result
    if isinstance(result, str):
        return User(result)
    raise TypeError(f"authenticator returned {type(result).__name__}, expected User, str or None")
