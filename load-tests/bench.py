"""The benchmark suite: hubplane beside its peers, one command, one report.

    load-tests/.venvs/driver/bin/python load-tests/bench.py [--quick] [--out DIR]

(``make bench`` sets up the virtual environments and runs this.) Servers run pinned to core 0,
the driver processes to core 1; everything listens on 127.0.0.1 only; every run is bounded by
its duration. The figures go to ``results.json`` and ``report.md`` with PNG plots (report.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from driver import procstat  # noqa: E402
from driver.fanout import Fleet  # noqa: E402
from peers.launch import PEERS, Redis, Server, available, start_peer  # noqa: E402

SERVER_CPUS = "0"
DRIVER_CPUS = {1}

# (connections, driver processes, window, extra) per scenario; --quick uses fewer connections.
FULL = {
    "echo": {"connections": 50, "processes": 1, "window": 4},
    "broadcast": {"connections": 500, "processes": 1, "window": 8, "senders": 1},
    "groups": {"connections": 500, "processes": 1, "window": 1, "group_size": 10},
    "connect": {"connections": 10_000, "processes": 2, "window": 0},
}
QUICK = {
    "echo": {"connections": 50, "processes": 1, "window": 4},
    "broadcast": {"connections": 200, "processes": 1, "window": 8, "senders": 1},
    "groups": {"connections": 200, "processes": 1, "window": 1, "group_size": 10},
    "connect": {"connections": 2_000, "processes": 1, "window": 0},
}

#: Who delivers what: (peer, adapter) pairs of the one-node runs.
ONE_NODE = [
    ("bare", "raw"),
    ("aiosignalr", "signalr-json"),
    ("socketio", "socketio"),
    ("hubplane", "signalr-json"),
    ("hubplane", "signalr-msgpack"),
]
THREE_NODE = [("socketio", "socketio"), ("hubplane", "signalr-json")]
CONNECT = [
    ("bare", "raw"),
    ("aiosignalr", "signalr-json"),
    ("socketio", "socketio"),
    ("hubplane", "signalr-json"),
]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _sleep_until(ns: int) -> None:
    time.sleep(max(0.0, (ns - time.monotonic_ns()) / 1e9))


def run_scenario(
    servers: list[Server],
    extra_pids: list[int],
    peer: str,
    adapter: str,
    scenario: str,
    params: dict[str, Any],
    duration: float,
    grace: float,
) -> dict[str, Any]:
    """One load run against running servers; the measured figures."""
    path = PEERS[peer][1]
    urls = [f"http://127.0.0.1:{s.port}{path}" for s in servers]
    cfg = {
        "scenario": scenario,
        "adapter": adapter,
        "urls": urls,
        "duration": duration if scenario != "connect" else 0.0,
        "grace": grace if scenario != "connect" else 0.0,
        "pad": 32,
        "senders": 1,
        "group_size": 10,
        "connect_concurrency": 64,
        **params,
    }
    pids = [pid for s in servers for pid in s.pids()] + extra_pids
    rss_before = procstat.rss_bytes(pids)
    cpu_before = procstat.cpu_seconds(pids)
    fleet = Fleet(cfg, params["processes"], DRIVER_CPUS)
    out: dict[str, Any] = {
        "peer": peer,
        "adapter": adapter,
        "scenario": scenario,
        "nodes": len(servers),
        "connections": params["connections"],
        "duration": cfg["duration"],
    }
    try:
        ready = fleet.start()
        cpu_connected = procstat.cpu_seconds(pids)
        if scenario == "connect":
            time.sleep(2.0)  # idle: let the server settle before reading its memory
            rss_idle = procstat.rss_bytes(pids)
        start_ns = fleet.go()
        _sleep_until(start_ns)
        cpu0 = procstat.cpu_seconds(pids)
        driver0 = procstat.cpu_seconds(fleet.pids())
        _sleep_until(start_ns + int(cfg["duration"] * 1e9))
        cpu1 = procstat.cpu_seconds(pids)
        driver1 = procstat.cpu_seconds(fleet.pids())
        rss_loaded = procstat.rss_bytes(pids)
        result = fleet.results(timeout=cfg["duration"] + cfg["grace"] + 30)
    finally:
        fleet.close()
    out.update(result)
    connected = result["connected"]
    errors = result["disconnects"] + result["connect_errors"]
    out["rss_mb"] = rss_loaded / 2**20
    if scenario == "connect":
        seconds = max(r["connect_seconds"] for r in ready)
        out["connect_rate"] = connected / seconds if seconds else 0.0
        out["idle_bytes_per_connection"] = (rss_idle - rss_before) / max(1, connected)
        out["cpu_ms_per_connection"] = (cpu_connected - cpu_before) * 1000 / max(1, connected)
        out["error_rate"] = errors / params["connections"]
        return out
    fanout = {"echo": 1, "broadcast": connected, "groups": cfg["group_size"]}[scenario]
    expected = result["sent"] * fanout
    lost = max(0, expected - result["received"])
    out["delivered_per_s"] = result["in_window"] / cfg["duration"]
    out["sent_per_s"] = result["sent"] / cfg["duration"]
    out["frames_per_s"] = result["frames"] / cfg["duration"]
    delivered_k = result["in_window"] / 1000
    out["cpu_s"] = cpu1 - cpu0
    # Busy share of one core: near 1.0 for the driver means the driver set the pace.
    out["server_busy"] = (cpu1 - cpu0) / cfg["duration"]
    out["driver_busy"] = (driver1 - driver0) / cfg["duration"]
    out["cpu_s_per_1k"] = (cpu1 - cpu0) / delivered_k if delivered_k else None
    out["lost"] = lost
    out["error_rate"] = (lost + errors * max(1, fanout)) / max(1, expected)
    return out


def _with_servers(
    peer: str, nodes: int, logs: Path, redis: Redis | None
) -> tuple[list[Server], list[int]]:
    url = redis.url if redis is not None else None
    servers = [start_peer(peer, SERVER_CPUS, logs, url) for _ in range(nodes)]
    time.sleep(0.5)  # imports finished, loops idle
    extra = redis.server.pids() if redis is not None and redis.server is not None else []
    return servers, extra


def redis_ceiling(logs: Path, quick: bool) -> list[dict[str, Any]]:
    """redis-benchmark PUBLISH against a private server: one at a time and pipelined."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        log("redis-benchmark not found: no backplane ceiling")
        return []
    redis = Redis(SERVER_CPUS, logs).start()
    rows = []
    try:
        assert redis.server is not None
        for pipeline in (1, 32):
            requests = (50_000 if quick else 300_000) * (4 if pipeline > 1 else 1)
            command = ["taskset", "-c", "1", binary, "-h", "127.0.0.1", "-p"]
            command += [str(redis.server.port), "-c", "50", "-n", str(requests), "-P"]
            command += [str(pipeline), "-q", "PUBLISH", "bench", "x" * 64]
            text = subprocess.run(
                command, capture_output=True, text=True, timeout=120, check=True
            ).stdout
            match = re.findall(r"([\d.]+) requests per second", text)
            rate = float(match[-1]) if match else 0.0
            rows.append({"pipeline": pipeline, "clients": 50, "publish_per_s": rate})
            log(f"redis-benchmark PUBLISH -P {pipeline}: {rate:,.0f}/s")
    finally:
        redis.stop()
    return rows


