"""The cost of a forwarded request (no sticky sessions) against a direct one.

Two hubplane nodes share a private Redis and a --token-secret. A long-polling connection is
started on node A; then the same small POST (a hub invocation with no reply) is sent many
times straight to A (the owner), to B (which forwards it to A over Redis), and, for the
node-to-node alternative, through a minimal HTTP relay process that passes each request on to A
over a kept-alive httpx connection (the cheapest an HTTP hop between nodes could be). Prints
the median and p99 round-trip time of each.

    .venv/bin/python load-tests/redis/forward_latency.py [--requests N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port, start_redis, wait_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


RELAY = """
import sys, httpx, uvicorn
target = sys.argv[1]
client = httpx.AsyncClient(timeout=10, trust_env=False)

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    url = target + scope["path"] + "?" + scope["query_string"].decode()
    r = await client.request(scope["method"], url, content=body)
    ctype = r.headers.get("content-type", "text/plain").encode()
    await send({"type": "http.response.start", "status": r.status_code,
                "headers": [(b"content-type", ctype)]})
    await send({"type": "http.response.body", "body": r.content})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
            loop="uvloop", http="httptools")
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    opts = parser.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    redis, redis_url = start_redis()
    procs.append(redis)
    ports = [free_port(), free_port()]
    hubplane = str(Path(sys.executable).parent / "hubplane")
    try:
        for port in ports:
            procs.append(
                subprocess.Popen(
                    [
                        hubplane,
                        "serve",
                        "--port",
                        str(port),
                        "--log-level",
                        "warning",
                        "--redis-url",
                        redis_url,
                        "--token-secret",
                        "bench-secret",
                    ],
                    cwd=ROOT,
                )  # fmt: skip
            )
        relay_port = free_port()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", RELAY, f"http://127.0.0.1:{ports[0]}", str(relay_port)]
            )
        )
        for port in (*ports, relay_port):
            wait_port(port)
        a, b = (f"http://127.0.0.1:{p}/hubs/demo" for p in ports)
        relay = f"http://127.0.0.1:{relay_port}/hubs/demo"
        with httpx.Client(timeout=10, trust_env=False) as http:
            neg = http.post(f"{a}/negotiate?negotiateVersion=1").json()
            token = neg["connectionToken"]
            assert http.get(a, params={"id": token}).status_code == 200  # first poll: A owns it
            hello = b'{"protocol":"json","version":1}\x1e'
            assert http.post(a, params={"id": token}, content=hello).status_code == 200
            message = b'{"type":1,"target":"Echo","arguments":["bench"]}\x1e'
            results: dict[str, list[float]] = {}
            for label, base in (
                ("direct (owner)", a),
                ("via Redis", b),
                ("via HTTP relay", relay),
            ):
                times = []
                for _ in range(opts.requests):
                    started = time.perf_counter()
                    r = http.post(base, params={"id": token}, content=message)
                    times.append((time.perf_counter() - started) * 1000)
                    assert r.status_code == 200, r.text
                results[label] = times
        for label, times in results.items():
            print(
                f"{label:16s} median {statistics.median(times):6.2f} ms  "
                f"p99 {percentile(times, 0.99):6.2f} ms  ({len(times)} POSTs)"
            )
        direct = statistics.median(results["direct (owner)"])
        for label in ("via Redis", "via HTTP relay"):
            added = statistics.median(results[label]) - direct
            print(f"added {label}: {added:.2f} ms at the median")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
