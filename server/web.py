"""The browser pages: the demo chat at ``/`` and the cluster dashboard at ``/_hubplane/dashboard``.

Both are static files in ``static/``. The demo runs on the official SignalR browser client,
``@microsoft/signalr``'s ``dist/browser/signalr.min.js``, installed by npm from
``static/package-lock.json`` (``make web-deps``) and carried by the wheel and the Docker image.
The dashboard is a page that reveals nothing by itself: it asks the admin API, with the token
the user gives it, for everything it shows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

logger = logging.getLogger("hubplane.web")

STATIC = Path(__file__).resolve().parent / "static"
SIGNALR_PACKAGE = STATIC / "node_modules" / "@microsoft" / "signalr"
BUNDLE = SIGNALR_PACKAGE / "dist" / "browser" / "signalr.min.js"
DASHBOARD_PATH = "/_hubplane/dashboard"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# Scripts and styles only from this origin, calls only to it (WebSockets included): no inline
# script, so a name or a message shown on the page cannot run as code.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def bundle_version() -> str | None:
    """The version of the SignalR browser bundle installed beside the pages, or None."""
    try:
        meta = json.loads((SIGNALR_PACKAGE / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not BUNDLE.is_file():
        return None
    version = meta.get("version")
    return version if isinstance(version, str) else None


def static_file(path: Path) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint answering with one file of ``static/`` (read on each request)."""

    async def endpoint(request: Request) -> Response:
        try:
            body = path.read_bytes()
        except OSError:
            return PlainTextResponse(f"{path.name} is missing on this server", status_code=404)
        headers = dict(_HEADERS)
        if path.suffix == ".html":
            headers["content-security-policy"] = _CSP
        return Response(body, headers=headers, media_type=_TYPES.get(path.suffix))

    return endpoint


def demo_routes() -> list[BaseRoute]:
    """``/`` and its scripts: the demo chat on the official browser client."""
    if bundle_version() is None:
        logger.warning(
            "the demo page at / needs the SignalR browser bundle (%s): run `make web-deps` "
            "(Node.js with npm) in a clone; wheels and the Docker image carry it",
            BUNDLE,
        )
    return [
        Route("/", static_file(STATIC / "demo.html"), methods=["GET"]),
        Route("/demo/demo.js", static_file(STATIC / "demo.js"), methods=["GET"]),
        Route("/demo/hubplane.css", static_file(STATIC / "hubplane.css"), methods=["GET"]),
        Route("/demo/signalr.min.js", static_file(BUNDLE), methods=["GET"]),
    ]


def dashboard_routes() -> list[BaseRoute]:
    """The dashboard page and its script (put them before the admin API's catch-all)."""
    base = DASHBOARD_PATH
    return [
        Route(base, static_file(STATIC / "dashboard.html"), methods=["GET"]),
        Route(base + "/dashboard.js", static_file(STATIC / "dashboard.js"), methods=["GET"]),
        Route(base + "/hubplane.css", static_file(STATIC / "hubplane.css"), methods=["GET"]),
    ]
