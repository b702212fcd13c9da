"""Nodes reach Redis over TLS (rediss://) and through Sentinel (redis+sentinel://)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LOOPBACK, get_free_port, wait_for_port
from tests.lifetime.cluster import Cluster, targets


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server not found: install Redis 7 (apt-get install redis-server)")
    with open(log, "ab") as out:
        return subprocess.Popen(
            [exe, *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server speaking only TLS, with a throwaway certificate for 127.0.0.1."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    port = get_free_port()
    proc = _spawn(
        ["--port", "0", "--tls-port", str(port), "--bind", LOOPBACK, "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
         "--tls-auth-clients", "no"],
        tmp_path / "redis-tls.log",
    )  # fmt: skip
    try:
        assert wait_for_port(port, 10), (tmp_path / "redis-tls.log").read_text()
        yield f"rediss://{LOOPBACK}:{port}/0?ssl_ca_certs={cert}"
    finally:
        _stop(proc)


@pytest.fixture
def sentinel_redis(tmp_path: Path) -> Iterator[str]:
    """A master and one Sentinel watching it; yields the Sentinel URL."""
    master_port, sentinel_port = get_free_port(), get_free_port()
    master = _spawn(
        ["--port", str(master_port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        tmp_path / "master.log",
    )  # fmt: skip
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {sentinel_port}\nbind {LOOPBACK}\ndir {tmp_path}\n"
        f"sentinel monitor hubmaster {LOOPBACK} {master_port} 1\n"
    )
    sentinel = _spawn([str(conf), "--sentinel"], tmp_path / "sentinel.log")
    try:
        assert wait_for_port(master_port, 10) and wait_for_port(sentinel_port, 10)
        yield f"redis+sentinel://{LOOPBACK}:{sentinel_port}/hubmaster/0"
    finally:
        _stop(sentinel)
        _stop(master)


@pytest.fixture
def url_with_options(redis_server: Any) -> str:
    """The session's Redis with options a user may put in the URL: RESP3 (the bus speaks
    RESP2 whatever the URL says) and a read timeout far shorter than the subscriber's idle
    time (it must not cut the subscription)."""
    url: str = redis_server.url
    return url + ("&" if "?" in url else "?") + "protocol=3&socket_timeout=0.5"


@pytest.mark.parametrize("source", ["tls_redis", "sentinel_redis", "url_with_options"])
async def test_two_nodes_share_hubs_through(source: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(source)
    cluster = Cluster(url)
    try:
        h1, h2 = await cluster.add_node(), await cluster.add_node()
        a = await cluster.connect(h1, "a")
        b = await cluster.connect(h2, "b", "messagepack")
        await asyncio.sleep(1.0)  # idle subscribers, longer than a URL's socket_timeout
        await h1.context.groups.add("b", "g")
        started = time.monotonic()
        await h1.context.clients.group("g").send("Over", source)
        await h2.context.clients.all_except(["b"]).send("Back")
        assert targets(await b.wait_messages(1)) == [("Over", [source])]
        assert targets(await a.wait_messages(1)) == [("Back", [])]
        assert time.monotonic() - started < 5
        assert sorted(await h2.context.presence.connections()) == ["a", "b"]
        # Connected all along: no read timed out and no connection was replaced.
        assert [(n.bus.connected, n.bus.stats.reconnects) for n in cluster.nodes] == [
            (True, 0),
            (True, 0),
        ]
    finally:
        await cluster.close()
