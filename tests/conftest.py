"""Shared fixtures: free ports, a private Redis, a hubplane server process, the Node client.

Everything here listens on or talks to loopback addresses only, and every wait is bounded.

- ``free_port()`` (a fixture returning a function, also importable as ``get_free_port``)
- ``redis_server`` (session): a private ``redis-server`` on a free port, or ``$REDIS_URL``
- ``hubplane_server`` (function) / ``module_hubplane_server`` (module): factories that start
  ``hubplane serve`` as a real subprocess and wait until negotiate answers 200
- ``node_client`` (session): runs JS scenarios with the official ``@microsoft/signalr``
  client through ``tests/node/client.mjs`` and parses the JSON lines it prints
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.redis_cluster import RedisCluster

REPO_ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = REPO_ROOT / "tests" / "node"
NODE_DRIVER = NODE_DIR / "client.mjs"
LOOPBACK = "127.0.0.1"
# Loopback requests must never go through a proxy from the environment.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------- ports


def get_free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float, host: str = LOOPBACK) -> bool:
    """True once ``host:port`` accepts a TCP connection, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@pytest.fixture
def free_port() -> Any:
    """``free_port()`` returns a free loopback TCP port."""
    return get_free_port


def _stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL. Never raises for a dead process."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------------- Redis


class RedisServer:
    """A private redis-server on a loopback port (or an external one given by REDIS_URL)."""

    def __init__(self, workdir: Path, port: int | None = None, external_url: str | None = None):
        self.workdir = workdir
        self.external_url = external_url
        self.port = port or get_free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_path = workdir / f"redis-{self.port}.log"

    @property
    def url(self) -> str:
        return self.external_url or f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def controllable(self) -> bool:
        """False for an external server (REDIS_URL): it cannot be stopped or restarted."""
        return self.external_url is None

    def start(self, timeout: float = 10.0) -> None:
        if not self.controllable:
            raise RuntimeError("an external Redis (REDIS_URL) cannot be started by the tests")
        if self.proc is not None and self.proc.poll() is None:
            return
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server not found: install Redis 7 (apt-get install redis-server)")
        log = open(self._log_path, "ab")
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                LOOPBACK,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited early:\n{self.logs()}")
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING within {timeout}s:\n{self.logs()}")

    def ping(self) -> bool:
        """True when the server answers PING with PONG."""
        host, port = LOOPBACK, self.port
        if self.external_url:
            from urllib.parse import urlparse

            u = urlparse(self.external_url)
            host, port = u.hostname or LOOPBACK, u.port or 6379
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.thaw()  # a frozen server would sit on the SIGTERM until the SIGKILL
            _stop_process(self.proc)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP the server: it keeps its sockets (the kernel even accepts new connections)
        but answers nothing, as a hung or half-open Redis. Always :meth:`thaw` in a finally."""
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError("only a running private redis-server can be frozen")
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT a server stopped by :meth:`freeze` (harmless when it is not frozen)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def logs(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")
        except OSError:
            return ""


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis for the session: private on a free port, or ``$REDIS_URL`` when set."""
    external = os.environ.get("REDIS_URL")
    server = RedisServer(tmp_path_factory.mktemp("redis"), external_url=external or None)
    if server.controllable:
        server.start()
    elif not server.ping():
        pytest.fail(f"REDIS_URL={external} does not answer PING")
    try:
        yield server
    finally:
        if server.controllable:
            server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A private Redis Cluster for the session: three masters, no replicas (see
    ``tests/redis_cluster.py``). Its ``url`` is ``redis+cluster://`` with every node a seed."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"), masters=3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def ha_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A Redis Cluster of one test's own: three masters with a replica each, for the tests
    that kill a master (its replica takes over)."""
    cluster = RedisCluster(tmp_path, masters=3, replicas=1)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


# --------------------------------------------------------------------------- hubplane server


def _launcher() -> list[str]:
    """How to start the server: the venv's ``hubplane`` script, else ``python -m server.cli``."""
    if os.environ.get("HUBPLANE_TEST_LAUNCHER") != "module":
        script = Path(sys.executable).parent / "hubplane"
        if script.exists():
            return [str(script)]
    return [sys.executable, "-m", "server.cli"]


