"""The dashboard's page and the admin figures it reads; ``--log-format json``'s records."""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

import httpx
import pytest

from server import Settings, create_app
from server.errors import SettingsError
from server.logs import JsonFormatter, ScrubFilter
from server.settings import build_settings, settings_from_cli

from .test_admin import AUTH, TOKEN, Client, Rooms, by_query
from .util import serve_app


def dashboard_app(dashboard: bool = True) -> Any:
    settings = Settings(admin_token=TOKEN, dashboard=dashboard)
    return create_app({"/hubs/rooms": Rooms}, settings=settings, authenticate=by_query)


async def test_the_page_is_static_and_reveals_nothing() -> None:
    async with (
        serve_app(dashboard_app()) as host,
        httpx.AsyncClient(base_url=f"http://{host}") as http,
    ):
        page = await http.get("/_hubplane/dashboard")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert page.headers["referrer-policy"] == "no-referrer"
        assert TOKEN not in page.text and "/hubs/rooms" not in page.text
        assert "<script>" not in page.text  # no inline script: the CSP forbids it
        script = await http.get("/_hubplane/dashboard/dashboard.js")
        assert script.status_code == 200 and "sessionStorage" in script.text
        assert (await http.get("/_hubplane/dashboard/hubplane.css")).status_code == 200
        # everything else under the prefix still needs the token
        assert (await http.get("/_hubplane/dashboard/other")).status_code == 401
        assert (await http.get("/_hubplane/cluster")).status_code == 401
        assert (await http.get("/_hubplane/stats")).status_code == 401


async def test_no_page_without_the_flag() -> None:
    async with (
        serve_app(dashboard_app(False)) as host,
        httpx.AsyncClient(base_url=f"http://{host}") as http,
    ):
        assert (await http.get("/_hubplane/dashboard")).status_code == 401
        assert (await http.get("/_hubplane/dashboard", headers=AUTH)).status_code == 404


def test_the_flag_needs_an_admin_token() -> None:
    with pytest.raises(SettingsError, match="--dashboard needs --admin-token"):
        settings_from_cli(["--dashboard"], environ={})
    settings = settings_from_cli(["--dashboard", "--admin-token", "t"], environ={})
    assert settings.dashboard and settings.admin_token == "t"
    environ = {"HUBPLANE_DASHBOARD": "1", "HUBPLANE_ADMIN_TOKEN": "t"}
    assert build_settings(environ=environ).dashboard


async def test_figures_of_the_node_and_the_cluster() -> None:
    app = dashboard_app()
    stats = app.state.hubplane.node_stats
    async with (
        serve_app(app) as host,
        httpx.AsyncClient(base_url=f"http://{host}", headers=AUTH) as http,
    ):
        base = f"ws://{host}/hubs/rooms"
        a = await Client.connect(base + "?user=ann")
        b = await Client.connect(base + "?user=bob")
        try:
            stats.tick()
            for client in (a, b):
                await client.call("Join", "lobby")
            await a.call("Join", "kitchen")
            stats.tick()
            node = (await http.get("/_hubplane/stats")).json()
            (hub,) = node["hubs"]
            assert hub["path"] == "/hubs/rooms" and hub["connections"] == 2
            assert hub["by_transport"] == [
                {"transport": "WebSockets", "protocol": "json", "connections": 2}
            ]
            assert hub["groups"] == [
                {"group": "lobby", "members": 2},
                {"group": "kitchen", "members": 1},
            ]
            assert hub["messages_in"] >= 3 and hub["messages_out"] >= 3
            assert hub["rate_in"] > 0 and hub["rate_out"] > 0
            assert node["backplane"] == {"mode": "memory", "connected": True}
            assert node["uptime"] >= 0
            nodes = (await http.get("/_hubplane/nodes")).json()["nodes"]
            assert [n["id"] for n in nodes] == [node["node"]]

            cluster = (await http.get("/_hubplane/cluster")).json()
            assert [n["node"] for n in cluster["nodes"]] == [node["node"]]
            assert cluster["missing"] == []
            (total,) = cluster["hubs"]
            assert total["connections"] == 2 and total["groups"][0] == {
                "group": "lobby",
                "members": 2,
            }
        finally:
            await a.close()
            await b.close()


def test_cluster_totals_add_up_the_nodes() -> None:
    from server.nodestats import totals

    def node(connections: int, groups: dict[str, int], rate: float) -> dict[str, Any]:
        return {
            "hubs": [
                {
                    "path": "/h",
                    "connections": connections,
                    "by_transport": [
                        {"transport": "WebSockets", "protocol": "json", "connections": connections}
                    ],
                    "messages_in": 10,
                    "messages_out": 20,
                    "rate_in": rate,
                    "rate_out": 2 * rate,
                    "groups": [{"group": g, "members": n} for g, n in groups.items()],
                }
            ]
        }

    (hub,) = totals([node(3, {"a": 2, "b": 1}, 1.5), node(2, {"a": 1, "c": 2}, 0.25)])
    assert hub["connections"] == 5 and hub["messages_in"] == 20 and hub["messages_out"] == 40
    assert hub["rate_in"] == 1.75 and hub["rate_out"] == 3.5
    assert hub["by_transport"] == [
        {"transport": "WebSockets", "protocol": "json", "connections": 5}
    ]
    assert hub["groups"] == [
        {"group": "a", "members": 3},
        {"group": "c", "members": 2},
        {"group": "b", "members": 1},
    ]


# --------------------------------------------------------------------------- JSON logs


def format_json(logger: str, msg: str, *args: Any, exc: bool = False, **extra: Any) -> Any:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom access_token=SECRET1")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord(logger, logging.WARNING, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extra)
    assert ScrubFilter().filter(record)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    return json.loads(line)


def test_json_records() -> None:
    entry = format_json("hubplane.x", "plain %s", "words")
    assert set(entry) == {"time", "level", "logger", "message", "node"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", entry["time"]), entry["time"]
    assert entry["level"] == "warning" and entry["logger"] == "hubplane.x"
    assert entry["message"] == "plain words" and entry["node"]

    entry = format_json("backplane", "%s: client timeout", "hub ChatHub connection AbC-1_x")
    assert entry["hub"] == "ChatHub" and entry["connection_id"] == "AbC-1_x"
    entry = format_json("x", "a line", hub="H", connection_id="c1")
    assert (entry["hub"], entry["connection_id"]) == ("H", "c1")

    entry = format_json(
        "uvicorn.access", '%s - "%s %s"', "1.2.3.4", "GET", "/h?access_token=SECRET2"
    )
    assert "SECRET2" not in entry["message"] and "access_token=***" in entry["message"]
    entry = format_json("x", "failed", exc=True)
    assert "ValueError" in entry["exception"] and "SECRET1" not in entry["exception"]
    assert "Traceback" in entry["exception"]


def test_log_format_setting() -> None:
    assert Settings().log_format == "text"
    assert settings_from_cli(["--log-format", "JSON"], environ={}).log_format == "json"
    assert build_settings(environ={"HUBPLANE_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(SettingsError, match="--log-format"):
        settings_from_cli(["--log-format", "xml"], environ={})
