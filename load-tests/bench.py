"""The benchmark suite: hubplane beside its peers, one command, one report.

    load-tests/.venvs/driver/bin/python load-tests/bench.py [--quick] [--out DIR] [--only S,..]

(``make bench`` sets up the virtual environments and runs this.) Servers run pinned to core 0,
the driver processes to core 1; everything listens on 127.0.0.1 only; every run is bounded by
its duration. The figures go to ``results.json`` and ``report.md`` with PNG plots (report.py).

Scenarios (``--only`` takes these names): echo, echo1 (one call in flight per connection,
the bare app and hubplane interleaved in rounds: ``ab.py``), broadcast, groups (10 members),
biggroups (100 members), connection (send to a connection, shuffled targets), users (send to
a user with two connections, on different nodes when there are three), churn (connect, one
echo, close), connect (ramp and idle memory), redis (redis-benchmark PUBLISH), publish (one
hubplane node's pipelined publish rate). Every load scenario and the connection ramp run on
one node and, where the peer has a backplane, on three nodes over a private Redis; some are
then searched for capacity with open-loop rate steps (see ``CAPACITY``) and run again at half
of it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from driver import procstat  # noqa: E402
from driver.fanout import Fleet  # noqa: E402
from peers.launch import PEERS, ROOT, Redis, Server, available, start_peer  # noqa: E402

SERVER_CPUS = "0"
DRIVER_CPUS = {1}

# Per scenario: connections, driver processes, window (closed loop), and what else it needs.
FULL: dict[str, dict[str, Any]] = {
    "echo": {"connections": 50, "processes": 1, "window": 4},
    "broadcast": {"connections": 500, "processes": 1, "window": 8, "senders": 1},
    "groups": {"connections": 500, "processes": 1, "window": 1, "group_size": 10},
    # Big groups: 5 groups of 100, two senders in each.
    "biggroups": {
        "connections": 500,
        "processes": 1,
        "window": 4,
        "group_size": 100,
        "senders": 2,
    },
    "connection": {"connections": 500, "processes": 1, "window": 1},
    "users": {"connections": 500, "processes": 1, "window": 1, "user_size": 2, "align": 2},
    # 32 loops, each: connect (negotiate, upgrade, handshake), one echo, close; again.
    "churn": {"connections": 32, "processes": 1, "window": 0},
    "connect": {"connections": 10_000, "processes": 2, "window": 0},
}
QUICK: dict[str, dict[str, Any]] = {
    **FULL,
    "broadcast": {**FULL["broadcast"], "connections": 200},
    "groups": {**FULL["groups"], "connections": 200},
    "biggroups": {**FULL["biggroups"], "connections": 200},
    "connection": {**FULL["connection"], "connections": 200},
    "users": {**FULL["users"], "connections": 200},
    "churn": {**FULL["churn"], "connections": 16},
    "connect": {"connections": 1_000, "processes": 1, "window": 0},
}
#: Closed-loop runs repeated, the median kept: echo of the bare app and of hubplane json, whose
#: ratio is a target and moves with the machine from one short run to the next.
REPEATS = {("bare", "raw", "echo"): 3, ("hubplane", "signalr-json", "echo"): 3}
#: One call in flight (echo1, ab.py): the bare app and hubplane json interleaved, this many
#: rounds of this many seconds each, the medians kept.
ONE_IN_FLIGHT = {"rounds": 5, "duration": 3.0}
QUICK_ONE_IN_FLIGHT = {"rounds": 3, "duration": 1.0}
LOAD = ("echo", "broadcast", "groups", "biggroups", "connection", "users", "churn")
THREE_NODE_LOAD = ("echo", "broadcast", "groups", "biggroups", "connection", "users", "churn")

#: Who delivers what on one node: peer → adapters; hubplane speaks both SignalR protocols
#: (MessagePack only in the first three scenarios, to keep the suite short).
ONE_NODE = [
    ("bare", "raw"),
    ("aiosignalr", "signalr-json"),
    ("socketio", "socketio"),
    ("hubplane", "signalr-json"),
    ("hubplane", "signalr-msgpack"),
]
MSGPACK_SCENARIOS = {"echo", "broadcast", "groups"}
THREE_NODE = [("socketio", "socketio"), ("hubplane", "signalr-json")]
#: (peer, adapter, with hubplane's authenticator): the peers have no authentication hook, so
#: hubplane's idle memory is compared without one; the second hubplane run shows what the hook
#: costs (every other hubplane run has it, for the users scenario).
CONNECT = [
    ("bare", "raw", False),
    ("aiosignalr", "signalr-json", False),
    ("socketio", "socketio", False),
    ("hubplane", "signalr-json", False),
    ("hubplane", "signalr-json", True),
]
#: What a peer cannot do, and why (the report says "n/a" with the reason).
UNSUPPORTED: dict[tuple[str, str], str] = {
    ("socketio", "users"): "python-socketio has no users (an app keeps a room per user, which "
    "is the groups scenario again)",
}
SINGLE_NODE: dict[str, str] = {
    "bare": "one process, no backplane: the ceiling of one node",
    "aiosignalr": "no backplane: aiosignalr runs on one node only",
}
#: (peer, adapter, scenario, nodes) searched for capacity after their closed-loop run.
CAPACITY = [
    ("bare", "raw", "echo", 1),
    ("aiosignalr", "signalr-json", "echo", 1),
    ("socketio", "socketio", "echo", 1),
    ("hubplane", "signalr-json", "echo", 1),
    ("socketio", "socketio", "connection", 3),
    ("hubplane", "signalr-json", "connection", 3),
    ("hubplane", "signalr-json", "users", 3),
]
QUICK_CAPACITY = [("hubplane", "signalr-json", "users", 3)]
#: Searches followed by runs at light loads (fractions of capacity below half): where on the
#: way down the cross-node latency target is met, and how busy the one shared core is there.
LIGHT = {("hubplane", "signalr-json", "users", 3)}
LIGHT_FRACTIONS = (0.1, 0.2, 0.3)
#: Extra closed-loop runs with py-spy attached to node 0 (the hot spots, in the report).
PROFILE = [
    ("hubplane", "signalr-json", "echo", 1),
    ("hubplane", "signalr-json", "connection", 1),
    ("hubplane", "signalr-json", "users", 3),
]
QUICK_PROFILE = [("hubplane", "signalr-json", "connection", 1)]


def in_quick(peer: str, adapter: str, scenario: str, nodes: int) -> bool:
    """--quick keeps every scenario for hubplane json, the peers' echo and broadcast only."""
    if peer == "hubplane" and adapter == "signalr-json":
        return True
    if adapter == "signalr-msgpack":
        return scenario == "echo"
    return scenario in ("echo", "broadcast") and (nodes == 1 or scenario == "broadcast")