class HubplaneServer:
    """A ``hubplane serve`` subprocess on a loopback port."""

    def __init__(
        self,
        hubs: Mapping[str, str],
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        keepalive_interval: float | None = 1,
        log_dir: Path | None = None,
        ready_timeout: float = 20.0,
        ready_path: str | None = None,
        root: Path | None = None,
    ) -> None:
        """``root``: run the source tree there (another release's) instead of this one."""
        if not hubs and not ready_path:
            raise ValueError("give a hub or a ready_path: the readiness check negotiates there")
        self.hubs = dict(hubs)
        self.ready_path = ready_path or next(iter(self.hubs))
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.port = port or get_free_port()
        self.keepalive_interval = keepalive_interval
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_dir = log_dir or Path(tempfile.mkdtemp(prefix="hubplane-"))
        self._log_path = self._log_dir / f"server-{self.port}.log"
        self.starts = 0
        self.root = root

    # addresses ----------------------------------------------------------------
    @property
    def url(self) -> str:
        """The server origin, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{LOOPBACK}:{self.port}"

    def hub_url(self, path: str | None = None) -> str:
        """``http://127.0.0.1:PORT/hub/path`` (default: the first hub)."""
        return self.url + (path or self.ready_path)

    def ws_url(self, path: str | None = None, query: str = "") -> str:
        base = f"ws://{LOOPBACK}:{self.port}" + (path or self.ready_path)
        return base + (("?" + query) if query else "")

    # lifecycle ----------------------------------------------------------------
    def command(self) -> list[str]:
        # Another tree runs as a module from its own directory, which Python puts first.
        launcher = [sys.executable, "-m", "server.cli"] if self.root else _launcher()
        cmd = launcher + ["serve"]
        for path, target in self.hubs.items():
            cmd += ["--hub", f"{path}={target}"]
        cmd += ["--host", LOOPBACK, "--port", str(self.port)]
        if self.keepalive_interval is not None:
            cmd += ["--keepalive-interval", str(self.keepalive_interval)]
        return cmd + self.extra_args

    def start(self) -> HubplaneServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        # settings come only from the test: no HUBPLANE_* or REDIS_URL from the outer shell
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("HUBPLANE_") and k != "REDIS_URL"
        }
        env.update(self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        log = open(self._log_path, "ab")
        log.write(f"\n===== start #{self.starts + 1}: {' '.join(self.command())}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.root or REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.starts += 1
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_timeout
        negotiate = self.hub_url(self.ready_path) + "/negotiate?negotiateVersion=1"
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"hubplane exited with code {self.proc.returncode} before it was ready\n"
                    f"command: {' '.join(self.command())}\n--- server log ---\n{self.logs()}"
                )
            try:
                req = urllib.request.Request(negotiate, data=b"", method="POST")
                with _NO_PROXY_OPENER.open(req, timeout=1.0) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
            except (OSError, urllib.error.URLError) as e:
                last = repr(e)
            time.sleep(0.05)
        raise RuntimeError(
            f"hubplane not ready after {self.ready_timeout}s ({last})\n"
            f"command: {' '.join(self.command())}\n--- server log ---\n{self.logs()}"
        )

    def stop(self, timeout: float = 5.0) -> int | None:
        """Graceful stop (SIGTERM, then SIGKILL after ``timeout``); returns the exit code."""
        if self.proc is None:
            return None
        _stop_process(self.proc, timeout)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: the process dies without closing its sockets cleanly."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def restart(self, graceful: bool = True) -> HubplaneServer:
        """Stop (or kill) and start again on the same port."""
        if graceful:
            self.stop()
        else:
            self.kill()
        # the port may linger for a moment; the readiness wait covers the retry
        return self.start()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")
        except OSError:
            return ""


# Servers started by the factories and not yet stopped (their logs go into failure reports).
_LIVE_SERVERS: list[HubplaneServer] = []


class ServerFactory:
    """Starts servers and stops every one of them at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.servers: list[HubplaneServer] = []

    def __call__(
        self,
        hubs: Mapping[str, str],
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> HubplaneServer:
        for attempt in range(3):
            server = HubplaneServer(hubs, extra_args, env, log_dir=self.log_dir, **kwargs)
            self.servers.append(server)
            _LIVE_SERVERS.append(server)
            try:
                return server.start()
            except RuntimeError:
                # another process may have taken the free port in the meantime: try a new one
                lost_port = "address already in use" in server.logs().lower()
                if "port" in kwargs or not lost_port or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        for server in self.servers:
            try:
                server.stop()
            except Exception:  # noqa: BLE001 - teardown must stop the others too
                server.kill()
            finally:
                if server in _LIVE_SERVERS:
                    _LIVE_SERVERS.remove(server)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """Attach the log tail of every running hubplane server to a failing test's report."""
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    if rep.failed and rep.when in ("setup", "call"):
        for server in list(_LIVE_SERVERS):
            tail = "\n".join(server.logs().splitlines()[-60:])
            rep.sections.append((f"hubplane log, port {server.port} (last lines)", tail))


@pytest.fixture
def hubplane_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Factory: ``hubplane_server({"/hubs/x": "tests.e2e.hubs:XHub"}, extra_args=[...])``."""
    factory = ServerFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def module_hubplane_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerFactory]:
    """Like ``hubplane_server`` but the servers live for the whole test module."""
    factory = ServerFactory(tmp_path_factory.mktemp("hubplane"))
    try:
        yield factory
    finally:
        factory.close()


# --------------------------------------------------------------------------- Node client


class _Undefined:
    """JS ``undefined`` as reported by the driver (distinct from ``null`` / None)."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        # conftest may be imported twice under two names: compare by kind, not identity
        return type(other).__name__ == "_Undefined"

    def __hash__(self) -> int:
        return hash("_Undefined")


UNDEFINED = _Undefined()


def _decode_special(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if obj.get("$undefined") is True:
            return UNDEFINED
        if "$bytes" in obj:
            return bytes.fromhex(obj["$bytes"])
    return obj


def _parse_line(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line, object_hook=_decode_special)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class ScenarioResult:
    """What one JS scenario logged, and how it ended."""

    def __init__(self, name: str, run: NodeRun) -> None:
        self.name = name
        self.run = run
        self.logs: list[dict[str, Any]] = []
        self.status: str | None = None  # "ok" | "error" | None (never finished)
        self.error: str | None = None
        self.stack: str | None = None
        self.ms: int | None = None

    def values(self, tag: str) -> list[Any]:
        """Every value logged with ``log(tag, value)``, in order."""
        return [e.get("value") for e in self.logs if e.get("tag") == tag]

    def value(self, tag: str) -> Any:
        """The one value logged under ``tag`` (fails unless exactly one)."""
        vals = self.values(tag)
        assert len(vals) == 1, f"expected one {tag!r} log, got {vals!r}\n{self.describe()}"
        return vals[0]

    def tags(self) -> list[str]:
        return [e["tag"] for e in self.logs if "tag" in e]

    def ok(self) -> ScenarioResult:
        """Assert the scenario completed without throwing; returns self for chaining."""
        assert self.status == "ok", f"scenario {self.name!r} did not succeed\n{self.describe()}"
        return self

    def describe(self) -> str:
        lines = [f"status={self.status} error={self.error!r}"]
        if self.stack:
            lines.append(f"stack: {self.stack}")
        lines += [f"log: {json.dumps(e, default=repr)}" for e in self.logs]
        if self.run.exit_status == "timeout":
            lines.append("the node process hit its global timeout")
        stderr_tail = "\n".join(self.run.stderr.splitlines()[-40:])
        if stderr_tail:
            lines.append(f"--- node stderr (tail) ---\n{stderr_tail}")
        return "\n".join(lines)


class NodeRun:
    """The results of one node process: one ScenarioResult per scenario name."""

    def __init__(self) -> None:
        self.scenarios: dict[str, ScenarioResult] = {}
        self.stdout_lines: list[str] = []
        self.stderr = ""
        self.returncode: int | None = None
        self.exit_status: str | None = None  # "done" | "timeout" | None

    def _scenario(self, name: str) -> ScenarioResult:
        if name not in self.scenarios:
            self.scenarios[name] = ScenarioResult(name, self)
        return self.scenarios[name]

    def feed(self, line: str) -> dict[str, Any] | None:
        self.stdout_lines.append(line)
        obj = _parse_line(line)
        if obj is None:
            return None
        name = obj.get("scenario")
        if name is None:
            if obj.get("status") in ("done", "timeout"):
                self.exit_status = obj["status"]
            return obj
        sc = self._scenario(str(name))
        if "status" in obj and "tag" not in obj:
            sc.status = obj["status"]
            sc.error = obj.get("error")
            sc.stack = obj.get("stack")
            sc.ms = obj.get("ms")
        else:
            sc.logs.append(obj)
        return obj

    def __getitem__(self, name: str) -> ScenarioResult:
        return self._scenario(name)


class NodeProcess:
    """A running scenario process whose output can be awaited line by line."""

    def __init__(self, proc: subprocess.Popen[str], run: NodeRun, spec_path: Path) -> None:
        self.proc = proc
        self.run = run
        self._spec_path = spec_path
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: list[str] = []
        self._t_out = threading.Thread(target=self._read_stdout, daemon=True)
        self._t_err = threading.Thread(target=self._read_stderr, daemon=True)
        self._t_out.start()
        self._t_err.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            obj = self.run.feed(line)
            if obj is not None:
                self._events.put(obj)
        self._events.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def expect(self, tag: str, timeout: float = 10.0) -> Any:
        """Wait until the scenario logs ``tag``; returns its value."""
        # already seen?
        for sc in self.run.scenarios.values():
            for e in sc.logs:
                if e.get("tag") == tag and not e.get("_consumed"):
                    e["_consumed"] = True
                    return e.get("value")
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                obj = self._events.get(timeout=left)
            except queue.Empty:
                break
            if obj is None:
                self._events.put(None)
                break
            if obj.get("tag") == tag and not obj.get("_consumed"):
                obj["_consumed"] = True
                return obj.get("value")
        self.run.stderr = "".join(self._stderr)
        details = "\n".join(sc.describe() for sc in self.run.scenarios.values())
        raise AssertionError(f"node scenario did not log {tag!r} within {timeout}s\n{details}")

    def wait(self, timeout: float = 30.0) -> NodeRun:
        """Wait for the process to end (killing it after ``timeout``) and return its results."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._t_out.join(timeout=5)
        self._t_err.join(timeout=5)
        self.run.returncode = self.proc.returncode
        self.run.stderr = "".join(self._stderr)
        self._spec_path.unlink(missing_ok=True)
        return self.run

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(timeout=5)


class NodeClient:
    """Runs JS scenarios with the official client (see tests/node/client.mjs)."""

    #: JS ``undefined`` in logged values (``null`` arrives as None)
    UNDEFINED = UNDEFINED

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.node = shutil.which("node") or "node"

    def _spec(
        self,
        scenarios: Mapping[str, str],
        *,
        url: str,
        protocol: str,
        transport: str,
        params: Mapping[str, Any] | None,
        timeout: float,
        scenario_timeout: float | None,
        log_level: str | None,
    ) -> Path:
        spec = {
            "url": url,
            "protocol": protocol,
            "transport": transport,
            "timeoutMs": int(timeout * 1000),
            "scenarioTimeoutMs": int((scenario_timeout or 0) * 1000),
            "logLevel": log_level or os.environ.get("SIGNALR_LOG_LEVEL", "Warning"),
            "params": dict(params or {}),
            "scenarios": [
                {"name": n, "file": c[len("file:") :]}
                if c.startswith("file:")
                else {"name": n, "code": c}
                for n, c in scenarios.items()
            ],
        }
        fd, path = tempfile.mkstemp(prefix="scenario-", suffix=".json", dir=self.workdir)
        with os.fdopen(fd, "w") as f:
            json.dump(spec, f)
        return Path(path)

    def start(
        self,
        scenarios: str | Mapping[str, str],
        *,
        url: str,
        protocol: str = "json",
        transport: str = "WebSockets",
        params: Mapping[str, Any] | None = None,
        timeout: float = 30.0,
        scenario_timeout: float | None = None,
        log_level: str | None = None,
    ) -> NodeProcess:
        """Start scenarios in a background node process (for tests that interact with it)."""
        if isinstance(scenarios, str):
            scenarios = {"main": scenarios}
        spec = self._spec(
            scenarios,
            url=url,
            protocol=protocol,
            transport=transport,
            params=params,
            timeout=timeout,
            scenario_timeout=scenario_timeout,
            log_level=log_level,
        )
        proc = subprocess.Popen(
            [self.node, str(NODE_DRIVER), "--spec", str(spec)],
            cwd=NODE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        return NodeProcess(proc, NodeRun(), spec)

    def run_many(self, scenarios: Mapping[str, str], **kwargs: Any) -> NodeRun:
        """Run named scenarios one after another in one node process."""
        timeout = float(kwargs.get("timeout", 30.0))
        handle = self.start(scenarios, **kwargs)
        # the driver's own global timeout fires first; this one only guards a stuck node
        return handle.wait(timeout=timeout + 10)

    def run_file(self, path: str | Path, **kwargs: Any) -> ScenarioResult:
        """Run a scenario module (default export: async function); relative to tests/node."""
        return self.run_many({"main": f"file:{path}"}, **kwargs)["main"]

    def run(self, code: str, *, check: bool = True, **kwargs: Any) -> ScenarioResult:
        """Run one scenario; with ``check`` fail the test unless it completed."""
        result = self.run_many({"main": code}, **kwargs)["main"]
        if check:
            result.ok()
        return result


def _ensure_node_modules() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found: install Node.js 18+ (the official SignalR client runs in it)")
    version = subprocess.run(
        [node, "-p", "process.versions.node"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    if not version or int(version.split(".")[0]) < 18:
        pytest.fail(f"node {version or '?'} is too old: install Node.js 18 or newer")
    script = REPO_ROOT / "scripts" / "node-deps.sh"
    res = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    if res.returncode != 0:
        pytest.fail(f"installing tests/node packages failed:\n{res.stdout}\n{res.stderr}")


@pytest.fixture(scope="session")
def node_client(tmp_path_factory: pytest.TempPathFactory) -> NodeClient:
    """Runs JS scenarios with ``@microsoft/signalr``; installs tests/node once per run."""
    _ensure_node_modules()
    return NodeClient(tmp_path_factory.mktemp("node"))
