"""Hub method tables and the execution of invocations (binding, errors, completions)."""

from __future__ import annotations

import collections.abc
import inspect
import logging
import typing
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

from .authorization import AuthorizationRule, class_rules, method_rules
from .binding import Check, parameter_check
from .errors import HubException, HubRegistrationError
from .hub import HUB_METHOD_ATTR, Hub
from .tasks import maybe_await as maybe_await  # re-exported: hooks may be sync or async

logger = logging.getLogger("hubplane.dispatch")

_STREAM_ORIGINS = {AsyncIterator, AsyncIterable, typing.AsyncIterator, typing.AsyncIterable}
_STREAM_ORIGINS |= {typing.AsyncGenerator, collections.abc.AsyncGenerator}
# A method may also stream from a plain generator (upload parameters stay async only).
_SYNC_STREAM_ORIGINS: set[Any] = {typing.Iterator, typing.Generator}
_SYNC_STREAM_ORIGINS |= {collections.abc.Iterator, collections.abc.Generator}
_RESERVED = frozenset(dir(Hub))


def normalize_method_name(name: str) -> str:
    """The key hub methods are matched by: case-insensitive, underscores ignored."""
    return name.replace("_", "").lower()


def _is_stream_annotation(annotation: Any) -> bool:
    origin = typing.get_origin(annotation) or annotation
    return origin in _STREAM_ORIGINS


class HubMethod:
    """One callable hub method and how to bind arguments to it."""

    __slots__ = (
        "name",
        "func",
        "is_coroutine",
        "is_stream",
        "min_args",
        "max_args",
        "stream_params",
        "returns_value",
        "rules",
        "checks",
    )

    def __init__(self, name: str, func: Callable[..., Any]) -> None:
        self.name = name
        self.func = func
        self.is_coroutine = inspect.iscoroutinefunction(func)
        try:
            hints = typing.get_type_hints(func)
        except Exception:  # unresolvable forward references: fall back to raw annotations
            hints = dict(getattr(func, "__annotations__", {}))
        returns = hints.get("return", inspect.Signature.empty)
        self.is_stream = (
            inspect.isasyncgenfunction(func)
            or inspect.isgeneratorfunction(func)  # a plain generator streams too
            or _is_stream_annotation(returns)
            or (typing.get_origin(returns) or returns) in _SYNC_STREAM_ORIGINS
        )
        # A method without a return annotation that returns None is void; an annotated one
        # (other than -> None) returns a value even when that value is None (null).
        self.returns_value = returns is not inspect.Signature.empty and returns not in (
            None,
            type(None),
        )
        params = list(inspect.signature(func).parameters.values())[1:]  # drop self
        self.stream_params: list[int] = []
        # The argument type checks, in argument order (stream parameters get no argument).
        checks: list[Check] = []
        min_args = 0
        max_args: int | None = 0
        index = 0
        for param in params:
            if param.kind is param.VAR_POSITIONAL:
                max_args = None
                continue
            if param.kind in (param.KEYWORD_ONLY, param.VAR_KEYWORD):
                continue
            if _is_stream_annotation(hints.get(param.name)):
                self.stream_params.append(index)
            else:
                position = index - len(self.stream_params)
                annotation = hints.get(param.name, Any)
                check = parameter_check(position, annotation, param.default is None)
                if check is not None:
                    checks.append(check)
                if param.default is param.empty:
                    min_args += 1
                if max_args is not None:
                    max_args += 1
            index += 1
        self.min_args = min_args
        self.max_args = max_args
        self.checks = tuple(checks)
        # @authorize rules of the hub class and of this method (filled by HubDescriptor).
        self.rules: list[AuthorizationRule] = method_rules(func)

    def expected_args(self) -> str:
        """The argument count this method expects, for error messages."""
        if self.max_args == self.min_args:
            return str(self.min_args)
        if self.max_args is None:
            return f"at least {self.min_args}"
        return f"{self.min_args} to {self.max_args}"


class HubDescriptor:
    """The method table of a hub class, built once when the hub is registered."""

    __slots__ = ("hub_type", "methods", "hub_rules", "_by_target")

    def __init__(self, hub_type: type[Hub[Any]]) -> None:
        if not (isinstance(hub_type, type) and issubclass(hub_type, Hub)):
            raise HubRegistrationError(f"{hub_type!r} is not a subclass of backplane.Hub")
        self.hub_type = hub_type
        self.hub_rules = class_rules(hub_type)
        self.methods: dict[str, HubMethod] = {}
        self._by_target: dict[str, HubMethod] = {}  # target names as clients spell them
        merged: dict[str, Any] = {}
        for klass in reversed(hub_type.__mro__):
            if klass is not Hub and issubclass(klass, Hub):
                merged.update(vars(klass))  # a subclass's definition replaces its base's
        owners: dict[str, str] = {}
        for attr, value in merged.items():
            if not inspect.isfunction(value):
                continue  # static/class methods, properties and plain attributes are not exposed
            explicit = getattr(value, HUB_METHOD_ATTR, None)
            if explicit is None and (attr.startswith("_") or attr in _RESERVED):
                continue
            name = explicit or attr
            key = normalize_method_name(name)
            if key in owners:
                raise HubRegistrationError(
                    f"hub {hub_type.__qualname__}: methods {owners[key]!r} and {attr!r} "
                    f"both answer to the client name {name!r}"
                )
            owners[key] = attr
            method = HubMethod(name, value)
            method.rules = [*self.hub_rules, *method.rules]
            self.methods[key] = method

    def lookup(self, target: str) -> HubMethod | None:
        """The method a client target name refers to, or None."""
        method = self._by_target.get(target)
        if method is None:
            method = self.methods.get(normalize_method_name(target))
            # Remember spellings that exist; bounded so made-up names cannot grow it.
            if method is not None and len(self._by_target) < 1024:
                self._by_target[target] = method
        return method


def error_text(prefix: str, exc: BaseException, detailed: bool) -> str:
    """An error message as the reference server words it: detail only when allowed."""
    if isinstance(exc, HubException) or detailed:
        return f"{prefix} {type(exc).__name__}: {exc}"
    return prefix


def invoke_error(target: str, exc: BaseException, detailed: bool) -> str:
    """The Completion error for a hub method that raised."""
    return error_text(
        f"An unexpected error occurred invoking '{target}' on the server.", exc, detailed
    )


def unknown_method_error(target: str) -> str:
    """The Completion error for a method that does not exist."""
    return (
        f"Failed to invoke '{target}' due to an error on the server. "
        "HubException: Method does not exist."
    )


def binding_error(target: str, method: HubMethod, given: int, detailed: bool) -> str:
    """The Completion error for a wrong argument count."""
    text = f"Failed to invoke '{target}' due to an error on the server."
    if detailed:
        text += (
            f" InvalidDataException: Invocation provides {given} argument(s) but target "
            f"expects {method.expected_args()}."
        )
    return text


def type_binding_error(target: str, detailed: bool) -> str:
    """The Completion error for arguments whose types do not match the method's annotations."""
    text = f"Failed to invoke '{target}' due to an error on the server."
    if detailed:
        text += (
            " InvalidDataException: Error binding arguments. Make sure that the types of the "
            "provided values match the types of the hub method being invoked."
        )
    return text


def stream_error(exc: BaseException, detailed: bool) -> str:
    """The Completion error of a stream that failed mid-way."""
    return error_text("An error occurred on the server while streaming results.", exc, detailed)