#: The capacity rule (Azure SignalR's): p99 within 1 s and under 1% errors; and, because our
#: steps last seconds rather than minutes, the server must keep up with the offered rate.
P99_LIMIT_MS = 1000.0
ERROR_LIMIT = 0.01
KEEP_UP = 0.97
MAX_STEPS = 6


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _sleep_until(ns: int) -> None:
    time.sleep(max(0.0, (ns - time.monotonic_ns()) / 1e9))


def _fanout(scenario: str, cfg: dict[str, Any], connected: int) -> int:
    """Deliveries per message sent."""
    if scenario == "broadcast":
        return connected
    if scenario in ("groups", "biggroups"):
        return int(cfg["group_size"])
    if scenario == "users":
        return int(cfg["user_size"])
    return 1


def holds(row: dict[str, Any]) -> bool:
    """The capacity rule at this load (see ``P99_LIMIT_MS``, ``ERROR_LIMIT``, ``KEEP_UP``)."""
    p99 = row["latency"].get("p99", 1e12)
    kept = row.get("kept_up", 1.0)
    return bool(p99 <= P99_LIMIT_MS and row["error_rate"] < ERROR_LIMIT and kept >= KEEP_UP)


class Session:
    """One fleet of connections against running servers: several measured runs on it."""

    def __init__(
        self,
        servers: list[Server],
        extra_pids: list[int],
        peer: str,
        adapter: str,
        scenario: str,
        params: dict[str, Any],
    ) -> None:
        path = PEERS[peer][1]
        self.head = {
            "peer": peer,
            "adapter": adapter,
            "scenario": scenario,
            "nodes": len(servers),
            "connections": params["connections"],
        }
        self.scenario = scenario
        self.cfg: dict[str, Any] = {
            "scenario": scenario,
            "adapter": adapter,
            "urls": [f"http://127.0.0.1:{s.port}{path}" for s in servers],
            "pad": 32,
            "senders": 1,
            "group_size": 10,
            "user_size": 2,
            "connect_concurrency": 64,
            **params,
        }
        self.servers = servers
        self.extra_pids = extra_pids
        self.fleet = Fleet(self.cfg, params["processes"], DRIVER_CPUS)
        self.ready: list[dict[str, Any]] = []

    def pids(self) -> list[int]:
        return [pid for s in self.servers for pid in s.pids()] + self.extra_pids

    def __enter__(self) -> Session:
        try:
            self.ready = self.fleet.start()
        except BaseException:
            self.fleet.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.fleet.close()

    def run(
        self, duration: float, grace: float, rate: float | None = None, mode: str = "closed"
    ) -> dict[str, Any]:
        """One measured run: closed-loop (``rate`` None) or open-loop at ``rate`` msgs/s."""
        pids = self.pids()
        rss_before = procstat.rss_bytes(pids)
        cpu_before = procstat.cpu_seconds(pids)
        start_ns = self.fleet.go(duration, grace, rate)
        _sleep_until(start_ns)
        cpu0 = procstat.cpu_seconds(pids)
        driver0 = procstat.cpu_seconds(self.fleet.pids())
        _sleep_until(start_ns + int(duration * 1e9))
        cpu1 = procstat.cpu_seconds(pids)
        driver1 = procstat.cpu_seconds(self.fleet.pids())
        rss_loaded = procstat.rss_bytes(pids)
        result = self.fleet.results(timeout=duration + grace + 60)
        out: dict[str, Any] = {**self.head, "mode": mode, "duration": duration, **result}
        out["rss_mb"] = rss_loaded / 2**20
        out["cpu_s"] = cpu1 - cpu0
        # Busy share of one core: near 1.0 for the driver means the driver set the pace.
        out["server_busy"] = (cpu1 - cpu0) / duration
        out["driver_busy"] = (driver1 - driver0) / duration
        if self.scenario == "churn":
            time.sleep(1.0)  # closed connections cleaned up before the memory is read
            cycles = result["cycles"]
            failures = result["connect_errors"] + result["cycle_errors"] + result["disconnects"]
            out["cycles_per_s"] = cycles / duration
            out["cpu_ms_per_cycle"] = (cpu1 - cpu0) * 1000 / cycles if cycles else None
            out["rss_growth_mb"] = (procstat.rss_bytes(pids) - rss_before) / 2**20
            out["error_rate"] = failures / max(1, cycles + failures)
            out["cpu_before_s"] = cpu0 - cpu_before
            return out
        connected = result["connected"]
        fanout = _fanout(self.scenario, self.cfg, connected)
        expected = result["sent"] * fanout
        lost = max(0, expected - result["received"])
        errors = result["disconnects"] + result["connect_errors"]
        out["fanout"] = fanout
        out["delivered_per_s"] = result["in_window"] / duration
        out["sent_per_s"] = result["sent"] / duration
        out["frames_per_s"] = result["frames"] / duration
        delivered_k = result["in_window"] / 1000
        out["cpu_s_per_1k"] = (cpu1 - cpu0) / delivered_k if delivered_k else None
        out["lost"] = lost
        out["error_rate"] = (lost + errors * max(1, fanout)) / max(1, expected)
        if rate is not None:
            out["offered_per_s"] = rate
            offered_tail = rate * fanout * duration / 2
            out["kept_up"] = result["in_tail"] / offered_tail if offered_tail else 0.0
        return out

    def capacity(
        self,
        closed: dict[str, Any],
        step_s: float,
        grace: float,
        half_s: float,
        light: bool = False,
    ) -> list[dict[str, Any]]:
        """Open-loop rate steps around the closed-loop rate; then a run at half the capacity."""
        base = max(1.0, closed["sent_per_s"])
        rows: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None

        def step(fraction: float) -> bool:
            row = self.run(step_s, grace, base * fraction, mode="step")
            row["fraction"] = fraction
            row["held"] = holds(row)
            rows.append(row)
            log(f"  step {base * fraction:>10,.0f} msgs/s: {describe(row)}")
            if not row["held"]:
                time.sleep(1.0)  # let a backlog drain before the next run
            return bool(row["held"])

        fraction = 0.8
        if step(fraction):
            best = rows[-1]
            while fraction < 3.0 and len(rows) < MAX_STEPS:
                fraction *= 1.25
                if not step(fraction):
                    break
                best = rows[-1]
        else:
            while fraction > 0.05 and len(rows) < MAX_STEPS + 4:
                fraction *= 0.8
                if step(fraction):
                    best = rows[-1]
                    break
        if best is not None:
            capacity = best["offered_per_s"]
            loads = [("half", 0.5)] + [("low", f) for f in (LIGHT_FRACTIONS if light else ())]
            for mode, fraction in loads:
                row = self.run(half_s, grace, capacity * fraction, mode=mode)
                row["capacity_per_s"] = capacity
                row["fraction"] = fraction
                row["held"] = holds(row)
                rows.append(row)
                log(f"  {mode} {capacity * fraction:>10,.0f} msgs/s: {describe(row)}")
        return rows

    def profile(self, duration: float, grace: float) -> dict[str, Any] | None:
        """A closed-loop run with py-spy on node 0: the top functions by samples."""
        pyspy = Path(sys.executable).parent / "py-spy"
        if not pyspy.exists():
            log("py-spy is not installed in the driver venv: no profile")
            return None
        raw = Path(tempfile.mkstemp(prefix="pyspy-", suffix=".txt")[1])
        command = ["taskset", "-c", ",".join(map(str, sorted(DRIVER_CPUS))), str(pyspy)]
        command += ["record", "--nonblocking", "-r", "250", "-f", "raw", "-o", str(raw)]
        command += ["-d", str(max(1, int(duration))), "-p", str(self.servers[0].proc.pid)]
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            time.sleep(0.3)  # attached before the load starts
            row = self.run(duration, grace, mode="profile")
            spy.wait(timeout=duration + 30)
            prof = summarize_profile(raw.read_text())
        except (subprocess.TimeoutExpired, OSError) as exc:
            spy.kill()
            log(f"py-spy failed: {exc}")
            return None
        finally:
            raw.unlink(missing_ok=True)
        keep = ("peer", "adapter", "scenario", "nodes", "delivered_per_s", "server_busy")
        out = {k: row[k] for k in keep}
        out.update(prof)
        log(f"  profile: {prof['samples']} samples; top {prof['self'][:3]}")
        return out


