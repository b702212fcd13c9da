"""Self-checks of the end-to-end harness: the Redis fixture and the Node scenario driver."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def test_redis_fixture_answers_and_restarts(redis_server):
    assert redis_server.ping()
    if not redis_server.controllable:
        pytest.skip("REDIS_URL points at an external Redis that the tests cannot restart")
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    redis_server.stop()
    assert not redis_server.ping()
    redis_server.start()
    assert redis_server.ping()


def test_node_driver_reports_connection_errors_and_values(node_client, free_port):
    port = free_port()  # nothing listens there
    res = node_client.run(
        """
        log("undef", undefined);
        log("bytes", new Uint8Array([1, 2, 255]));
        try { await connect(); log("started", true); }
        catch (e) { log("error", errorText(e)); }
        """,
        url=f"http://127.0.0.1:{port}/hubs/none",
        timeout=10,
    )
    assert res.value("undef") == node_client.UNDEFINED
    assert node_client.UNDEFINED != None  # noqa: E711 - JS undefined is not null
    assert res.value("bytes") == b"\x01\x02\xff"
    assert res.values("started") == []
    assert "Failed to complete negotiation with the server" in res.value("error")


def test_node_driver_bounds_scenarios(node_client):
    run = node_client.run_many(
        {
            "throws": 'throw new Error("boom")',
            "slow": "await sleep(5000)",
            "after": 'log("ran", 1)',
        },
        url="http://127.0.0.1:1/hubs/none",
        timeout=10,
        scenario_timeout=0.3,
    )
    assert run["throws"].status == "error" and run["throws"].error == "boom"
    assert run["slow"].status == "error" and "timeout" in run["slow"].error
    assert run["after"].ok().value("ran") == 1
    assert run.returncode == 1

    run = node_client.run_many(
        {"hang": "await sleep(5000)"}, url="http://127.0.0.1:1/x", timeout=0.5
    )
    assert run.exit_status == "timeout" and run.returncode == 2


def test_demo_hub_without_hub_flag_and_file_scenario(hubplane_server, node_client):
    # `hubplane serve` with no --hub serves the built-in demo hub at /hubs/demo; the scenario
    # comes from a file, as a developer would run it against `make serve`
    server = hubplane_server({}, ready_path="/hubs/demo")
    run = node_client.run_file(
        "scenarios/demo-smoke.mjs", url=server.hub_url("/hubs/demo"), protocol="json", timeout=20
    )
    result = run.ok()
    assert result.value("echo") == {"hello": "world"}
    assert result.value("broadcast") == ["alice", "hi all"]
    assert result.value("stream") == [0, 1, 2]
