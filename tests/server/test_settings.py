"""Settings from flags, HUBPLANE_* variables and defaults; the CLI's errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.errors import SettingsError
from server.settings import Settings, settings_from_cli

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_match_the_reference_server() -> None:
    s = settings_from_cli([], environ={})
    assert (s.keepalive_interval, s.client_timeout, s.handshake_timeout) == (15.0, 30.0, 15.0)
    assert (s.max_message_size, s.detailed_errors, s.host, s.port) == (
        32768,
        False,
        "127.0.0.1",
        8000,
    )
    assert s.hubs == {} and s.protocols == ("json", "messagepack")


def test_flags_win_over_variables_over_defaults() -> None:
    env = {
        "HUBPLANE_HUBS": "/a=mod:A, /b/=mod:B",
        "HUBPLANE_KEEPALIVE_INTERVAL": "5",
        "HUBPLANE_CLIENT_TIMEOUT": "10",
        "HUBPLANE_DETAILED_ERRORS": "true",
        "HUBPLANE_PORT": "9000",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    s = settings_from_cli(["--keepalive-interval", "2.5", "--no-detailed-errors"], environ=env)
    assert s.hubs == {"/a": "mod:A", "/b": "mod:B"}
    assert s.keepalive_interval == 2.5 and s.client_timeout == 10.0
    assert s.detailed_errors is False and s.port == 9000
    assert s.redis_url == "redis://127.0.0.1:1/0"
    s = settings_from_cli(["--hub", "/x=m:X", "--hub", "/y=m:Y"], environ=env)
    assert s.hubs == {"/x": "m:X", "/y": "m:Y"}


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["--keepalive-interval", "0"], {}, "--keepalive-interval"),
        (["--port", "http"], {}, "port"),
        ([], {"HUBPLANE_CLIENT_TIMEOUT": "soon"}, "HUBPLANE_CLIENT_TIMEOUT"),
        (["--hub", "nopath"], {}, "PATH=module:Class"),
        (["--hub", "/x=nocolon"], {}, "module:Class"),
        (["--log-level", "loud"], {}, "--log-level"),
        (["--protocols", "xml"], {}, "--protocols"),
        (["--workers", "2"], {}, "Redis"),
        ([], {"HUBPLANE_DETAILED_ERRORS": "maybe"}, "HUBPLANE_DETAILED_ERRORS"),
        (["--redis-reply-timeout", "0"], {}, "--redis-reply-timeout"),
        (["--redis-pubsub", "fast"], {"REDIS_URL": "redis+cluster://h:1"}, "--redis-pubsub"),
        (["--redis-pubsub", "sharded"], {"REDIS_URL": "redis://h:1/0"}, "Redis Cluster"),
        (["--redis-url", "redis+cluster://h:1/3"], {}, "database 0"),
        (["--redis-url", "redis+cluster://h:x"], {}, "host:port"),
    ],
)
def test_bad_values_name_the_setting(argv: list[str], env: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError) as err:
        settings_from_cli(argv, environ=env)
    assert fragment in str(err.value)


def test_the_redis_reply_timeout_reaches_the_bus() -> None:
    from server.hubs import redis_node

    env = {"REDIS_URL": "redis://127.0.0.1:1/0"}
    node = redis_node(settings_from_cli([], environ=env))
    assert node is not None and node.bus.reply_timeout == 2.5
    env["HUBPLANE_REDIS_REPLY_TIMEOUT"] = "1.5"
    node = redis_node(settings_from_cli([], environ=env))
    assert node is not None and node.bus.reply_timeout == 1.5
    node = redis_node(settings_from_cli(["--redis-reply-timeout", "0.75"], environ=env))
    assert node is not None and node.bus.reply_timeout == 0.75


def test_a_cluster_url_and_the_pubsub_mode_reach_the_bus() -> None:
    from server.hubs import redis_node

    env = {"REDIS_URL": "rediss+cluster://h1:7000,h2:7001"}
    node = redis_node(settings_from_cli([], environ=env))
    assert node is not None and node.bus.cluster and node.bus.sharded
    env["HUBPLANE_REDIS_PUBSUB"] = "classic"
    node = redis_node(settings_from_cli([], environ=env))
    assert node is not None and node.bus.cluster and not node.bus.sharded
    node = redis_node(settings_from_cli(["--redis-pubsub", "sharded"], environ=env))
    assert node is not None and node.bus.sharded
    node = redis_node(settings_from_cli(["--redis-url", "redis://h:1/0"], environ={}))
    assert node is not None and not node.bus.cluster and not node.bus.sharded


def test_durable_resume_runs_on_a_cluster_in_both_pubsub_modes() -> None:
    for pubsub in ("sharded", "classic"):
        argv = ["--redis-url", "redis+cluster://h:1", "--durable-resume", "--redis-pubsub", pubsub]
        s = settings_from_cli(argv, environ={})
        assert s.durable_resume and s.redis_pubsub == pubsub


def test_settings_object_is_usable_directly() -> None:
    assert Settings(keepalive_interval=1).validate().keepalive_interval == 1


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_cli_help_lists_every_option() -> None:
    out = run_cli("serve", "--help").stdout
    for option in (
        "--hub",
        "--host",
        "--port",
        "--keepalive-interval",
        "--client-timeout",
        "--handshake-timeout",
        "--max-message-size",
        "--detailed-errors",
        "--log-level",
        "--authenticator",
        "HUBPLANE_KEEPALIVE_INTERVAL",
    ):
        assert option in out, option


def test_cli_reports_bad_hub_clearly() -> None:
    result = run_cli("serve", "--hub", "/x=no_such_module_here:Hub", "--port", "0")
    assert result.returncode == 2
    assert "cannot import 'no_such_module_here'" in result.stderr
    result = run_cli("serve", "--hub", "/x=server.settings:Settings", "--port", "0")
    assert result.returncode == 2 and "not a subclass of backplane.Hub" in result.stderr
    result = run_cli("serve", "--keepalive-interval", "-1")
    assert result.returncode == 2 and "--keepalive-interval" in result.stderr


async def test_demo_page_is_served_only_for_the_demo_hub() -> None:
    import httpx

    from server.cli import build_app

    from .util import serve_app

    demo = build_app(settings_from_cli([], environ={}))
    async with serve_app(demo) as host, httpx.AsyncClient(base_url=f"http://{host}") as http:
        page = await http.get("/")
        assert page.status_code == 200 and 'data-hub="/hubs/demo"' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        # the official browser client, then the page's script, which calls the hub
        assert '<script src="/demo/signalr.min.js">' in page.text
        script = await http.get("/demo/demo.js")
        assert script.status_code == 200 and "HubConnectionBuilder" in script.text
        assert script.headers["content-type"].startswith("text/javascript")
    hubs = build_app(settings_from_cli(["--hub", "/hubs/x=server.demo:DemoHub"], environ={}))
    async with serve_app(hubs) as host, httpx.AsyncClient(base_url=f"http://{host}") as http:
        assert (await http.get("/")).status_code == 404


def test_forwarded_allow_ips_and_its_former_name() -> None:
    both = settings_from_cli(
        ["--forwarded-allow-ips", "10.0.0.1,*", "--rest-trusted-proxies", "192.168.0.0/16"], {}
    )
    assert both.forwarded_allow_ips == ("10.0.0.1/32", "*", "192.168.0.0/16")
    env = settings_from_cli([], {"HUBPLANE_FORWARDED_ALLOW_IPS": "::1"})
    assert env.forwarded_allow_ips == ("::1/128",)
    with pytest.raises(SettingsError, match="--forwarded-allow-ips"):
        settings_from_cli(["--forwarded-allow-ips", "proxy.local"], {})


def test_settings_transports_and_origins() -> None:
    s = settings_from_cli(
        [
            "--transports",
            "longpolling, WEBSOCKETS",
            "--cors-origins",
            "https://A.example/,http://b:8080",
        ]
    )
    assert s.transports == ("WebSockets", "LongPolling")  # negotiate's order, canonical names
    assert s.cors_origins == ("https://a.example", "http://b:8080")
    s = settings_from_cli([], {"HUBPLANE_TRANSPORTS": "ServerSentEvents"})
    assert s.transports == ("ServerSentEvents",)
    assert settings_from_cli([]).transports == ("WebSockets", "ServerSentEvents", "LongPolling")
    assert settings_from_cli([]).cors_origins == ()
    for argv in (
        ["--transports", "carrier-pigeon"],
        ["--transports", ""],
        ["--cors-origins", "*"],
        ["--cors-origins", "https://a.example/path"],
        ["--cors-origins", "a.example"],
    ):
        with pytest.raises(SettingsError):
            settings_from_cli(argv)
