"""``hubplane serve --workers N``: a supervisor and N worker processes on one port.

The hub below is served by the worker processes themselves (``--hub
/hubs/workers=tests.e2e.test_workers:WorkersHub``), so it must stay importable without pytest
fixtures. Workers share the port with SO_REUSEPORT: the kernel picks one per new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from backplane import Hub

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
HUBS = {"/hubs/workers": "tests.e2e.test_workers:WorkersHub"}


class WorkersHub(Hub):
    """Tells which process serves the caller, and broadcasts."""

    async def pid(self) -> int:
        return os.getpid()

    async def broadcast(self, text: str) -> None:
        await self.clients.all.send("Msg", text, os.getpid())

    async def join(self, group: str) -> str:
        await self.groups.add(self.context.connection_id, group)
        return self.context.connection_id


# --------------------------------------------------------------------------- helpers

# Worker pids seen by the current test: killed at teardown if a failure left them running.
_WORKER_PIDS: set[int] = set()


@pytest.fixture(autouse=True)
def _no_stray_workers() -> Any:
    yield
    for pid in _WORKER_PIDS:
        try:
            if alive(pid) and b"server.cli" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    _WORKER_PIDS.clear()


def children_of(pid: int) -> set[int]:
    """The pids whose parent is ``pid`` (read from /proc)."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def wait_for(check: Any, timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("HUBPLANE_") and k != "REDIS_URL"
    }
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 30.0, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", *args],
        cwd=REPO_ROOT,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WsClient:
    """A JSON-protocol WebSocket client that remembers the messages pushed to it."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.pushed: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, url: str) -> WsClient:
        from tests.server.util import ws_json_client

        return cls(await ws_json_client(url))

    async def messages(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The messages of the next frame that holds more than pings (bounded by timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"nothing but pings for {timeout}s")
            frame = await asyncio.wait_for(self.ws.recv(), left)
            raw = frame.encode() if isinstance(frame, str) else frame
            msgs = [orjson.loads(part) for part in raw.split(b"\x1e") if part]
            msgs = [m for m in msgs if m.get("type") != 6]
            if msgs:
                return msgs

    async def call(self, target: str, *args: Any) -> Any:
        self.next_id += 1
        invocation = str(self.next_id)
        message = {"type": 1, "invocationId": invocation, "target": target, "arguments": args}
        await self.ws.send(orjson.dumps(message).decode() + "\x1e")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for m in await self.messages(timeout=max(0.01, deadline - time.monotonic())):
                if m.get("type") == 3 and m.get("invocationId") == invocation:
                    assert "error" not in m, m
                    return m.get("result")
                self.pushed.append(m)
        raise AssertionError(f"no completion for {target}")

    async def next_push(self, target: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.pushed):
                if m.get("target") == target:
                    return self.pushed.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {target!r} message within {timeout}s")
            self.pushed.extend(await self.messages(timeout=left))

    async def close_message(self, timeout: float) -> dict[str, Any] | None:
        """Wait for the server's Close message (None when the socket ends without one)."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.pushed:
                if m.get("type") == 7:
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                self.pushed.extend(await self.messages(timeout=left))
            except Exception:  # noqa: BLE001 - closed socket or timeout: no Close came
                return None

    async def close(self) -> None:
        await self.ws.close()


async def clients_on_every_worker(
    server: Any, workers: set[int], per_worker: int = 1, timeout: float = 15.0
) -> dict[int, list[WsClient]]:
    """Open connections until each worker pid serves at least ``per_worker`` of them.

    A worker starts taking connections only once its app has started, so keep trying for a
    while; connections to a worker that already has enough are closed again.
    """
    by_pid: dict[int, list[WsClient]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client = await WsClient.connect(server.ws_url())
        pid = await client.call("pid")
        assert pid in workers, (pid, workers)
        group = by_pid.setdefault(pid, [])
        if len(group) < per_worker:
            group.append(client)
        else:
            await client.close()
            await asyncio.sleep(0.02)
        if set(by_pid) == workers and all(len(c) >= per_worker for c in by_pid.values()):
            return by_pid
    for group in by_pid.values():
        for client in group:
            await client.close()
    raise AssertionError(f"connections never reached every worker in {timeout}s: {list(by_pid)}")


def negotiate(server: Any) -> int:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        server.hub_url() + "/negotiate?negotiateVersion=1", data=b"", method="POST"
    )
    with opener.open(request, timeout=5) as response:
        return int(response.status)


