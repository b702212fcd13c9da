"""What ``--durable-resume`` costs: per delivery and per stateful connection.

Two in-process nodes on a private redis-server: node A holds N stateful connections (json,
the server's handover with or without the recorder), all in one group; node B publishes
``Tick`` to the group at a steady rate. Each connection's outbound buffer has a sink, as a
WebSocket has, that notes when each message leaves. Every connection acknowledges once a
second, as the JS client does. The same load runs without and with ``--durable-resume``:

- node CPU per 1,000 deliveries (this process: both nodes and the sinks, the same in both
  runs, so the difference is the recording);
- Redis CPU per 1,000 deliveries and Redis commands per delivery (``INFO``);
- latency from the publish to the sink (p50, p99);
- Redis memory per durable connection (its entry, log and positions) and of the group's
  history stream;
- idle cost: the same connections without traffic, keep-alive pings every second.

    .venv/bin/python load-tests/redis/durable_cost.py [--connections 200] [--rate 100]
        [--seconds 5] [--redis-url URL] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import orjson  # noqa: E402

from backplane import Hub, HubConnection, HubConnectionHandler, HubOptions  # noqa: E402
from backplane.redis.keys import history_key, resume_key  # noqa: E402
from backplane.redis.node import RedisNode  # noqa: E402
from server.handover import Handover  # noqa: E402
from server.registry import ConnectionRegistry  # noqa: E402
from server.tasks import BackgroundTasks  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import start_redis  # noqa: E402

PATH = "/hubs/bench"
RS = b"\x1e"


class BenchHub(Hub):
    wire_name = "Bench.Durable"


async def redis_info(node: RedisNode) -> dict[str, float]:
    raw = await node.bus.query("INFO", "all")
    info: dict[str, float] = {}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    if isinstance(raw, dict):  # redis-py parsed it
        for key, value in raw.items():
            if isinstance(value, dict) and "calls" in value:
                value = value["calls"]
            if isinstance(value, int | float):
                info[key] = float(value)
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.startswith("cmdstat_"):  # calls=N,usec=...
            value = value.partition(",")[0].partition("=")[2]
        try:
            info[key] = float(value)
        except ValueError:
            pass
    return info


async def run(
    url: str, durable: bool, n: int, rate: float, seconds: float, idle_seconds: float
) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:6]}:"
    options = HubOptions(keepalive_interval=1.0, max_buffer_size=1 << 24)
    holder = RedisNode(url, channel_prefix=prefix)
    sender = RedisNode(url, channel_prefix=prefix)
    protocols = ("json", "messagepack")
    managers = [node.manager(BenchHub.wire_name, protocols) for node in (holder, sender)]
    handlers = [HubConnectionHandler(BenchHub, options, m) for m in managers]
    handover = Handover(
        ConnectionRegistry(),
        holder,
        {PATH: handlers[0]},
        BackgroundTasks(),
        owners=False,
        durable=durable,
        disconnect_timeout=15.0,
    )
    for m in managers:
        await m.start()
    await handover.start()
    loop = asyncio.get_running_loop()
    sent_at: list[float] = []
    latencies: list[float] = []
    connections: list[HubConnection] = []
    tokens: list[str] = []
    for _ in range(n):
        record = handover.registry.create(PATH, None, 1, stateful=True)
        connection = HubConnection(handlers[0], record.connection_id, transport="WebSockets")
        connection.stateful_allowed = True
        record.connection = connection
        handover.remember(record, None)
        await asyncio.sleep(0)
        await connection.receive(orjson.dumps({"protocol": "json", "version": 2}) + RS, False)
        await handlers[0].context.groups.add(record.connection_id, "room")
        counter = {"n": 0}

        def sink(data: bytes, counter: dict[str, int] = counter) -> None:
            now = loop.time()
            for _ in range(data.count(RS)):
                i = counter["n"]
                counter["n"] = i + 1
                if i < len(sent_at):
                    latencies.append(now - sent_at[i])

        connection.outbound.take()
        connection.outbound.sink = sink
        connections.append(connection)
        tokens.append(record.token)
    await asyncio.sleep(1.0)  # watches announced, first records done
    bus = holder.bus
    before = await redis_info(holder)
    cpu = time.process_time()
    started = loop.time()
    period = 1.0 / rate
    count = int(rate * seconds)
    acked_at = started
    group = handlers[1].context.clients.group("room")
    for i in range(count):
        due = started + i * period
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sent_at.append(loop.time())
        await group.send("Tick", i)
        if loop.time() - acked_at >= 1.0:  # each client acknowledges once a second
            acked_at = loop.time()
            for connection in connections:
                buffer = connection.message_buffer
                if buffer is not None and buffer.sent:
                    ack = orjson.dumps({"type": 8, "sequenceId": buffer.sent}) + RS
                    await connection.receive(ack, False)
    deliveries = count * n
    deadline = loop.time() + 10
    while len(latencies) < deliveries and loop.time() < deadline:
        await asyncio.sleep(0.01)
    wall = loop.time() - started
    cpu = time.process_time() - cpu
    after = await redis_info(holder)
    redis_cpu = (after["used_cpu_user"] + after["used_cpu_sys"]) - (
        before["used_cpu_user"] + before["used_cpu_sys"]
    )
    commands = after["total_commands_processed"] - before["total_commands_processed"]
    scripts = after.get("cmdstat_evalsha", 0) - before.get("cmdstat_evalsha", 0)
    memory: dict[str, float] = {}
    if durable:
        sizes = []
        for token in tokens[: min(20, n)]:
            key = resume_key(holder.prefix, token)
            total = 0
            for k in (key, key + b":log", key + b":pos"):
                total += int(await bus.query("MEMORY", "USAGE", k) or 0)
            sizes.append(total)
        memory["record_bytes_per_connection"] = statistics.mean(sizes)
        group_channel = managers[0].channels.group("room")
        memory["group_history_bytes"] = int(
            await bus.query("MEMORY", "USAGE", history_key(holder.prefix, group_channel)) or 0
        )
        memory["group_history_entries"] = int(
            await bus.query("XLEN", history_key(holder.prefix, group_channel)) or 0
        )
    # Idle: no traffic, keep-alive pings every second, for a few seconds.
    idle_before = await redis_info(holder)
    idle_cpu = time.process_time()
    idle_end = loop.time() + idle_seconds
    while loop.time() < idle_end:
        handlers[0].tick(loop.time())
        await asyncio.sleep(0.1)
    idle_cpu = time.process_time() - idle_cpu
    idle_after = await redis_info(holder)
    idle_commands = idle_after["total_commands_processed"] - idle_before["total_commands_processed"]
    recorder = handover.recorder
    result = {
        "durable": durable,
        "connections": n,
        "rate": rate,
        "deliveries": deliveries,
        "delivered": len(latencies),
        "wall_s": round(wall, 2),
        "node_cpu_ms_per_1k": round(cpu * 1e6 / deliveries, 2),
        "redis_cpu_ms_per_1k": round(redis_cpu * 1e6 / deliveries, 2),
        "redis_commands_per_delivery": round(commands / deliveries, 3),
        "redis_script_calls_per_delivery": round(scripts / deliveries, 4),
        "latency_p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "latency_p99_ms": round(statistics.quantiles(latencies, n=100)[98] * 1000, 2)
        if len(latencies) > 100
        else None,
        "idle_redis_commands_per_s": round(idle_commands / idle_seconds, 1),
        "idle_node_cpu_ms_per_s": round(idle_cpu / idle_seconds * 1e3, 2),
        **memory,
    }
    if recorder is not None:
        result["records"] = recorder.stats.records
        result["record_failures"] = recorder.stats.failures
    for connection in connections:
        await connection.transport_closed()
    handover.stop()
    await handover.tasks.close(1.0)
    for m in managers:
        await m.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100.0, help="group messages per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=10.5,
        help="longer than the watch refresh (a quarter of 2 x (15 + 5) s) to include one",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians shown")
    parser.add_argument("--redis-url")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    proc = None
    url = args.redis_url
    if url is None:
        proc, url = start_redis()
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    try:
        for _ in range(args.repeat):
            for durable in (False, True):
                runs[durable].append(
                    asyncio.run(
                        run(url, durable, args.connections, args.rate, args.seconds,
                            args.idle_seconds)
                    )
                )  # fmt: skip
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    if args.json:
        for durable in (False, True):
            for r in runs[durable]:
                print(json.dumps(r))
        return

    def median(durable: bool, key: str) -> Any:
        values = [r[key] for r in runs[durable] if r.get(key) is not None]
        if not values or not isinstance(values[0], int | float):
            return "-"
        return round(statistics.median(values), 4 if key.endswith("_per_delivery") else 2)

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; medians of {args.repeat}")
    keys = [k for k in runs[True][0] if k != "durable"]
    print(f"{'':40} {'off':>10} {'durable':>10}")
    for k in keys:
        print(f"{k:40} {median(False, k)!s:>10} {median(True, k)!s:>10}")


if __name__ == "__main__":
    main()
