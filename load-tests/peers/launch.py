"""Starting and stopping the servers under test: the peers, hubplane and a private Redis.

Every server listens on a free 127.0.0.1 port and runs pinned with ``taskset`` to the cores
given (the driver takes the others). ``Server.pids()`` lists the processes whose CPU time and
memory the driver samples.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent
LOAD_TESTS = PEERS_DIR.parent
ROOT = LOAD_TESTS.parent
VENVS = LOAD_TESTS / ".venvs"

# The uvicorn stack every peer runs on, the same as ``hubplane serve`` picks for itself.
UVICORN_FLAGS = [
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--ws",
    "websockets-sansio",
    "--ws-ping-interval",
    "0",
    "--ws-per-message-deflate",
    "false",
    "--no-access-log",
    "--log-level",
    "warning",
]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.args}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} within {timeout} s: {proc.args}")


def _pinned(cpus: str, command: Sequence[str]) -> list[str]:
    if cpus and shutil.which("taskset"):
        return ["taskset", "-c", cpus, *command]
    return list(command)


@dataclass
class Server:
    """One running server process (a node)."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def pids(self) -> list[int]:
        """The process and its children (CPU and memory are summed over them)."""
        pids = [self.proc.pid]
        try:
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                children = (task / "children").read_text().split()
                pids.extend(int(c) for c in children)
        except OSError:
            pass
        return pids

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a few seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# Every server compiles its modules from source, as the container image does (it ships no
# bytecode): a bytecode cache under /dev/null (where none can exist, and nothing is written)
# hides whatever __pycache__ a venv holds. The
# idle memory per connection depends on it: a process that loaded cached bytecode has none
# of the memory compiling freed at start-up to place its first connections in (measured on
# the quick ramp: 26.1 KB per connection with a venv's bytecode, 20.5 KB without).
_NO_BYTECODE = {
    "PYTHONPYCACHEPREFIX": os.devnull,
    "PYTHONDONTWRITEBYTECODE": "1",
}


def _spawn(
    name: str, command: list[str], port: int, cpus: str, env: dict[str, str], cwd: Path, logs: Path
) -> Server:
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            _pinned(cpus, command),
            cwd=cwd,
            env={**os.environ, **_NO_BYTECODE, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(name, port, proc, log)
    try:
        _wait_port(port, proc)
    except Exception:
        server.stop()
        raise
    return server


#: What each peer serves and where its clients go: (adapter family, URL path).
PEERS: dict[str, tuple[str, str]] = {
    "bare": ("raw", ""),
    "aiosignalr": ("signalr", "/hubs/bench"),
    "socketio": ("socketio", "/socket.io/"),
    "hubplane": ("signalr", "/hubs/bench"),
}


def available(peer: str) -> bool:
    """True when the peer's virtual environment is set up."""
    if peer == "hubplane":
        return (ROOT / ".venv" / "bin" / "hubplane").exists()
    return (VENVS / peer / "bin" / "uvicorn").exists()


def start_peer(
    peer: str, cpus: str, logs: Path, redis_url: str | None = None, auth: bool = True
) -> Server:
    """Start one node of ``peer`` on a free port.

    hubplane gets the benchmark's authenticator (``?user=<id>``, for the send-to-user
    scenario) unless ``auth`` is False: the peers have no authentication hook, so the idle
    memory is compared without one (and measured with one beside it).
    """
    port = free_port()
    env: dict[str, str] = {"PYTHONUNBUFFERED": "1"}
    if peer == "hubplane":
        command = [
            str(ROOT / ".venv" / "bin" / "hubplane"),
            "serve",
            "--hub",
            "/hubs/bench=hubplane_hub:BenchHub",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
        if auth:
            command += ["--authenticator", "hubplane_hub:authenticate"]
        if redis_url:
            command += ["--redis-url", redis_url]
        env["HUBPLANE_LOG_LEVEL"] = "warning"
        return _spawn(peer, command, port, cpus, env, PEERS_DIR, logs)
    module = {"bare": "bare_app:app", "aiosignalr": "aiosignalr_app:app"}.get(
        peer, "socketio_app:app"
    )
    command = [str(VENVS / peer / "bin" / "uvicorn"), module, "--app-dir", str(PEERS_DIR)]
    command += ["--host", "127.0.0.1", "--port", str(port), *UVICORN_FLAGS]
    if peer == "aiosignalr":
        command += ["--lifespan", "off"]
    if redis_url:
        env["REDIS_URL"] = redis_url
    return _spawn(peer, command, port, cpus, env, PEERS_DIR, logs)


@dataclass
class Redis:
    """A private redis-server on a free loopback port that keeps nothing on disk."""

    cpus: str
    logs: Path
    server: Server | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-redis-")))

    @property
    def url(self) -> str:
        """redis:// URL of the server."""
        assert self.server is not None
        return f"redis://127.0.0.1:{self.server.port}/0"

    def start(self) -> Redis:
        """Start it (redis-server must be on PATH)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        port = free_port()
        command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.workdir)]
        self.server = _spawn("redis", command, port, self.cpus, {}, self.workdir, self.logs)
        return self

    def stop(self) -> None:
        """Stop it and remove its folder."""
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