def start_workers(hubplane_server: Any, redis_url: str, workers: int = 2) -> tuple[Any, set[int]]:
    server = hubplane_server(HUBS, extra_args=["--workers", str(workers), "--redis-url", redis_url])
    assert server.proc is not None

    def all_started() -> set[int] | None:
        found = children_of(server.proc.pid)
        _WORKER_PIDS.update(found)
        return found if len(found) == workers else None

    pids = wait_for(all_started, 15)
    assert pids, (
        f"expected {workers} workers under {server.proc.pid}: {children_of(server.proc.pid)}"
    )
    return server, pids


# --------------------------------------------------------------------------- refusals


def test_workers_without_redis_are_refused() -> None:
    result = run_cli("--workers", "2", "--port", str(free_port()))
    assert result.returncode == 2, result
    assert "--workers > 1 needs the Redis backplane" in result.stderr
    assert "REDIS_URL" in result.stderr
    # the same through the environment
    result = run_cli("--port", str(free_port()), HUBPLANE_WORKERS="3")
    assert result.returncode == 2 and "Redis" in result.stderr, result


def test_port_zero_is_refused_with_workers() -> None:
    result = run_cli("--workers", "2", "--port", "0", "--redis-url", "redis://127.0.0.1:1/0")
    assert result.returncode == 2, result
    assert "--port 0" in result.stderr and "--workers" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_hub_is_refused_before_any_worker_starts() -> None:
    result = run_cli(
        "--workers",
        "2",
        "--port",
        str(free_port()),
        "--redis-url",
        "redis://127.0.0.1:1/0",
        "--hub",
        "/hubs/x=tests.e2e.no_such_module:Hub",
    )
    assert result.returncode == 2, result
    assert "no_such_module" in result.stderr
    assert "worker 1 started" not in result.stderr


def test_a_port_taken_by_another_program_ends_the_supervisor(redis_server: Any) -> None:
    # a listener without SO_REUSEPORT: the workers cannot join it
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = run_cli(
            "--workers", "2", "--port", str(port), "--redis-url", redis_server.url, timeout=60
        )
    assert result.returncode == 1, result
    assert time.monotonic() - started < 30
    assert "could not start" in result.stderr
    assert "cannot listen" in result.stderr


def test_the_supervisor_gives_up_on_a_worker_that_keeps_dying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from server.runner import WorkerSupervisor

    crash = [sys.executable, "-c", "import time; time.sleep(0.2); raise SystemExit(1)"]
    supervisor = WorkerSupervisor(crash, 2, max_restarts=2, restart_window=60)
    started = time.monotonic()
    with caplog.at_level("INFO", logger="hubplane.runner"):
        assert supervisor.run() == 1
    # two restarts with a backoff of 0.5 s then 1 s, then it gives up
    assert 1.5 <= time.monotonic() - started < 15
    assert "restarting in 0.5 s" in caplog.text and "restarting in 1.0 s" in caplog.text
    assert "after 2 restarts within 60 s: giving up" in caplog.text
    assert supervisor.pids() == []


def test_the_supervisor_does_not_restart_a_worker_with_bad_settings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from server.runner import WorkerSupervisor

    commands = [
        [sys.executable, "-c", "raise SystemExit(2)"],  # settings refused
        [sys.executable, "-c", "raise SystemExit(3)"],  # could not start (first run)
    ]
    for command in commands:
        caplog.clear()
        started = time.monotonic()
        with caplog.at_level("INFO", logger="hubplane.runner"):
            assert WorkerSupervisor(command, 2).run() == 1
        assert time.monotonic() - started < 10
        assert "could not start" in caplog.text
        assert "restarting" not in caplog.text


# --------------------------------------------------------------------------- running


async def test_two_workers_serve_one_port_and_stop_on_sigterm(
    hubplane_server: Any, redis_server: Any
) -> None:
    server, pids = start_workers(hubplane_server, redis_server.url)
    for _ in range(30):
        assert negotiate(server) == 200
    # both workers take connections on the one port
    by_pid = await clients_on_every_worker(server, pids)
    clients = [c for group in by_pid.values() for c in group]
    # graceful drain: SIGTERM to the supervisor reaches every worker, and each tells its
    # clients they may reconnect (elsewhere) before it stops
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    for client in clients:
        close = await client.close_message(timeout=15)
        assert close is not None and close.get("allowReconnect") is True, close
    code = await asyncio.to_thread(server.proc.wait, 20)
    assert time.monotonic() - started < 20
    assert code == 0, server.logs()
    assert wait_for(lambda: not any(alive(p) for p in pids), 5)
    logs = server.logs()
    assert "SIGTERM received: stopping 2 workers" in logs
    assert "all workers stopped" in logs


