"""Argument type checks of hub methods, worked out once per method from its annotations.

The common annotations are checked: ``str``, ``int`` (a ``bool`` is refused), ``float`` (an
``int`` is accepted), ``bool``, ``bytes``, ``list`` and ``dict`` with their parameterised forms
(the container only: items are not looked at), and unions of them with ``None``
(``X | None``, ``Optional[X]``, or a default of ``None``). Anything else, ``Any``, ``object``
and parameters without an annotation take any value. Values are checked, never converted: a
``float`` parameter given ``3`` receives the int ``3``.

Per call this costs one ``isinstance`` per checked argument (see :func:`arguments_fit`); a
method without checked parameters costs nothing.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Any

#: One checked parameter: (argument index, the types accepted, whether a bool is refused).
#: ``bool`` is a subclass of ``int``: ``int`` and ``float`` parameters refuse it explicitly.
Check = tuple[int, tuple[type, ...], bool]

_NONE = type(None)
# What each checked annotation accepts.
_ACCEPTS: dict[Any, tuple[type, ...]] = {
    str: (str,),
    int: (int,),
    float: (float, int),
    bool: (bool,),
    bytes: (bytes, bytearray),
    list: (list,),
    dict: (dict,),
    _NONE: (_NONE,),
}
_UNIONS = {typing.Union, types.UnionType}


def accepted_types(annotation: Any) -> tuple[type, ...] | None:
    """The types a value of ``annotation`` may have, or None when any value is taken."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return accepted_types(typing.get_args(annotation)[0])
    if origin in _UNIONS:
        found: list[type] = []
        for member in typing.get_args(annotation):
            accepted = accepted_types(member)
            if accepted is None:
                return None  # one unchecked member: the union takes anything
            found.extend(accepted)
        return tuple(dict.fromkeys(found))
    if origin is not None:
        annotation = origin  # list[int] -> list, dict[str, Any] -> dict (shallow)
    try:
        return _ACCEPTS.get(annotation)
    except TypeError:  # an unhashable annotation: not one of ours
        return None


def parameter_check(index: int, annotation: Any, default_is_none: bool) -> Check | None:
    """The check of the argument at ``index``, or None when it takes any value.

    A default of ``None`` lets ``None`` through, as an implicit ``Optional``.
    """
    accepted = accepted_types(annotation)
    if accepted is None:
        return None
    if default_is_none and _NONE not in accepted:
        accepted = (*accepted, _NONE)
    refuse_bool = bool not in accepted and (int in accepted or float in accepted)
    return (index, accepted, refuse_bool)


def arguments_fit(checks: Sequence[Check], arguments: Sequence[Any]) -> bool:
    """True when every checked argument given has one of its accepted types (``checks`` are
    in argument order; arguments left out take their defaults)."""
    given = len(arguments)
    for index, accepted, refuse_bool in checks:
        if index >= given:
            break
        value = arguments[index]
        if not isinstance(value, accepted) or (refuse_bool and value.__class__ is bool):
            return False
    return True