def _short(frame: str) -> str:
    """``name (path/to/file.py:12)`` → ``name (file.py:12)``, site-packages paths cut."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}" if where else name


def summarize_profile(text: str, top: int = 15) -> dict[str, Any]:
    """Shares of py-spy's collapsed stacks: by own time, and hubplane's code inclusive."""
    own: dict[str, int] = {}
    project: dict[str, int] = {}
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf = _short(frames[-1])
        own[leaf] = own.get(leaf, 0) + n
        seen = set()
        for frame in frames:
            where = frame.partition(" (")[2]
            if where.startswith(("backplane/", "server/")) or "/backplane/" in where:
                name = frame.partition(" (")[0]  # every line of a function together
                if name not in seen and not name.startswith(("main", "serve", "run")):
                    seen.add(name)
                    project[name] = project.get(name, 0) + n

    def ranked(counts: dict[str, int]) -> list[list[Any]]:
        best = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [[k, 100.0 * v / max(1, total)] for k, v in best]

    return {"samples": total, "self": ranked(own), "project": ranked(project)}


def connect_run(
    servers: list[Server],
    extra: list[int],
    peer: str,
    adapter: str,
    params: dict[str, Any],
    settle: float = 2.0,
) -> dict[str, Any]:
    """Open ``connections`` connections, leave them idle, read the server's memory."""
    session = Session(servers, extra, peer, adapter, "connect", params)
    pids = session.pids()
    rss_before = procstat.rss_bytes(pids)
    cpu_before = procstat.cpu_seconds(pids)
    with session:
        cpu_connected = procstat.cpu_seconds(pids)
        time.sleep(settle)  # idle: let the server settle before reading its memory
        rss_idle = procstat.rss_bytes(pids)
        ready = session.ready
    connected = sum(r["connected"] for r in ready)
    seconds = max(r["connect_seconds"] for r in ready)
    failed = params["connections"] - connected
    out: dict[str, Any] = {**session.head, "mode": "connect", "connected": connected}
    out["connect_latency"] = ready_latency(ready)
    out["rss_mb"] = rss_idle / 2**20
    out["connect_rate"] = connected / seconds if seconds else 0.0
    out["idle_bytes_per_connection"] = (rss_idle - rss_before) / max(1, connected)
    out["cpu_ms_per_connection"] = (cpu_connected - cpu_before) * 1000 / max(1, connected)
    out["error_rate"] = failed / params["connections"]
    return out