def test_a_dead_worker_is_restarted(hubplane_server: Any, redis_server: Any) -> None:
    server, pids = start_workers(hubplane_server, redis_server.url)
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    survivors = pids - {victim}

    def replaced() -> set[int] | None:
        now = children_of(server.proc.pid)
        _WORKER_PIDS.update(now)
        return now if len(now) == 2 and victim not in now and survivors <= now else None

    now = wait_for(replaced, 15)
    assert now, (pids, children_of(server.proc.pid), server.logs())
    assert server.alive
    # the new worker serves too
    for _ in range(10):
        assert negotiate(server) == 200
    assert "ended unexpectedly (signal SIGKILL" in server.logs()
    assert server.stop(timeout=20) == 0
    assert wait_for(lambda: not any(alive(p) for p in now), 5)


def test_workers_stop_when_the_supervisor_is_killed(
    hubplane_server: Any, redis_server: Any
) -> None:
    server, pids = start_workers(hubplane_server, redis_server.url)
    server.kill()
    # nobody forwards a signal now: each worker notices its parent is gone and drains
    assert wait_for(lambda: not any(alive(p) for p in pids), 15), server.logs()
    assert "supervisor" in server.logs() and "is gone" in server.logs()


# --------------------------------------------------------------------------- cluster


async def test_a_broadcast_reaches_clients_on_every_worker(
    hubplane_server: Any, redis_server: Any
) -> None:
    """Needs the Redis backplane: a send on one worker reaches the clients of the others."""
    server, pids = start_workers(hubplane_server, redis_server.url)
    by_pid = await clients_on_every_worker(server, pids, per_worker=2)
    clients = [c for group in by_pid.values() for c in group]
    try:
        for sender_pid, group in by_pid.items():
            text = f"hello from {sender_pid}"
            await group[0].call("broadcast", text)
            for client in clients:
                message = await client.next_push("Msg")
                assert message["arguments"] == [text, sender_pid], message
    finally:
        for client in clients:
            await client.close()


async def test_the_admin_api_answers_for_every_worker(
    hubplane_server: Any, redis_server: Any
) -> None:
    """Whichever worker answers, the admin API sees the connections of all of them."""
    import httpx

    token = "workers-admin-token"
    server = hubplane_server(
        HUBS,
        extra_args=["--workers", "2", "--redis-url", redis_server.url, "--admin-token", token],
        # a private prefix: other tests' nodes in the same Redis must not show up here
        env={"HUBPLANE_CHANNEL_PREFIX": f"admin-{server_tag()}:"},
    )

    def all_started() -> set[int] | None:
        found = children_of(server.proc.pid)
        _WORKER_PIDS.update(found)
        return found if len(found) == 2 else None

    pids = wait_for(all_started, 15)
    assert pids
    by_pid = await clients_on_every_worker(server, pids)
    clients = [c for group in by_pid.values() for c in group]
    try:
        ids = sorted([await c.call("join", "everyone") for c in clients])
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, trust_env=False) as http:
            assert (
                await http.get("/_hubplane/hubs", headers={"Authorization": "x"})
            ).status_code == 401

            async def settled() -> bool:
                # ask several times: new connections land on either worker
                for _ in range(4):
                    nodes = (await http.get("/_hubplane/nodes")).json()["nodes"]
                    members = (await http.get("/_hubplane/groups/everyone")).json()["connections"]
                    listed = (await http.get("/_hubplane/connections")).json()["connections"]
                    if len(nodes) != 2 or sorted(members) != ids or sorted(listed) != ids:
                        return False
                return True

            deadline = time.monotonic() + 10
            while not await settled():
                assert time.monotonic() < deadline, (await http.get("/_hubplane/nodes")).text
                await asyncio.sleep(0.1)
            nodes = (await http.get("/_hubplane/nodes")).json()["nodes"]
            assert sorted(n["connections"] for n in nodes) == sorted(
                len(group) for group in by_pid.values()
            )
            hubs = (await http.get("/_hubplane/hubs")).json()["hubs"]
            assert hubs == [{"path": "/hubs/workers", "connections": len(ids)}]
    finally:
        for client in clients:
            await client.close()


