"""Running the app on uvicorn, with hub connections closed before uvicorn drops sockets."""

from __future__ import annotations

import logging
import socket
from typing import Any

import uvicorn

logger = logging.getLogger("hubplane.runner")


def find_hubplane(app: Any) -> Any:
    """The ``Hubplane`` state object of an app made by ``create_app`` (or None)."""
    state = getattr(app, "state", None)
    return getattr(state, "hubplane", None) if state is not None else None


class HubplaneServer(uvicorn.Server):
    """A uvicorn server that lets hub clients know before the process stops.

    uvicorn closes WebSockets with code 1012 before the lifespan shutdown runs, so the
    clients would never see a SignalR Close message. This sends every client a Close with
    ``allowReconnect`` first, then lets uvicorn finish.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        hubplane = find_hubplane(self.config.app)
        if hubplane is not None:
            try:
                await hubplane.close_connections()
            except Exception:
                logger.exception("closing hub connections failed")
        await super().shutdown(sockets)