def ready_latency(ready: list[dict[str, Any]]) -> dict[str, float]:
    from driver.fanout import merge, summary

    return summary(merge([r["connect_hist"] for r in ready]))


@contextlib.contextmanager
def _servers(
    peer: str, nodes: int, logs: Path, auth: bool = True
) -> Iterator[tuple[list[Server], list[int]]]:
    """``nodes`` servers of ``peer`` (over a private Redis when more than one), and the pids
    measured beside them (Redis'); all stopped on the way out."""
    redis = Redis(SERVER_CPUS, logs).start() if nodes > 1 else None
    servers: list[Server] = []
    try:
        url = redis.url if redis is not None else None
        for _ in range(nodes):
            servers.append(start_peer(peer, SERVER_CPUS, logs, url, auth))
        time.sleep(0.5)  # imports finished, loops idle
        extra = redis.server.pids() if redis is not None and redis.server is not None else []
        yield servers, extra
    finally:
        for server in servers:
            server.stop()
        if redis is not None:
            redis.stop()


def _ramp(
    servers: list[Server],
    extra: list[int],
    peer: str,
    adapter: str,
    params: dict[str, Any],
    settle: float,
) -> dict[str, Any]:
    """The connection ramp after a small warm-up (a few connections per node, opened and
    closed), so the baseline memory already holds what a first connection allocates."""
    warm = {**params, "connections": max(20, 10 * len(servers)), "processes": 1}
    connect_run(servers, extra, peer, adapter, warm, 0.2)
    time.sleep(0.5)
    return connect_run(servers, extra, peer, adapter, params, settle)


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
            requests = (50_000 if quick else 200_000) * (4 if pipeline > 1 else 1)
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