def server_tag() -> str:
    return f"{os.getpid()}-{time.monotonic_ns()}"


async def test_metrics_add_up_every_worker(hubplane_server: Any, redis_server: Any) -> None:
    """Whichever worker answers ``/metrics``, it reports the connections of all of them."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    server, pids = start_workers(hubplane_server, redis_server.url)
    by_pid = await clients_on_every_worker(server, pids, per_worker=2)
    clients = [c for group in by_pid.values() for c in group]
    calls = 0
    for client in clients:
        await client.call("pid")
        calls += 1

    def sample(body: str, name: str) -> float:
        return sum(
            s.value
            for family in text_string_to_metric_families(body)
            for s in family.samples
            if s.name == name
        )

    try:
        async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
            # a fresh TCP connection per scrape: the kernel picks a worker each time
            bodies = []
            deadline = time.monotonic() + 10
            while len(bodies) < 8 and time.monotonic() < deadline:
                response = await http.get("/metrics", headers={"Connection": "close"})
                assert response.status_code == 200
                body = response.text
                # each worker copies its numbers every second: wait for a whole picture
                if sample(body, "hubplane_connections") == len(clients):
                    bodies.append(body)
                else:
                    await asyncio.sleep(0.2)
            assert len(bodies) == 8, "the workers' connections never added up"
            for body in bodies:
                assert sample(body, "hubplane_connections") == len(clients)
                # one pid call in clients_on_every_worker and one above, per client
                assert sample(body, "hubplane_invocations_total") >= 2 * len(clients)
                assert sample(body, "hubplane_invocation_duration_seconds_count") >= 2 * len(
                    clients
                )
                assert sample(body, "hubplane_ready") == 1
        # a worker that ends takes its connections out of the sum
        victim = min(by_pid)
        os.kill(victim, signal.SIGKILL)
        left = sum(len(g) for pid, g in by_pid.items() if pid != victim)
        async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:

            async def live_sum() -> float:
                response = await http.get("/metrics", headers={"Connection": "close"})
                return sample(response.text, "hubplane_connections")

            deadline = time.monotonic() + 15
            total = await live_sum()
            while total != left and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                total = await live_sum()
            assert total == left, (total, left)
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
    assert server.stop(timeout=20) == 0


def test_secrets_reach_the_workers_by_environment_not_command_line(
    hubplane_server: Any, redis_server: Any
) -> None:
    """A command line is readable by every user of the host; secrets stay off the workers'."""
    import httpx

    secrets = {
        "--admin-token": "admin-" + "a" * 20,
        "--token-secret": "token-" + "t" * 20,
        "--rest-access-key": "rest-" + "r" * 32,
        "--jwt-secret": "jwt-" + "j" * 32,
    }
    admin_port = free_port()
    extra = ["--workers", "2", "--redis-url", redis_server.url, "--admin-port", str(admin_port)]
    for name, value in secrets.items():
        extra += [name, value]
    server = hubplane_server(
        HUBS, extra_args=extra, env={"HUBPLANE_CHANNEL_PREFIX": f"secrets-{server_tag()}:"}
    )

    def all_started() -> set[int] | None:
        found = children_of(server.proc.pid)
        _WORKER_PIDS.update(found)
        return found if len(found) == 2 else None

    pids = wait_for(all_started, 15)
    assert pids
    for pid in pids:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
        assert "serve" in cmdline and "--workers\x001" in cmdline
        for value in (*secrets.values(), redis_server.url):
            assert value not in cmdline, cmdline
        assert f"HUBPLANE_ADMIN_TOKEN={secrets['--admin-token']}" in environ
        assert f"HUBPLANE_REDIS_URL={redis_server.url}" in environ
    # ... and the workers use them: each connection to the admin listener (which every
    # worker shares, as the main one) answers the admin token.
    headers = {"Authorization": f"Bearer {secrets['--admin-token']}"}
    admin_url = f"http://127.0.0.1:{admin_port}"
    for _ in range(4):  # new connections land on either worker
        with httpx.Client(base_url=admin_url, headers=headers, trust_env=False) as http:
            assert http.get("/_hubplane/hubs").status_code == 200
