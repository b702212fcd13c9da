"""``--log-format json``: every line a node writes during a short run is one JSON object."""

from __future__ import annotations

import json
import re
import urllib.request
from datetime import datetime
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.conftest import LOOPBACK

pytestmark = pytest.mark.e2e

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
SECRET = "very-secret-access-token"


def post(url: str) -> int:
    request = urllib.request.Request(url, data=b"", method="POST")
    with _OPENER.open(request, timeout=5) as response:
        return int(response.status)


def test_every_line_is_a_json_object(redis_server: Any, hubplane_server: Any) -> None:
    node = hubplane_server(
        {},
        ready_path="/hubs/demo",
        # debug: uvicorn's access log is on too, and the Redis client's records come through
        extra_args=["--log-format", "json", "--log-level", "debug"],
        env={"REDIS_URL": redis_server.url, "HUBPLANE_CHANNEL_PREFIX": "jsonlogs:"},
    )
    # an access log line carrying a token, and a connection's record (a refused handshake)
    assert post(f"{node.url}/hubs/demo/negotiate?negotiateVersion=1&access_token={SECRET}") == 200
    with connect(f"ws://{LOOPBACK}:{node.port}/hubs/demo?access_token={SECRET}") as ws:
        ws.send(json.dumps({"protocol": "no-such-protocol", "version": 1}) + "\x1e")
        assert "error" in str(ws.recv(timeout=5))
    assert node.stop() in (0, -15)  # uvicorn ends by the SIGTERM it handled

    lines = [
        line
        for line in node.logs().splitlines()
        # the test harness's own marker before each start
        if line.strip() and not line.startswith("===== start")
    ]
    assert len(lines) >= 8, lines
    entries = []
    for line in lines:
        entry = json.loads(line)  # fails on any line that is not JSON
        assert isinstance(entry, dict), line
        assert {"time", "level", "logger", "message", "node"} <= set(entry), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", entry["time"]), line
        datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
        assert entry["level"] in ("debug", "info", "warning", "error", "critical"), line
        assert set(entry) <= {
            "time",
            "level",
            "logger",
            "message",
            "node",
            "hub",
            "connection_id",
            "exception",
            "stack",
        }, line
        entries.append(entry)
    assert SECRET not in "\n".join(lines)
    loggers = {e["logger"] for e in entries}
    assert {"uvicorn.error", "uvicorn.access", "hubplane.server"} <= loggers, loggers
    access = [e for e in entries if e["logger"] == "uvicorn.access"]
    assert any("access_token=***" in e["message"] for e in access), access
    refused = [e for e in entries if "handshake failed" in e["message"]]
    assert refused and refused[0]["hub"] == "DemoHub" and refused[0]["connection_id"], refused
    assert len({e["node"] for e in entries}) == 1
