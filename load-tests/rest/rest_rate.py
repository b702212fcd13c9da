"""REST publish throughput of one node, beside the Emitter's publish rate (issue 20).

One ``hubplane serve`` node on a private redis-server, with the REST API
(``--rest-access-key``) and the benchmark hub at ``/hubs/bench`` (REST hub name ``bench``).
The driver (this process) keeps ``--connections`` keep-alive HTTP/1.1 connections busy, one
request in flight on each, for ``--duration`` seconds after a one-second warm-up, and counts
the 202s:

- ``rest-json``: ``POST /api/hubs/bench/:send`` with a JSON body and one token for the URL (the
  node verifies its signature once and then only checks expiry and audience);
- ``rest-json-fresh``: the same with a different token on every request (each signature
  verified; the tokens are made before the run, so the driver does not pay for them);
- ``rest-msgpack``: the Management SDK's binary body (framed json + messagepack), one token;
- ``emitter``: ``backplane.Emitter`` in the driver process, ``--connections`` tasks each
  awaiting ``clients.all.send(...)`` (confirmed by Redis) in a loop, for comparison;
- ``bare-http``: the same requests to a bare ASGI app on the same uvicorn stack
  (``bare_app.py``), answering 202 without looking: the HTTP ceiling on this machine.

The machines are noisy (other work shares the cores), so the scenarios run interleaved,
``--repeat`` rounds of each, and the report gives each one's median and the ratios of the
medians.

Every send is a broadcast published once on Redis (no clients are connected: the number is
what the node's REST layer and its publish path take, not a fan-out). On two or more cores
the node and Redis run on core 0, the driver on core 1. Afterwards the node's own count of
publishes (``/_hubplane/backplane``) is checked against the 202s.

    .venv/bin/python load-tests/rest/rest_rate.py [--duration 5] [--connections 32]
        [--repeat 3] [--only rest-json,emitter] [--json] [--out DIR]
    .venv/bin/python load-tests/rest/rest_rate.py --report DIR   # rewrite DIR/rest.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "load-tests" / "redis"))

import jwt  # noqa: E402
import msgpack  # noqa: E402
from common import free_port, start_redis, wait_port  # noqa: E402

KEY = "load-test-rest-access-key-0123456789abcdef"
ADMIN = "load-test-admin-token"
HUB_PATH = "/hubs/bench"
WIRE_NAME = "Bench.Hub"
SEND_PATH = "/api/hubs/bench/:send?api-version=2022-06-01"
SCENARIOS = ("bare-http", "rest-json", "rest-json-fresh", "rest-msgpack", "emitter")
ARGS = ["hello", 1]


def pin(cpu: int) -> None:
    """Run the calling process on ``cpu`` when the machine has more than one core."""
    if (os.cpu_count() or 1) > 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def start_node(redis_url: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "load-tests" / "peers"))
    env.pop("REDIS_URL", None)
    command = [
        str(ROOT / ".venv" / "bin" / "hubplane"), "serve",
        "--hub", f"{HUB_PATH}=hubplane_hub:BenchHub",
        "--host", "127.0.0.1", "--port", str(port),
        "--redis-url", redis_url, "--rest-access-key", KEY, "--admin-token", ADMIN,
        "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, env=env, preexec_fn=lambda: pin(0))
    wait_port(port, 20)
    return proc, port


def start_bare() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [sys.executable, str(Path(__file__).with_name("bare_app.py")), str(port)]
    proc = subprocess.Popen(command, cwd=ROOT, preexec_fn=lambda: pin(0))
    wait_port(port, 20)
    return proc, port


def token(port_free_url: str) -> str:
    return jwt.encode({"aud": port_free_url, "exp": int(time.time()) + 3600}, KEY, "HS256")


def request_bytes(body: bytes, content_type: str, auth: str) -> bytes:
    head = (
        f"POST {SEND_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {auth}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def bodies(scenario: str) -> tuple[bytes, str]:
    if scenario == "rest-msgpack":
        text = json.dumps({"type": 1, "target": "Msg", "arguments": ARGS}).encode() + b"\x1e"
        packed = msgpack.packb([1, {}, None, "Msg", ARGS, []])
        framed = bytes([len(packed)]) + packed  # under 128 bytes: a one-byte VarInt
        return msgpack.packb({"json": text, "messagepack": framed}), "application/octet-stream"
    return json.dumps({"target": "Msg", "arguments": ARGS}).encode(), "application/json"


async def http_worker(
    port: int, requests: list[bytes], start: float, stop: float, counts: dict[str, int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    try:
        while True:
            now = time.monotonic()
            if now >= stop:
                break
            writer.write(requests[i % len(requests)])
            i += 1
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            if now >= start:
                counts["ok" if status == 202 else "errors"] += 1
            counts["sent"] += 1
    finally:
        writer.close()


async def run_rest(port: int, scenario: str, connections: int, duration: float) -> dict[str, Any]:
    body, content_type = bodies(scenario)
    url = "http://127.0.0.1" + SEND_PATH
    # More distinct tokens than the node remembers (4096), used in turn: none is cached.
    auths = [token(url)] if scenario != "rest-json-fresh" else [
        jwt.encode({"aud": url, "exp": int(time.time()) + 3600, "n": n}, KEY, "HS256")
        for n in range(8192)
    ]  # fmt: skip
    requests = [request_bytes(body, content_type, a) for a in auths]
    counts = {"ok": 0, "errors": 0, "sent": 0}
    start = time.monotonic() + 1.0
    stop = start + duration
    per = [requests[i::connections] or requests for i in range(connections)]
    await asyncio.gather(
        *(http_worker(port, per[i], start, stop, counts) for i in range(connections))
    )
    return {"scenario": scenario, "rate": counts["ok"] / duration, **counts}


async def run_emitter(redis_url: str, connections: int, duration: float) -> dict[str, Any]:
    from backplane import Emitter

    emitter = Emitter(redis_url, hub=WIRE_NAME, protocols=("json", "messagepack"))
    counts = {"ok": 0, "errors": 0, "sent": 0}
    start = time.monotonic() + 1.0
    stop = start + duration

    async def worker() -> None:
        while (now := time.monotonic()) < stop:
            await emitter.clients.all.send("Msg", *ARGS)
            counts["sent"] += 1
            if now >= start:
                counts["ok"] += 1

    try:
        await asyncio.gather(*(worker() for _ in range(connections)))
    finally:
        await emitter.aclose()
    return {"scenario": "emitter", "rate": counts["ok"] / duration, **counts}


def published(port: int) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/_hubplane/backplane", headers={"authorization": f"Bearer {ADMIN}"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as response:
        return int(json.loads(response.read())["published"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every scenario")
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    parser.add_argument("--out", help="write rest.md and rest.json into this directory")
    parser.add_argument("--report", help="only rewrite rest.md from this directory's rest.json")
    args = parser.parse_args()
    if args.report:
        document = json.loads((Path(args.report) / "rest.json").read_text())
        (Path(args.report) / "rest.md").write_text(report(document))
        return
    scenarios = [s for s in args.only.split(",") if s]
    for scenario in scenarios:
        if scenario not in SCENARIOS:
            sys.exit(f"unknown scenario {scenario!r}: use {', '.join(SCENARIOS)}")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    redis, redis_url = start_redis()
    node, port = start_node(redis_url)
    bare, bare_port = start_bare()
    pin(1)
    runs: list[dict[str, Any]] = []
    try:
        for round_number in range(args.repeat):
            for scenario in scenarios:
                result = run_one(scenario, args, port, bare_port, redis_url)
                result["round"] = round_number + 1
                runs.append(result)
                if args.json:
                    print(json.dumps(result), flush=True)
                else:
                    extra = result.get("node_published")
                    print(
                        f"round {round_number + 1} {scenario:16} {result['rate']:9.0f}/s  "
                        f"({result['ok']} ok, {result['errors']} errors"
                        + (f", node published {extra} of {result['sent']} sent)" if extra else ")"),
                        flush=True,
                    )
    finally:
        for proc in (node, bare, redis):
            proc.terminate()
            proc.wait(10)
    summary = summarize(runs, scenarios)
    if not args.json:
        for row in summary:
            print(f"median {row['scenario']:16} {row['rate']:9.0f}/s")
    if args.out:
        write_report(Path(args.out), runs, summary, args)


def run_one(
    scenario: str, args: argparse.Namespace, port: int, bare_port: int, redis_url: str
) -> dict[str, Any]:
    """One timed run of ``scenario``."""
    if scenario == "emitter":
        return asyncio.run(run_emitter(redis_url, args.connections, args.duration))
    if scenario == "bare-http":
        result = asyncio.run(run_rest(bare_port, "rest-json", args.connections, args.duration))
        result["scenario"] = "bare-http"
        return result
    before = published(port)
    result = asyncio.run(run_rest(port, scenario, args.connections, args.duration))
    time.sleep(0.5)
    result["node_published"] = published(port) - before
    return result


def summarize(runs: list[dict[str, Any]], scenarios: list[str]) -> list[dict[str, Any]]:
    """The median rate of each scenario over its rounds."""
    rows = []
    for scenario in scenarios:
        rates = sorted(r["rate"] for r in runs if r["scenario"] == scenario)
        if rates:
            rows.append({"scenario": scenario, "rate": statistics.median(rates), "rates": rates})
    return rows


def write_report(
    out: Path, runs: list[dict[str, Any]], summary: list[dict[str, Any]], args: argparse.Namespace
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "duration": args.duration,
        "connections": args.connections,
        "repeat": args.repeat,
    }
    document = {"meta": meta, "summary": summary, "runs": runs}
    (out / "rest.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "rest.md").write_text(report(document))


def report(document: dict[str, Any]) -> str:
    """rest.md from what rest.json holds."""
    meta, summary, runs = document["meta"], document["summary"], document["runs"]
    medians = {row["scenario"]: row["rate"] for row in summary}
    rows = [
        f"| `{row['scenario']}` | {row['rate']:,.0f} | "
        + ", ".join(f"{rate:,.0f}" for rate in row["rates"])
        + " |"
        for row in summary
    ]
    ratios = []
    for scenario in ("rest-json", "rest-json-fresh", "rest-msgpack"):
        if scenario not in medians:
            continue
        parts = []
        if medians.get("emitter"):
            parts.append(f"{medians[scenario] / medians['emitter']:.2f} × the emitter")
        if medians.get("bare-http"):
            parts.append(f"{medians[scenario] / medians['bare-http']:.2f} × bare HTTP")
        ratios.append(f"- `{scenario}`: " + ", ".join(parts))
    rest_runs = [r for r in runs if "node_published" in r]
    unpublished = [r for r in rest_runs if r["node_published"] != r["sent"]]
    check = (
        f"In all {len(rest_runs)} REST runs the node published exactly one message per "
        "request sent (its own counter, read from `/_hubplane/backplane`)."
        if not unpublished
        else f"In {len(unpublished)} REST runs the node's publishes differ from the requests "
        "sent: see rest.json."
    )
    return "\n".join(
        [
            "# REST publish throughput (one node) beside the Emitter",
            "",
            f"{meta['date']}, {meta['cpus']} cores, Python {meta['python']}; "
            f"{meta['connections']} keep-alive connections with one request in flight each "
            f"(the emitter: as many concurrent senders), {meta['duration']:g} s per run after "
            f"1 s of warm-up, {meta['repeat']} interleaved rounds. Produced by "
            "`load-tests/rest/rest_rate.py` (its docstring describes each scenario).",
            "",
            "| scenario | median sends/s | the rounds, sorted |",
            "|---|---|---|",
            *rows,
            "",
            *ratios,
            "",
            check,
            "",
        ]
    )


if __name__ == "__main__":
    main()
