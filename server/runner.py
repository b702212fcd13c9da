"""Running the app on uvicorn: one process, or a supervisor with N worker processes.

With ``--workers N`` the parent process only supervises: it starts N children that each run
the ordinary single-process path (their own event loop, app and backplane connection) on a
socket bound with ``SO_REUSEPORT`` to the same host and port, so the kernel spreads new
connections over them. The parent forwards SIGTERM/SIGINT, restarts a child that dies
unexpectedly (with a backoff and a bound per minute), and exits non-zero when it cannot
keep them running.
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any

import uvicorn

from .proxies import RawPeer

logger = logging.getLogger("hubplane.runner")

#: Set by the supervisor in each child's environment: ``"k/N"`` (this is worker k of N).
WORKER_ENV = "HUBPLANE_INTERNAL_WORKER"
#: Set next to it: the supervisor's pid (a worker stops when its parent is another process).
SUPERVISOR_ENV = "HUBPLANE_INTERNAL_SUPERVISOR"

#: The exit code of a child whose settings are wrong: restarting cannot help.
EXIT_SETTINGS = 2
#: The exit code of a child that could not start (uvicorn uses it for a failed lifespan).
EXIT_STARTUP = 3


def find_hubplane(app: Any) -> Any:
    """The ``Hubplane`` state object of an app made by ``create_app`` (or None)."""
    state = getattr(app, "state", None)
    return getattr(state, "hubplane", None) if state is not None else None


class HubplaneConfig(uvicorn.Config):
    """uvicorn's settings; the app it loads notes the TCP peer of every request first.

    uvicorn's proxy headers replace a trusted proxy's address by the client's; the checks of
    ``--forwarded-allow-ips`` need the proxy's (``proxies.py``).
    """

    def load(self) -> None:
        super().load()
        self.loaded_app = RawPeer(self.loaded_app)


class HubplaneServer(uvicorn.Server):
    """A uvicorn server that drains before the process stops.

    On SIGTERM (or Ctrl+C) readiness turns false at once and the server stops listening, so
    clients that reconnect now reach other nodes through the balancer. Every hub client gets a
    SignalR Close with ``allowReconnect`` once the invocations it already sent have answered
    (uvicorn would otherwise close WebSockets with code 1012, and the clients would never see
    a Close message); a client using stateful reconnect instead loses its socket without a
    Close and resumes its connection on another node, which takes it over from this one
    (``handover.py``). Then the lifespan shutdown flushes the Redis queue and leaves presence.
    Whatever still runs when ``drain_timeout`` seconds have passed since the signal is cut
    short: the process
    exits by then.
    """

    def __init__(self, config: uvicorn.Config, drain_timeout: float = 30.0) -> None:
        super().__init__(config)
        self.drain_timeout = drain_timeout
        self.drain_started: float | None = None
        # Connections get most of the time; uvicorn's own wait and the lifespan the rest.
        config.timeout_graceful_shutdown = max(1, int(drain_timeout * 0.2))

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Whatever is alive once the server listens (modules, the app, its hubs) lives as
        # long as the process: out of the collector's sight, a full collection walks only
        # what connections made since (at startup that is about 55,000 objects, which a
        # full collection took 55 ms to walk, a pause every client saw).
        gc.collect()
        gc.freeze()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_started is None:
            self.drain_started = time.monotonic()
            hubplane = find_hubplane(self.config.app)
            if hubplane is not None:
                hubplane.draining = True  # /readyz answers 503 from now on
            threading.Thread(
                target=self._exit_by_deadline, name="hubplane-drain-deadline", daemon=True
            ).start()
        super().handle_exit(sig, frame)

    def _exit_by_deadline(self) -> None:
        assert self.drain_started is not None
        time.sleep(max(0.0, self.drain_started + self.drain_timeout - time.monotonic()))
        logger.error("the drain took longer than %.0f s: exiting now", self.drain_timeout)
        logging.shutdown()
        os._exit(1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        hubplane = find_hubplane(self.config.app)
        # Stop listening first: a client reconnecting now (a stateful one resuming, a plain
        # one after its Close) is refused here, and the balancer takes it to another node.
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        if hubplane is not None:
            started = self.drain_started or time.monotonic()
            left = started + self.drain_timeout - time.monotonic()
            try:
                await hubplane.drain(max(0.5, left * 0.6))
            except Exception:
                logger.exception("closing hub connections failed")
        await super().shutdown(sockets)


# --------------------------------------------------------------------------- worker side


def reuse_port_supported() -> bool:
    """True where several processes can listen on one port (``SO_REUSEPORT``)."""
    return hasattr(socket, "SO_REUSEPORT")


def listen_sockets(host: str, port: int, reuse_port: bool = True) -> list[socket.socket]:
    """TCP sockets bound to ``host:port``, with ``SO_REUSEPORT`` for workers (uvicorn calls
    listen).

    Like uvicorn's own binding, a name such as ``localhost`` gets one socket per address it
    resolves to, and an empty host means every interface.
    """
    infos = socket.getaddrinfo(
        host or None,
        port,
        type=socket.SOCK_STREAM,
        proto=socket.IPPROTO_TCP,
        flags=socket.AI_PASSIVE,
    )
    sockets: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                # the IPv4 address of the same name has its own socket
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def stop_with_parent(
    server: uvicorn.Server, parent: int, interval: float = 1.0
) -> threading.Thread:
    """Stop ``server`` gracefully once ``parent`` (the supervisor) is no longer its parent.

    Workers live in their own process group (so a terminal's Ctrl+C reaches only the
    supervisor, which forwards it once); if the supervisor is killed outright, nobody
    would stop them, so each one watches its parent. The supervisor's pid comes from the
    environment: the supervisor may already be gone when this is called.
    """

    def watch() -> None:
        while not server.should_exit:
            if os.getppid() != parent:
                logger.warning("the supervisor (pid %d) is gone: stopping", parent)
                server.should_exit = True
                return
            time.sleep(interval)

    thread = threading.Thread(target=watch, name="hubplane-parent-watch", daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------- supervisor side


class _Worker:
    """One worker slot: the current process and the history of its restarts."""

    __slots__ = ("index", "proc", "started_at", "restarts", "next_start")

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.restarts: collections.deque[float] = collections.deque()
        self.next_start = 0.0


def describe_exit(code: int) -> str:
    """``"exit code 1"`` or ``"signal SIGKILL"``."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class WorkerSupervisor:
    """Starts ``workers`` copies of ``command`` and keeps them running until told to stop.

    Needs no event loop: it polls its children a few times a second. ``run()`` returns the
    process exit code: 0 after a requested stop, 1 when the workers could not be kept up.
    """

    def __init__(
        self,
        command: Sequence[str],
        workers: int,
        env: Mapping[str, str] | None = None,
        *,
        shutdown_timeout: float = 20.0,
        max_restarts: int = 5,
        restart_window: float = 60.0,
        startup_grace: float = 10.0,
        poll_interval: float = 0.1,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        self.command = list(command)
        # Called with the pid of each worker that ended (its live metrics are dropped).
        self.on_exit = on_exit
        self.env = dict(os.environ if env is None else env)
        self.workers = [_Worker(i) for i in range(1, workers + 1)]
        self.shutdown_timeout = shutdown_timeout
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.startup_grace = startup_grace
        self.poll_interval = poll_interval
        self._signals: list[int] = []
        self._failed = False

    # signals are only recorded here; the loop acts on them (Popen is not reentrant)
    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self._signals.append(sig)

    def pids(self) -> list[int]:
        """The pids of the live workers."""
        return [w.proc.pid for w in self.workers if w.proc is not None and w.proc.poll() is None]

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT (returns 0) or until a worker cannot be kept up (1)."""
        handled = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            logger.info("supervisor (pid %d) starting %d workers", os.getpid(), len(self.workers))
            for worker in self.workers:
                self._start(worker)
            while not self._signals and not self._failed:
                self._check()
                time.sleep(self.poll_interval)
            if self._signals:
                sig = signal.Signals(self._signals[0])
                logger.info("%s received: stopping %d workers", sig.name, len(self.pids()))
            self._stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 1 if self._failed else 0

    def _start(self, worker: _Worker) -> None:
        env = dict(self.env)
        env[WORKER_ENV] = f"{worker.index}/{len(self.workers)}"
        env[SUPERVISOR_ENV] = str(os.getpid())
        # Own process group: a terminal's Ctrl+C reaches the supervisor only, which then
        # forwards one signal; two SIGINTs would make uvicorn skip the graceful drain.
        worker.proc = subprocess.Popen(self.command, env=env, process_group=0)
        worker.started_at = time.monotonic()
        logger.info("worker %d started (pid %d)", worker.index, worker.proc.pid)

    def _check(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.proc is None:
                if now >= worker.next_start:
                    self._start(worker)
                continue
            code = worker.proc.poll()
            if code is None:
                continue
            self._on_exit(worker, code, now)
            if self._failed:
                return

    def _on_exit(self, worker: _Worker, code: int, now: float) -> None:
        assert worker.proc is not None
        pid, uptime = worker.proc.pid, now - worker.started_at
        worker.proc = None
        self._ended(pid)
        how = describe_exit(code)
        if code == EXIT_SETTINGS or (
            code == EXIT_STARTUP and not worker.restarts and uptime < self.startup_grace
        ):
            logger.error("worker %d (pid %d) could not start (%s)", worker.index, pid, how)
            self._failed = True
            return
        while worker.restarts and now - worker.restarts[0] > self.restart_window:
            worker.restarts.popleft()
        if len(worker.restarts) >= self.max_restarts:
            logger.error(
                "worker %d (pid %d) ended (%s) after %d restarts within %.0f s: giving up",
                worker.index,
                pid,
                how,
                len(worker.restarts),
                self.restart_window,
            )
            self._failed = True
            return
        delay = min(0.5 * 2 ** len(worker.restarts), 10.0)
        worker.restarts.append(now)
        worker.next_start = now + delay
        logger.warning(
            "worker %d (pid %d) ended unexpectedly (%s after %.1f s): restarting in %.1f s",
            worker.index,
            pid,
            how,
            uptime,
            delay,
        )

    def _stop_all(self) -> None:
        """Forward the stop signal, wait (bounded) for a graceful exit, then SIGKILL."""
        # The first signal goes out as SIGTERM whatever it was (uvicorn drains the same way
        # for both, and a SIGINT would end the worker with a KeyboardInterrupt traceback);
        # later ones as they came, so a second Ctrl+C makes uvicorn skip the wait.
        for worker in self.workers:
            self._send(worker, signal.SIGTERM)
        forwarded = 1
        deadline = time.monotonic() + self.shutdown_timeout
        while time.monotonic() < deadline:
            for sig in self._signals[forwarded:]:
                for worker in self.workers:
                    self._send(worker, sig)
            forwarded = max(forwarded, len(self._signals))
            if not self.pids():
                break
            time.sleep(self.poll_interval)
        for worker in self.workers:
            if worker.proc is None:
                continue
            if worker.proc.poll() is None:
                logger.error(
                    "worker %d (pid %d) did not stop within %.0f s: killing it",
                    worker.index,
                    worker.proc.pid,
                    self.shutdown_timeout,
                )
                worker.proc.kill()
            try:
                worker.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                logger.error("worker %d (pid %d) survived SIGKILL", worker.index, worker.proc.pid)
            self._ended(worker.proc.pid)
        logger.info("all workers stopped")

    def _ended(self, pid: int) -> None:
        if self.on_exit is not None:
            try:
                self.on_exit(pid)
            except Exception:
                logger.exception("cleaning up after worker pid %d failed", pid)

    @staticmethod
    def _send(worker: _Worker, sig: int) -> None:
        if worker.proc is not None and worker.proc.poll() is None:
            try:
                worker.proc.send_signal(sig)
            except ProcessLookupError:
                pass
