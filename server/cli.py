"""The ``hubplane`` command: ``hubplane serve --hub /hubs/chat=pkg.module:ChatHub``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from . import logs
from .errors import SettingsError
from .runner import (
    EXIT_STARTUP,
    SUPERVISOR_ENV,
    WORKER_ENV,
    HubplaneConfig,
    HubplaneServer,
    WorkerSupervisor,
    listen_sockets,
    reuse_port_supported,
    stop_with_parent,
)
from .settings import SECRETS, Settings, add_arguments, build_settings, env_name, flag

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
        from .web import demo_routes

        app.router.routes.extend(demo_routes())
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
    }
    if settings.forwarded_allow_ips:
        # One list of trusted proxies for uvicorn's X-Forwarded-For/-Proto and for ours.
        allowed = settings.forwarded_allow_ips
        options["forwarded_allow_ips"] = "*" if "*" in allowed else list(allowed)
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
        logs.install(settings.log_level, settings.log_format)
        if settings.workers > 1:
            check_workers(settings)
        # Import the hubs here even for a supervisor, so a bad --hub fails before any worker.
        app = build_app(settings)
    except SettingsError as exc:
        print(f"hubplane: error: {exc}", file=sys.stderr)
        return 2
    if settings.workers > 1:
        return run_workers(args, settings)
    sockets: list[Any] | None = None
    if worker or settings.admin_port is not None:
        # Bound here: the admin listener's port must be known before the app is made.
        try:
            sockets, app = bind_listeners(settings, app, reuse_port=bool(worker))
        except OSError as exc:
            logger.error("%s cannot listen: %s", f"worker {worker}" if worker else "hubplane", exc)
            return EXIT_STARTUP if worker else 1
    config = HubplaneConfig(app, **_uvicorn_options(settings))  # configures uvicorn's logging
    logs.guard_handlers()
    server = HubplaneServer(config, settings.drain_timeout)
    if worker:
        supervisor = os.environ.get(SUPERVISOR_ENV, "")
        stop_with_parent(server, int(supervisor) if supervisor.isdigit() else os.getppid())
    if sockets is not None:
        logger.info(
            "%s (pid %d) serving on %s",
            f"worker {worker}" if worker else "hubplane",
            os.getpid(),
            ", ".join(describe_listener(sock) for sock in sockets),
        )
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:  # a second Ctrl+C forwarded by the supervisor: no traceback
        if worker:
            return 130
        raise
    return 0


def bind_listeners(settings: Settings, app: Any, reuse_port: bool) -> tuple[list[Any], Any]:
    """The listening sockets (``--port``, and ``--admin-port`` if set) and the app serving them.

    With an admin port, the app is :class:`~server.listeners.Listeners`: the hubs on one
    listener, ``/metrics``, the admin API and the dashboard on the other.
    """
    from .listeners import Listeners

    sockets = listen_sockets(settings.host, settings.port, reuse_port)
    if settings.admin_port is None:
        return sockets, app
    try:
        admin = listen_sockets(settings.admin_host, settings.admin_port, reuse_port)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    ports = {sock.getsockname()[1] for sock in admin}
    return [*sockets, *admin], Listeners(app, app.state.hubplane.admin_app(), ports)


def describe_listener(sock: Any) -> str:
    """``http://127.0.0.1:8000`` for a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def check_workers(settings: Settings) -> None:
    """Refuse ``--workers N`` settings that cannot work (Redis is checked by the settings)."""
    if settings.port == 0 or settings.admin_port == 0:
        raise SettingsError(
            "--port 0 and --admin-port 0 cannot be used with --workers > 1: each worker "
            "would listen on a different free port; choose a port"
        )
    if not reuse_port_supported():
        raise SettingsError(
            "--workers > 1 needs SO_REUSEPORT, which this platform lacks; run one process "
            "per port behind a load balancer instead"
        )


def worker_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The command line of a worker and the variables added to its environment.

    The worker gets the supervisor's flags again, but the secrets among them (``SECRETS``)
    travel as ``HUBPLANE_*`` variables: a process's command line is readable by every user
    of the host (``ps``), its environment only by its owner.
    """
    command = [sys.executable, "-m", "server.cli", "serve"]
    env: dict[str, str] = {}
    for name, value in vars(args).items():
        if value is None or name == "workers":
            continue
        if name in SECRETS:
            env[env_name(name)] = str(value)
        elif name == "hubs":
            command += [arg for spec in value for arg in ("--hub", spec)]
        elif name == "filters":
            command += [arg for spec in value for arg in ("--filter", spec)]
        elif isinstance(value, bool):
            command.append(flag(name) if value else "--no-" + flag(name)[2:])
        else:
            command.append(f"{flag(name)}={value}")
    return [*command, "--workers", "1"], env


def run_workers(args: argparse.Namespace, settings: Settings) -> int:
    """Supervise ``settings.workers`` children, each ``hubplane serve ... --workers 1``.

    The workers share one directory of Prometheus multiprocess files (a fresh one unless
    ``PROMETHEUS_MULTIPROC_DIR`` is set), so whichever worker answers ``/metrics`` reports
    the whole process group.
    """
    from prometheus_client import multiprocess

    from .metrics import MULTIPROC_ENV

    command, secrets = worker_command(args)
    env = dict(os.environ)
    env.update(secrets)
    made_dir = None
    if not env.get(MULTIPROC_ENV):
        made_dir = env[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="hubplane-metrics-")
    metrics_dir = env[MULTIPROC_ENV]
    logger.info(
        "serving on http://%s:%d with %d worker processes",
        settings.host,
        settings.port,
        settings.workers,
    )
    try:
        return WorkerSupervisor(
            command,
            settings.workers,
            env,
            # Each worker drains within --drain-timeout; the supervisor waits a little longer.
            shutdown_timeout=settings.drain_timeout + 5.0,
            on_exit=lambda pid: multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                pid, metrics_dir
            ),
        ).run()
    finally:
        if made_dir is not None:
            shutil.rmtree(made_dir, ignore_errors=True)


def healthcheck(argv: Sequence[str]) -> int:
    """Run ``hubplane healthcheck``: 0 when this host's server answers ``/healthz``, else 1.

    For container health checks (the image has no curl): the port comes from ``--port`` or
    ``HUBPLANE_PORT``, as for ``hubplane serve``.
    """
    import urllib.error
    import urllib.request

    parser = argparse.ArgumentParser(
        prog="hubplane healthcheck",
        description="Exit 0 when the local server answers GET /healthz with 200, else 1.",
    )
    parser.add_argument("--port", type=int, default=None, help="default: HUBPLANE_PORT or 8000")
    parser.add_argument("--path", default="/healthz", help="default: /healthz (or /readyz)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args(list(argv))
    port = args.port
    if port is None:
        try:
            port = int(os.environ.get("HUBPLANE_PORT") or 8000)
        except ValueError:
            print("hubplane healthcheck: HUBPLANE_PORT is not a number", file=sys.stderr)
            return 2
    url = f"http://127.0.0.1:{port}{args.path}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=args.timeout) as response:
            ok = response.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"hubplane healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


COMMANDS = {"serve": serve, "healthcheck": healthcheck}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hubplane`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="hubplane", description="A SignalR hub server.")
    parser.add_argument(
        "command",
        choices=sorted(COMMANDS),
        help="serve: run the server; healthcheck: check a local server's /healthz",
    )
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    run = COMMANDS.get(command)
    if run is not None:
        return run(rest)
    parser.error(f"unknown command {command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
