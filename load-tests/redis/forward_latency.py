"""The cost of a forwarded request (no sticky sessions) against a direct one.

Two hubplane nodes share a private Redis and a --token-secret. A long-polling connection is
started on node A; then the same small POST (a hub invocation with no reply) is sent many
times straight to A (the owner) and to B (which forwards it to A over Redis). Prints the
median and p99 round-trip time of each, and the difference.

    .venv/bin/python load-tests/redis/forward_latency.py [--requests N]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    opts = parser.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    redis_port = free_port()
    exe = shutil.which("redis-server") or sys.exit("redis-server not found")
    procs.append(
        subprocess.Popen(
            [
                exe,
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tempfile.gettempdir(),
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    )
    ports = [free_port(), free_port()]
    hubplane = str(Path(sys.executable).parent / "hubplane")
    try:
        wait(redis_port)
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
                        f"redis://127.0.0.1:{redis_port}/0",
                        "--token-secret",
                        "bench-secret",
                    ],
                    cwd=ROOT,
                )  # fmt: skip
            )
        for port in ports:
            wait(port)
        a, b = (f"http://127.0.0.1:{p}/hubs/demo" for p in ports)
        with httpx.Client(timeout=10, trust_env=False) as http:
            neg = http.post(f"{a}/negotiate?negotiateVersion=1").json()
            token = neg["connectionToken"]
            assert http.get(a, params={"id": token}).status_code == 200  # first poll: A owns it
            hello = b'{"protocol":"json","version":1}\x1e'
            assert http.post(a, params={"id": token}, content=hello).status_code == 200
            message = b'{"type":1,"target":"Echo","arguments":["bench"]}\x1e'
            results: dict[str, list[float]] = {}
            for label, base in (("direct (owner)", a), ("forwarded", b)):
                times = []
                for _ in range(opts.requests):
                    started = time.perf_counter()
                    r = http.post(base, params={"id": token}, content=message)
                    times.append((time.perf_counter() - started) * 1000)
                    assert r.status_code == 200, r.text
                results[label] = times
        for label, times in results.items():
            print(
                f"{label:15s} median {statistics.median(times):6.2f} ms  "
                f"p99 {percentile(times, 0.99):6.2f} ms  ({len(times)} POSTs)"
            )
        direct, forwarded = results["direct (owner)"], results["forwarded"]
        added = statistics.median(forwarded) - statistics.median(direct)
        print(f"added by forwarding: {added:.2f} ms at the median")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
