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
from .runner import (
    EXIT_STARTUP,
    SUPERVISOR_ENV,
    WORKER_ENV,
    HubplaneServer,
    WorkerSupervisor,
    listen_sockets,
    reuse_port_supported,
    stop_with_parent,
)
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
    authenticator: Any = None
    if settings.authenticator:
        authenticator = import_object(settings.authenticator)
    elif settings.jwt_secret or settings.jwt_public_key:
        from .jwt_auth import JwtAuthenticator

        jwt_options: dict[str, Any] = {
            "issuer": settings.jwt_issuer,
            "audience": settings.jwt_audience,
        }
        if settings.jwt_public_key:
            authenticator = JwtAuthenticator.from_public_key_file(
                settings.jwt_public_key, **jwt_options
            )
        else:
            authenticator = JwtAuthenticator(secret=settings.jwt_secret, **jwt_options)
    from backplane.errors import HubRegistrationError
    from backplane.filters import instantiate

    try:
        filters = instantiate(import_object(spec) for spec in settings.filters)
    except HubRegistrationError as exc:
        raise SettingsError(f"--filter: {exc}") from exc
    app = create_app(hubs, settings=settings, authenticate=authenticator, filters=filters)
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
    worker = os.environ.get(WORKER_ENV)
    try:
        settings = build_settings(args)
        logs.install(settings.log_level)
        if settings.workers > 1:
            check_workers(settings)
        # Import the hubs here even for a supervisor, so a bad --hub fails before any worker.
        app = build_app(settings)
    except SettingsError as exc:
        print(f"hubplane: error: {exc}", file=sys.stderr)
        return 2
    if settings.workers > 1:
        return run_workers(argv, settings)
    config = uvicorn.Config(app, **_uvicorn_options(settings))  # configures uvicorn's logging
    logs.guard_handlers()
    server = HubplaneServer(config)
    if not worker:
        server.run()
        return 0
    try:
        sockets = listen_sockets(settings.host, settings.port)
    except OSError as exc:
        logger.error(
            "worker %s cannot listen on %s:%d: %s", worker, settings.host, settings.port, exc
        )
        return EXIT_STARTUP
    supervisor = os.environ.get(SUPERVISOR_ENV, "")
    stop_with_parent(server, int(supervisor) if supervisor.isdigit() else os.getppid())
    logger.info(
        "worker %s (pid %d) serving on http://%s:%d",
        worker,
        os.getpid(),
        settings.host,
        settings.port,
    )
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:  # a second Ctrl+C forwarded by the supervisor: no traceback
        return 130
    return 0


def check_workers(settings: Settings) -> None:
    """Refuse ``--workers N`` settings that cannot work (Redis is checked by the settings)."""
    if settings.port == 0:
        raise SettingsError(
            "--port 0 cannot be used with --workers > 1: each worker would listen on a "
            "different free port; choose a port"
        )
    if not reuse_port_supported():
        raise SettingsError(
            "--workers > 1 needs SO_REUSEPORT, which this platform lacks; run one process "
            "per port behind a load balancer instead"
        )


def run_workers(argv: Sequence[str], settings: Settings) -> int:
    """Supervise ``settings.workers`` children, each ``hubplane serve ... --workers 1``."""
    # The last --workers flag wins, and flags win over HUBPLANE_WORKERS.
    command = [sys.executable, "-m", "server.cli", "serve", *argv, "--workers", "1"]
    logger.info(
        "serving on http://%s:%d with %d worker processes",
        settings.host,
        settings.port,
        settings.workers,
    )
    return WorkerSupervisor(command, settings.workers).run()


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
