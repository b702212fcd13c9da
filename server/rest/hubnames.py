"""Hub names in REST paths: the last segment of the hub's path, case-insensitive.

``/hubs/chat`` is ``chat`` (and ``Chat``). Two hubs whose names collide cannot both be
reached, so the app refuses to start with them; a hub at ``/`` has no name and no REST API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import SettingsError

if TYPE_CHECKING:
    from backplane import HubContext

    from ..hubs import HubEndpoint


def hub_name(path: str) -> str:
    """The REST name of the hub at ``path`` ("" for ``/``), lower case."""
    return path.rstrip("/").rsplit("/", 1)[-1].lower()


def hub_contexts(endpoints: Mapping[str, HubEndpoint]) -> dict[str, HubContext[Any]]:
    """REST name -> the hub's context; SettingsError when two hubs share a name."""
    by_name: dict[str, HubContext[Any]] = {}
    paths: dict[str, str] = {}
    for path, endpoint in endpoints.items():
        name = hub_name(path)
        if not name:
            continue
        if name in paths:
            raise SettingsError(
                f"--rest-access-key: the hubs at {paths[name]!r} and {path!r} would both be "
                f"the REST API's hub {name!r} (the last segment of the path, any case); "
                "serve them at paths that end differently"
            )
        paths[name] = path
        by_name[name] = endpoint.handler.context
    return by_name
