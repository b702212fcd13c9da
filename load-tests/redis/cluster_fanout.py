"""Fan-out through one Redis against a three-master Redis Cluster, on the same machine.

Publishing nodes (``--senders`` processes) send group messages round-robin over ``--groups``
groups; receiving nodes (``--receivers`` processes) each hold one client in every group, so
every message is one publish and reaches every receiving node once (one delivery per
receiving node). Three layouts, each on a fresh Redis:

- ``one Redis``: classic PUBLISH/SUBSCRIBE on one redis-server;
- ``cluster, sharded``: three masters, SPUBLISH/SSUBSCRIBE (``--redis-pubsub sharded``): each
  group channel lives on the master of its slot;
- ``cluster, classic``: the same cluster with PUBLISH/SUBSCRIBE (``--redis-pubsub classic``,
  the layout a fleet shared with .NET nodes needs): every message crosses the cluster bus to
  every master.

Reported per layout: deliveries per second (from the start signal to the last delivery) and
Redis CPU seconds (every redis-server process together, from /proc) per 1,000 deliveries.

    .venv/bin/python load-tests/redis/cluster_fanout.py [--messages N] [--json FILE]
    load-tests/.venvs/driver/bin/python load-tests/redis/cluster_fanout.py --plot FILE...

On a machine with few cores the Python nodes, not Redis, set the pace: the deliveries per
second compare the layouts on one machine only; the Redis CPU per delivery is what sizes Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

HUB = "Bench.Hub"
LAYOUTS = [
    ("one Redis", "single", ""),
    ("cluster, sharded", "cluster", "sharded"),
    ("cluster, classic", "cluster", "classic"),
]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


# -- the node processes -----------------------------------------------------------------------


async def receive(url: str, pubsub: str, prefix: str, groups: int, expected: int) -> None:
    """A receiving node: one client in every group; reports when all messages arrived."""
    from backplane import Hub, HubConnectionHandler, HubOptions
    from backplane.redis.node import RedisNode
    from tests.hub.helpers import Client

    class BenchHub(Hub):
        wire_name = HUB

    node = RedisNode(url, channel_prefix=prefix, presence=False, pubsub=pubsub or None)
    manager = node.manager(HUB, ("json", "messagepack"))
    await manager.start()
    handler = HubConnectionHandler(BenchHub, HubOptions(max_buffer_size=1 << 30), manager)
    client = Client(handler, "r")
    await client.handshake()
    for g in range(groups):
        await manager.add_to_group("r", f"g{g}")
    print(json.dumps({"ready": True}), flush=True)
    deadline = time.monotonic() + 300
    while node.bus.stats.received < expected and time.monotonic() < deadline:
        client.conn.outbound.take()  # what a socket would carry away
        await asyncio.sleep(0.002)
    print(json.dumps({"received": node.bus.stats.received, "at": time.time()}), flush=True)
    await client.conn.transport_closed()
    await manager.stop()


async def send(url: str, pubsub: str, prefix: str, groups: int, count: int) -> None:
    """A publishing node: ``count`` group messages once told to go (a line on stdin)."""
    from backplane.redis.node import RedisNode

    node = RedisNode(url, channel_prefix=prefix, presence=False, pubsub=pubsub or None)
    manager = node.manager(HUB, ("json", "messagepack"))
    await manager.start()
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    args = ["some text of a chat message", 12345]
    for i in range(count):
        await manager.send_group(f"g{i % groups}", "Msg", args)
        if i % 500 == 499:
            await asyncio.sleep(0)  # let the writer run, as a busy hub would
    assert await node.bus.flush(120.0), "the publishes did not all reach Redis"
    print(json.dumps({"done": time.time()}), flush=True)
    await manager.stop()


# -- one run ----------------------------------------------------------------------------------


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"a node process ended early (exit code {proc.wait()})")
    return dict(json.loads(line))


def run_layout(
    url: str, pubsub: str, redis_pids: list[int], opts: argparse.Namespace
) -> dict[str, Any]:
    prefix = f"fan{os.getpid()}{time.monotonic_ns()}:"
    expected = opts.senders * opts.messages
    g = str(opts.groups)
    receivers = [
        _spawn("--receive", url, pubsub, prefix, g, str(expected)) for _ in range(opts.receivers)
    ]
    senders = [
        _spawn("--send", url, pubsub, prefix, g, str(opts.messages)) for _ in range(opts.senders)
    ]
    try:
        for proc in receivers + senders:
            assert _line(proc).get("ready")
        cpu_before = cpu_seconds(redis_pids)
        start = time.time()
        for proc in senders:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        done = [_line(proc)["done"] for proc in senders]
        reports = [_line(proc) for proc in receivers]
        cpu = cpu_seconds(redis_pids) - cpu_before
    finally:
        for proc in receivers + senders:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    deliveries = sum(r["received"] for r in reports)
    elapsed = max(r["at"] for r in reports) - start
    return {
        "messages": expected,
        "deliveries": deliveries,
        "lost": expected * opts.receivers - deliveries,
        "seconds": elapsed,
        "published_per_s": expected / (max(done) - start),
        "deliveries_per_s": deliveries / elapsed,
        "redis_cpu_s": cpu,
        "redis_cpu_s_per_1k": cpu / deliveries * 1000,
    }


def main(opts: argparse.Namespace) -> None:
    from common import start_redis

    from tests.redis_cluster import RedisCluster

    results = []
    for label, kind, pubsub in LAYOUTS:
        for repeat in range(opts.repeat):
            if kind == "single":
                proc, url = start_redis()
                pids = [proc.pid]
                cluster = None
            else:
                cluster = RedisCluster(Path(tempfile.mkdtemp(prefix="fanout-")), 3)
                cluster.start()
                url = cluster.url
                pids = [p.pid for p in cluster.procs.values()]
            try:
                r = run_layout(url, pubsub, pids, opts)
            finally:
                if cluster is not None:
                    cluster.stop()
                else:
                    proc.terminate()
                    proc.wait(5)
            r.update(layout=label, repeat=repeat)
            results.append(r)
            print(
                f"{label:18s} {r['deliveries']:8d} deliveries in {r['seconds']:5.2f} s: "
                f"{r['deliveries_per_s']:9,.0f}/s, Redis CPU {r['redis_cpu_s']:5.2f} s "
                f"= {r['redis_cpu_s_per_1k'] * 1000:6.2f} ms per 1,000 (lost {r['lost']})",
                flush=True,
            )
    if opts.json:
        setup = {k: getattr(opts, k) for k in ("senders", "receivers", "groups", "messages")}
        Path(opts.json).write_text(json.dumps({"setup": setup, "runs": results}, indent=1))


def plot(paths: list[Path]) -> None:
    """``fanout.png`` beside the first file: per layout, deliveries/s and Redis CPU ms per
    1,000 deliveries (medians), one group of bars per results file (receivers per message)."""
    import statistics

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for label, _, _ in LAYOUTS]
    colors = ["#4c72b0", "#55a868", "#dd8452"]
    files = sorted(
        (json.loads(p.read_text()) for p in paths), key=lambda d: d["setup"]["receivers"]
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(labels)
    for panel, (key, scale, title) in zip(
        axes,
        [
            ("deliveries_per_s", 1.0, "Deliveries per second (median)"),
            ("redis_cpu_s_per_1k", 1000.0, "Redis CPU ms per 1,000 deliveries (median)"),
        ],
        strict=True,
    ):
        for j, label in enumerate(labels):
            values = [
                statistics.median(r[key] for r in d["runs"] if r["layout"] == label) * scale
                for d in files
            ]
            xs = [i + (j - 1) * width for i in range(len(files))]
            panel.bar(xs, values, width, label=label, color=colors[j])
        panel.set_xticks(range(len(files)))
        counts = [d["setup"]["receivers"] for d in files]
        panel.set_xticklabels([f"{n} receiving node{'s' if n > 1 else ''}" for n in counts])
        panel.set_title(title, fontsize=10)
    axes[1].legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(paths[0].with_name("fanout.png"), dpi=100)


def _entry() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("--receive", "--send"):
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        role, url, pubsub, prefix, groups, count = sys.argv[1:7]
        work = receive if role == "--receive" else send
        asyncio.run(work(url, pubsub, prefix, int(groups), int(count)))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--receivers", type=int, default=2)
    parser.add_argument("--groups", type=int, default=256)
    parser.add_argument("--messages", type=int, default=50000, help="per sender")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--plot", nargs="+", help="plot results files written by --json")
    opts = parser.parse_args()
    if opts.plot:
        plot([Path(p) for p in opts.plot])
    else:
        main(opts)


if __name__ == "__main__":
    _entry()
