"""Two listeners, one process: the hubs on ``--port``, the operators' routes on ``--admin-port``.

uvicorn serves every socket it is given with one ASGI app, so that app is :class:`Listeners`:
requests to the admin port go to the admin app (``Hubplane.admin_app``), everything else, and
the lifespan, to the main app. One event loop, one lifespan, one drain for both.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any


class Listeners:
    """Routes each request to the app of the listener (the local port) it arrived on."""

    def __init__(self, main: Any, admin: Any, admin_ports: Collection[int]) -> None:
        self.main = main
        self.admin = admin
        self.admin_ports = frozenset(admin_ports)
        # What the runner reads of the app (``app.state.hubplane``) is the main app's.
        self.state = main.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        server = scope.get("server")
        if server is not None and scope["type"] != "lifespan" and server[1] in self.admin_ports:
            await self.admin(scope, receive, send)
        else:
            await self.main(scope, receive, send)