def publish_rate(logs: Path, quick: bool) -> list[dict[str, Any]]:
    """load-tests/redis/publish_rate.py: one hubplane node's cross-node publish rate."""
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        log("no .venv (make venv): no publish rate")
        return []
    redis = Redis(SERVER_CPUS, logs).start()
    rows: list[dict[str, Any]] = []
    try:
        messages = 50_000 if quick else 100_000
        # The publishing node on core 1 (the driver's, idle now), the receiving node with
        # Redis on core 0, as on a cluster where they would be other machines' cores.
        command = ["taskset", "-c", "1", str(python), str(HERE / "redis" / "publish_rate.py")]
        command += ["--redis-url", redis.url, "--messages", str(messages), "--repeat", "1"]
        command += ["--modes", "lua,each,single", "--receiver-cpus", SERVER_CPUS, "--json"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=ROOT)
        if done.returncode != 0:
            log(f"publish_rate.py failed: {done.stderr[-500:]}")
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                rows.append(row)
                log(
                    f"publish {row['label']:28} published {row['published_per_s']:,.0f}/s, "
                    f"delivered {row['delivered_per_s']:,.0f}/s"
                )
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
    if row["scenario"] == "churn":
        clat = row.get("connect_latency", {})
        return (
            f"{row['cycles_per_s']:,.0f} cycles/s, connect p99 {clat.get('p99', 0):.1f} ms, "
            f"cpu/cycle {row['cpu_ms_per_cycle'] or 0:.2f} ms, err {row['error_rate']:.2%}"
        )
    cpu = row.get("cpu_s_per_1k")
    text = (
        f"{row['delivered_per_s']:,.0f} msg/s, p50 {lat.get('p50', 0):.2f} ms, "
        f"p99 {lat.get('p99', 0):.2f} ms, cpu/1k {cpu or 0:.4f} s, err {row['error_rate']:.2%}"
    )
    if "kept_up" in row:
        text += f", kept up {row['kept_up']:.2f}, {'held' if holds(row) else 'NOT held'}"
    cross = row.get("cross_latency", {})
    if cross.get("count"):
        text += f", cross-node p99 {cross['p99']:.2f} ms"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, fewer connections")
    parser.add_argument("--out", type=Path, help="result folder (default results/<date>)")
    parser.add_argument("--duration", type=float, help="seconds of load per run")
    parser.add_argument("--only", help="comma-separated scenarios to run")
    parser.add_argument("--no-capacity", action="store_true", help="skip the rate steps")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy runs")
    args = parser.parse_args(argv)
    quick = args.quick
    plan = QUICK if quick else FULL
    duration = args.duration or (1.0 if quick else 3.0)
    grace = 0.5 if quick else 1.0
    step_s = 1.0 if quick else 2.5
    half_s = 1.5 if quick else 3.0
    settle = 1.0 if quick else 2.0
    capacity_plan = [] if args.no_capacity else (QUICK_CAPACITY if quick else CAPACITY)
    profile_plan = [] if args.no_profile else (QUICK_PROFILE if quick else PROFILE)
    profiles: list[dict[str, Any]] = []
    only = set(args.only.split(",")) if args.only else None
    today = datetime.date.today().isoformat()
    out = args.out or HERE / "results" / (today + ("-quick" if quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    skipped = sorted({p for p, _ in ONE_NODE if not available(p)})
    for peer in skipped:
        log(f"peer {peer} is not installed: left out")

    def wanted(scenario: str) -> bool:
        return only is None or scenario in only

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        where = f"{row['peer']}/{row['adapter']} x{row['nodes']}"
        log(f"{row['scenario']:10} {where:32} {describe(row)}")

    def not_available(peer: str, adapter: str, scenario: str, nodes: int, why: str) -> None:
        missing.append(
            {"peer": peer, "adapter": adapter, "scenario": scenario, "nodes": nodes, "why": why}
        )

    def load(servers: list[Server], extra: list[int], peer: str, adapter: str, scenario: str):
        nodes = len(servers)
        key = (peer, adapter, scenario, nodes)
        with Session(servers, extra, peer, adapter, scenario, plan[scenario]) as session:
            closed = session.run(duration, grace)
            repeats = REPEATS.get((peer, adapter, scenario), 1) if not quick and nodes == 1 else 1
            if repeats > 1:
                # The run with the median rate stands for all (a short run on a shared
                # machine can catch a hiccup either way); the others' rates are kept.
                tries = [closed] + [session.run(duration, grace) for _ in range(repeats - 1)]
                tries.sort(key=lambda r: r["delivered_per_s"])
                closed = tries[len(tries) // 2]
                closed["repeat_rates"] = sorted(r["delivered_per_s"] for r in tries)
            record(closed)
            if key in capacity_plan:
                log(f"capacity of {scenario} on {peer}/{adapter} x{nodes}:")
                light = key in LIGHT and not quick
                for row in session.capacity(closed, step_s, grace, half_s, light):
                    rows.append(row)
            if key in profile_plan:
                prof = session.profile(max(2.0, duration), grace)
                if prof is not None:
                    profiles.append(prof)

    # One node: every load scenario for every peer (hubplane in both protocols).
    for peer in dict.fromkeys(p for p, _ in ONE_NODE):
        if peer in skipped:
            continue
        todo = []
        for scenario in LOAD:
            for p, adapter in ONE_NODE:
                if p != peer or not wanted(scenario):
                    continue
                if adapter == "signalr-msgpack" and scenario not in MSGPACK_SCENARIOS:
                    continue
                why = UNSUPPORTED.get((peer, scenario))
                if why:
                    not_available(peer, adapter, scenario, 1, why)
                    continue
                if not quick or in_quick(peer, adapter, scenario, 1):
                    todo.append((scenario, adapter))
        if not todo:
            continue
        with _servers(peer, 1, logs) as (servers, extra):
            for scenario, adapter in todo:
                load(servers, extra, peer, adapter, scenario)

    # One call in flight: the bare app and hubplane side by side, interleaved round by round.
    one_in_flight: dict[str, Any] | None = None
    if wanted("echo1") and available("bare") and available("hubplane"):
        from ab import describe as describe_ab
        from ab import interleaved

        how = QUICK_ONE_IN_FLIGHT if quick else ONE_IN_FLIGHT
        log(f"echo1: {how['rounds']} interleaved rounds of {how['duration']:g} s")
        one_in_flight = interleaved(
            logs,
            int(how["rounds"]),
            float(args.duration or how["duration"]),
            window=1,
            connections=plan["echo"]["connections"],
            grace=grace,
        )
        for line in describe_ab(one_in_flight["summary"]).splitlines():
            log(f"echo1      {line}")

    # Three nodes over a private Redis, for the peers that have a backplane.
    for peer, why in SINGLE_NODE.items():
        for scenario in THREE_NODE_LOAD:
            if wanted(scenario):
                not_available(peer, PEERS_ADAPTER[peer], scenario, 3, why)
    for peer, adapter in THREE_NODE:
        if peer in skipped:
            continue
        todo = []
        for scenario in THREE_NODE_LOAD:
            if not wanted(scenario):
                continue
            why = UNSUPPORTED.get((peer, scenario))
            if why:
                not_available(peer, adapter, scenario, 3, why)
                continue
            if not quick or in_quick(peer, adapter, scenario, 3):
                todo.append(scenario)
        if not todo:
            continue
        with _servers(peer, 3, logs) as (servers, extra):
            for scenario in todo:
                load(servers, extra, peer, adapter, scenario)

    # Connection ramp and idle memory, each on a fresh server after a small warm-up.
    for peer, adapter, auth in CONNECT:
        if peer in skipped or not wanted("connect"):
            continue
        with _servers(peer, 1, logs, auth) as (servers, extra):
            row = _ramp(servers, extra, peer, adapter, plan["connect"], settle)
        if auth:
            row["variant"] = "authenticator"
        record(row)

    # The same on three nodes over a private Redis: the connections spread over the nodes, the
    # memory of the three nodes and of Redis together (what a connection costs the cluster).
    for peer, adapter in THREE_NODE:
        if peer in skipped or not wanted("connect"):
            continue
        if quick and not in_quick(peer, adapter, "connect", 3):
            continue
        with _servers(peer, 3, logs, False) as (servers, extra):
            record(_ramp(servers, extra, peer, adapter, plan["connect"], settle))

    ceiling = redis_ceiling(logs, quick) if wanted("redis") else []
    publish = publish_rate(logs, quick) if wanted("publish") else []
    meta = {
        "date": today,
        "quick": quick,
        "duration": duration,
        "grace": grace,
        "step_seconds": step_s,
        "half_seconds": half_s,
        "settle_seconds": settle,
        "rule": {"p99_ms": P99_LIMIT_MS, "errors": ERROR_LIMIT, "kept_up": KEEP_UP},
        "wall_seconds": time.monotonic() - started,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "processor": platform.processor() or platform.machine(),
        },
        "pinning": {"servers_and_redis": SERVER_CPUS, "driver": sorted(DRIVER_CPUS)},
        "plan": plan,
        "capacity_plan": capacity_plan,
        "skipped": skipped,
    }
    (out / "results.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "runs": rows,
                "not_available": missing,
                "redis": ceiling,
                "publish": publish,
                "profiles": profiles,
                "one_in_flight": one_in_flight,
            },
            indent=1,
        )
    )
    log(f"results in {out / 'results.json'} after {meta['wall_seconds']:.0f} s")
    from report import write_report

    write_report(out)
    log(f"report in {out / 'report.md'}")
    return 0


PEERS_ADAPTER = {"bare": "raw", "aiosignalr": "signalr-json", "socketio": "socketio"}

if __name__ == "__main__":
    sys.exit(main())