def describe(row: dict[str, Any]) -> str:
    lat = row.get("latency", {})
    if row["scenario"] == "connect":
        return (
            f"{row['connected']} conns at {row['connect_rate']:,.0f}/s, "
            f"{row['idle_bytes_per_connection'] / 1024:.1f} KB/conn"
        )
    cpu = row.get("cpu_s_per_1k")
    return (
        f"{row['delivered_per_s']:,.0f} msg/s, p50 {lat.get('p50', 0):.2f} ms, "
        f"p99 {lat.get('p99', 0):.2f} ms, cpu/1k {cpu or 0:.4f} s, err {row['error_rate']:.2%}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, fewer connections")
    parser.add_argument("--out", type=Path, help="result folder (default results/<date>)")
    parser.add_argument("--duration", type=float, help="seconds of load per run")
    parser.add_argument("--only", help="comma-separated scenarios to run")
    args = parser.parse_args(argv)
    quick = args.quick
    plan = QUICK if quick else FULL
    duration = args.duration or (2.0 if quick else 8.0)
    grace = 0.5 if quick else 1.0
    only = set(args.only.split(",")) if args.only else None
    today = datetime.date.today().isoformat()
    out = args.out or HERE / "results" / (today + ("-quick" if quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    skipped = sorted({p for p, _ in ONE_NODE if not available(p)})
    for peer in skipped:
        log(f"peer {peer} is not installed: left out")

    def wanted(scenario: str) -> bool:
        return only is None or scenario in only

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        where = f"{row['peer']}/{row['adapter']} x{row['nodes']}"
        log(f"{row['scenario']:9} {where:32} {describe(row)}")

    # One node: echo, broadcast, groups for every peer (and both hubplane protocols).
    for peer in dict.fromkeys(p for p, _ in ONE_NODE):
        if peer in skipped:
            continue
        servers, extra = _with_servers(peer, 1, logs, None)
        try:
            for scenario in ("echo", "broadcast", "groups"):
                for p, adapter in ONE_NODE:
                    if p == peer and wanted(scenario):
                        record(
                            run_scenario(
                                servers,
                                extra,
                                peer,
                                adapter,
                                scenario,
                                plan[scenario],
                                duration,
                                grace,
                            )
                        )
        finally:
            for s in servers:
                s.stop()

    # Three nodes over a private Redis: broadcast and groups.
    for peer, adapter in THREE_NODE:
        if peer in skipped or not (wanted("broadcast") or wanted("groups")):
            continue
        redis = Redis(SERVER_CPUS, logs).start()
        servers: list[Server] = []
        try:
            servers, extra = _with_servers(peer, 3, logs, redis)
            for scenario in ("broadcast", "groups"):
                if wanted(scenario):
                    record(
                        run_scenario(
                            servers,
                            extra,
                            peer,
                            adapter,
                            scenario,
                            plan[scenario],
                            duration,
                            grace,
                        )
                    )
        finally:
            for s in servers:
                s.stop()
            redis.stop()

    # Connection ramp and idle memory, each on a fresh server after a small warm-up.
    for peer, adapter in CONNECT:
        if peer in skipped or not wanted("connect"):
            continue
        servers, extra = _with_servers(peer, 1, logs, None)
        try:
            warm = {**plan["connect"], "connections": 20, "processes": 1}
            run_scenario(servers, extra, peer, adapter, "connect", warm, 0, 0)
            time.sleep(0.5)
            record(run_scenario(servers, extra, peer, adapter, "connect", plan["connect"], 0, 0))
        finally:
            for s in servers:
                s.stop()

    ceiling = redis_ceiling(logs, quick) if wanted("redis") or only is None else []
    meta = {
        "date": today,
        "quick": quick,
        "duration": duration,
        "grace": grace,
        "wall_seconds": time.monotonic() - started,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "processor": platform.processor() or platform.machine(),
        },
        "pinning": {"servers_and_redis": SERVER_CPUS, "driver": sorted(DRIVER_CPUS)},
        "plan": plan,
        "skipped": skipped,
    }
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "runs": rows, "redis": ceiling}, indent=1)
    )
    log(f"results in {out / 'results.json'} after {meta['wall_seconds']:.0f} s")
    from report import write_report

    write_report(out)
    log(f"report in {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
