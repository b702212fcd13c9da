"""The ``hubplane`` command: ``hubplane serve --hub /hubs/chat=pkg.module:ChatHub``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import logs
from .errors import SettingsError
from .runner import HubplaneServer
from .settings import Settings, add_arguments, build_settings

logger = logging.getLogger("hubplane.cli")


def import_object(spec: str) -> Any:
    """Import ``module:attr`` (the current directory is importable, as with uvicorn)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SettingsError(f"{spec!r} is not of the form module:attribute")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SettingsError(f"cannot import {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SettingsError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def build_app(settings: Settings) -> Any:
    """The ASGI app the settings describe."""
    from backplane import Hub

    from .app import create_app

    if settings.hubs:
        hubs: dict[str, Any] = {}
        for path, spec in settings.hubs.items():
            hub = import_object(spec)
            if not (isinstance(hub, type) and issubclass(hub, Hub)):
                raise SettingsError(f"{spec!r} is not a subclass of backplane.Hub")
            hubs[path] = hub
    else:
        from .demo import DemoHub

        hubs = {"/hubs/demo": DemoHub}
    authenticator = import_object(settings.authenticator) if settings.authenticator else None
    app = create_app(hubs, settings=settings, authenticate=authenticator)
    if not settings.hubs:
        from .demo import demo_page

        app.add_route("/", demo_page, methods=["GET"])
    return app


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    import importlib.util

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "lifespan": "on",
        "ws_per_message_deflate": settings.ws_per_message_deflate,
        # Hub messages are limited one by one; a frame may hold many of them.
        # Frames may carry several messages, but a frame far over the message limit is
        # refused before it is buffered whole.
        "ws_max_size": max(1024 * 1024, 4 * settings.max_message_size)
        if settings.max_message_size
        else 16 * 1024 * 1024,
        "ws_ping_interval": None,  # SignalR has its own keep-alive
        "ws_ping_timeout": None,
        "access_log": settings.log_level in ("debug", "trace"),
        # uvicorn's records go through our handler: the node in every line, secrets masked.
        "log_config": None,
        "timeout_graceful_shutdown": 10,
    }
    if importlib.util.find_spec("uvloop") is not None:
        options["loop"] = "uvloop"
    if importlib.util.find_spec("httptools") is not None:
        options["http"] = "httptools"
    from uvicorn.config import WS_PROTOCOLS

    if "websockets-sansio" in WS_PROTOCOLS:
        options["ws"] = "websockets-sansio"
    return options


def serve(argv: Sequence[str]) -> int:
    """Run ``hubplane serve``."""
    import uvicorn

    parser = argparse.ArgumentParser(
        prog="hubplane serve",
        description="Serve SignalR hubs. Every option can also be set with a HUBPLANE_* "
        "environment variable; flags win over variables, variables over defaults.",
    )
    add_arguments(parser)
    args = parser.parse_args(list(argv))
    try:
        settings = build_settings(args)
        logs.install(settings.log_level)
        if settings.workers > 1:
            raise SettingsError(
                "--workers > 1 needs the Redis backplane, which this version does not have yet"
            )
        if settings.redis_url:
            logger.warning(
                "a Redis URL is set but this version has no Redis backplane yet: "
                "serving as a single node"
            )
        app = build_app(settings)
    except SettingsError as exc:
        print(f"hubplane: error: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(app, **_uvicorn_options(settings))  # configures uvicorn's logging
    logs.guard_handlers()
    HubplaneServer(config).run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hubplane`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="hubplane", description="A SignalR hub server.")
    parser.add_argument("command", choices=["serve"], help="what to do")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "serve":
        return serve(rest)
    parser.error(f"unknown command {command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
