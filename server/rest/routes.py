"""Which handler answers which path: the versioned ``/api/hubs/{hub}/...`` table and the legacy
``/api/v1/hubs/{hub}/...`` one, matched on percent-decoded segments.

A pattern is a tuple of segments after the hub; ``{user}``, ``{group}`` and ``{connection}``
take one segment each (which may hold ``/`` when the caller sent ``%2F``), anything else is
matched case-insensitively.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import NamedTuple

from . import closing, existence, invoke, listing, membership, sends, usergroups
from .call import Call
from .errors import RestError
from .request import Reply

Handler = Callable[[Call], Awaitable[Reply]]

#: The ``api-version`` values of ``/api/hubs/...``, oldest first.
API_VERSIONS = ("2022-06-01", "2024-12-01")
LATEST = API_VERSIONS[-1]

_PARAM_NAMES = {"{user}": "user", "{group}": "group", "{connection}": "connection"}


class Route(NamedTuple):
    """A path pattern, its handler per method, and the first api-version that has it."""

    pattern: tuple[str, ...]
    methods: Mapping[str, Handler]
    since: str = API_VERSIONS[0]


VERSIONED: list[Route] = [
    Route((":send",), {"POST": sends.send_all}),
    Route((":closeconnections",), {"POST": closing.close_all}),
    Route(("users", "{user}"), {"HEAD": existence.user_exists}),
    Route(("users", "{user}", ":send"), {"POST": sends.send_user}),
    Route(("users", "{user}", ":closeconnections"), {"POST": closing.close_user}),
    Route(("users", "{user}", "groups"), {"DELETE": usergroups.remove_user_from_all}),
    Route(
        ("users", "{user}", "groups", "{group}"),
        {
            "PUT": usergroups.add_user,
            "DELETE": usergroups.remove_user,
            "HEAD": usergroups.user_in_group,
        },
    ),
    Route(("groups", "{group}"), {"HEAD": existence.group_exists}),
    Route(("groups", "{group}", ":send"), {"POST": sends.send_group}),
    Route(("groups", "{group}", ":closeconnections"), {"POST": closing.close_group}),
    Route(("groups", "{group}", "connections"), {"GET": listing.group_connections}, LATEST),
    Route(
        ("groups", "{group}", "connections", "{connection}"),
        {"PUT": membership.add_to_group, "DELETE": membership.remove_from_group},
    ),
    Route(
        ("connections", "{connection}"),
        {"HEAD": existence.connection_exists, "DELETE": closing.close_connection},
    ),
    Route(("connections", "{connection}", ":send"), {"POST": sends.send_connection}),
    Route(("connections", "{connection}", ":invoke"), {"POST": invoke.invoke}, LATEST),
    Route(("connections", "{connection}", "groups"), {"DELETE": membership.remove_from_all_groups}),
]

# The first REST API: sends with POST, existence checks with GET.
LEGACY: list[Route] = [
    Route((), {"POST": sends.send_all}),
    Route(("users", "{user}"), {"POST": sends.send_user, "GET": existence.user_exists}),
    Route(("groups", "{group}"), {"POST": sends.send_group, "GET": existence.group_exists}),
    Route(
        ("connections", "{connection}"),
        {"POST": sends.send_connection, "GET": existence.connection_exists},
    ),
]


def match(routes: Sequence[Route], segments: Sequence[str]) -> tuple[Route, dict[str, str]]:
    """The route of ``segments`` and the names it took; 404 when none fits, 400 for an empty
    name."""
    for route in routes:
        pattern = route.pattern
        if len(pattern) != len(segments):
            continue
        params: dict[str, str] = {}
        for expected, given in zip(pattern, segments, strict=True):
            name = _PARAM_NAMES.get(expected)
            if name is not None:
                params[name] = given
            elif expected != given.lower():
                break
        else:
            for name, value in params.items():
                if not value:
                    raise RestError(400, f"the {name} in the path must not be empty")
            return route, params
    raise RestError(404, "no such REST API path (see docs/rest-api.md)")


def handler_for(route: Route, method: str) -> Handler:
    """The route's handler of ``method`` (GET answers HEAD too); 405 with Allow otherwise."""
    handler = route.methods.get(method)
    if handler is None and method == "HEAD":
        handler = route.methods.get("GET")
    if handler is None:
        allowed = ", ".join(sorted(route.methods))
        raise RestError(
            405, f"{method} is not allowed here (allowed: {allowed})", {"allow": allowed}
        )
    return handler
