"""One call at a time: hubplane's echo beside the bare uvicorn app, interleaved in one run.

    load-tests/.venvs/driver/bin/python load-tests/ab.py [--rounds 7] [--duration 3]
        [--window 1] [--connections 50] [--json FILE] [--profile FILE.svg] [--code NAME=DIR]

Both servers run at once, pinned to the servers' core (the idle one costs nothing); the driver's
connections to both stay open on the other core. Each round runs the bare app and hubplane
once, the order alternating from round to round, so a neighbour's burst of work on the shared
machine falls on both alike. Per side: round trips per second, p50 and p99 latency, server CPU
µs per round trip; the medians over the rounds and the ratios hubplane / bare (of the medians,
and the median of the per-round ratios). bench.py runs the same function as its ``echo1``
scenario.

``--code NAME=DIR`` (repeatable) adds a side NAME: hubplane with ``backplane`` and ``server``
imported from DIR (say ``git archive main backplane server | tar -x -C DIR``), the same venv
otherwise, to compare a change with what it changes in one run. Compare such sides with each
other (one with the tree's own code as DIR too): the import path alone moved hubplane's CPU
per call by several percent here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import DRIVER_CPUS, SERVER_CPUS, Session, log  # noqa: E402
from peers.launch import start_peer  # noqa: E402

SIDES: tuple[tuple[str, str], ...] = (("bare", "raw"), ("hubplane", "signalr-json"))


def _cpu_us(row: dict[str, Any]) -> float | None:
    calls = row["in_window"]
    return row["cpu_s"] * 1e6 / calls if calls else None


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def summarize(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Medians per side over the rounds, and hubplane's ratios to the bare app."""
    out: dict[str, Any] = {}
    for peer in rounds[0]:
        rows = [r[peer] for r in rounds]
        out[peer] = {
            "rates": [r["delivered_per_s"] for r in rows],
            "per_s": _median([r["delivered_per_s"] for r in rows]),
            "p50_ms": _median([r["latency"].get("p50") for r in rows]),
            "p99_ms": _median([r["latency"].get("p99") for r in rows]),
            "cpu_us_per_call": _median([_cpu_us(r) for r in rows]),
            "server_busy": _median([r["server_busy"] for r in rows]),
            "driver_busy": _median([r["driver_busy"] for r in rows]),
            "errors": sum(r["lost"] + r["disconnects"] + r["connect_errors"] for r in rows),
        }
    hub, bare = out["hubplane"], out["bare"]

    def ratio(key: str) -> float | None:
        a, b = hub[key], bare[key]
        return a / b if a is not None and b else None

    out["code_ratios"] = {
        name: {
            "per_s": _median(
                [r[name]["delivered_per_s"] / r["bare"]["delivered_per_s"] for r in rounds]
            ),
            "p99": out[name]["p99_ms"] / bare["p99_ms"] if bare["p99_ms"] else None,
            "cpu": out[name]["cpu_us_per_call"] / bare["cpu_us_per_call"],
        }
        for name in rounds[0]
        if name not in ("bare", "hubplane")
    }
    out["ratio"] = {
        "per_s": ratio("per_s"),
        "per_s_rounds": _median(
            [r["hubplane"]["delivered_per_s"] / r["bare"]["delivered_per_s"] for r in rounds]
        ),
        "p50": ratio("p50_ms"),
        "p99": ratio("p99_ms"),
        "cpu": ratio("cpu_us_per_call"),
    }
    return out


def describe(summary: dict[str, Any]) -> str:
    lines = []
    for peer in [p for p in summary if isinstance(summary[p], dict) and "p50_ms" in summary[p]]:
        s = summary[peer]
        lines.append(
            f"{peer:9} {s['per_s']:>9,.0f}/s  p50 {s['p50_ms']:.3f} ms  p99 {s['p99_ms']:.3f} ms  "
            f"cpu {s['cpu_us_per_call']:.1f} µs/call  busy {s['server_busy']:.2f}  "
            f"rounds {', '.join(f'{x:,.0f}' for x in s['rates'])}"
        )
    r = summary["ratio"]
    lines.append(
        f"hubplane / bare: rate {r['per_s']:.3f} (median of rounds {r['per_s_rounds']:.3f}), "
        f"p50 {r['p50']:.2f}x, p99 {r['p99']:.2f}x, cpu/call {r['cpu']:.2f}x"
    )
    for name, b in summary.get("code_ratios", {}).items():
        lines.append(
            f"{name} / bare: rate (median of rounds) {b['per_s']:.3f}, p99 {b['p99']:.2f}x, "
            f"cpu/call {b['cpu']:.2f}x"
        )
    return "\n".join(lines)


def interleaved(
    logs: Path,
    rounds: int,
    duration: float,
    window: int = 1,
    connections: int = 50,
    grace: float = 0.5,
    profile: Path | None = None,
    code: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Run the echo with ``window`` in flight on both sides, ``rounds`` times, interleaved."""
    params = {"connections": connections, "processes": 1, "window": window}
    servers = {}
    sessions: dict[str, Session] = {}
    code = code or {}
    sides = SIDES + tuple((name, "signalr-json") for name in code)
    try:
        for peer, _ in sides:
            if peer in code:
                with _pythonpath(code[peer]):
                    servers[peer] = start_peer("hubplane", SERVER_CPUS, logs)
            else:
                servers[peer] = start_peer(peer, SERVER_CPUS, logs)
        time.sleep(0.5)  # imports finished, loops idle
        for peer, adapter in sides:
            kind = "hubplane" if peer in code else peer
            session = Session([servers[peer]], [], kind, adapter, "echo", params)
            sessions[peer] = session.__enter__()
        # One short warm-up run each (first connections, caches, allocator).
        for peer, _ in sides:
            sessions[peer].run(min(1.0, duration), grace)
        results: list[dict[str, dict[str, Any]]] = []
        for i in range(rounds):
            order = sides if i % 2 == 0 else sides[::-1]
            one: dict[str, dict[str, Any]] = {}
            for peer, _ in order:
                row = sessions[peer].run(duration, grace)
                row["scenario"] = "echo1" if window == 1 else f"echo{window}"
                row["window"] = window
                one[peer] = row
                log(
                    f"round {i + 1}/{rounds} {peer:9} {row['delivered_per_s']:>9,.0f}/s "
                    f"p50 {row['latency'].get('p50', 0):.3f} ms "
                    f"p99 {row['latency'].get('p99', 0):.3f} ms "
                    f"cpu {_cpu_us(row) or 0:.1f} µs/call busy {row['server_busy']:.2f} "
                    f"driver {row['driver_busy']:.2f}"
                )
            results.append(one)
        if profile is not None:
            for peer in sessions:
                out = profile.with_name(f"{profile.stem}-{peer}{profile.suffix}")
                _profile(sessions[peer], servers[peer].proc.pid, duration, grace, out)
    finally:
        for session in sessions.values():
            session.__exit__(None, None, None)
        for server in servers.values():
            server.stop()
    summary = summarize(results)
    return {
        "window": window,
        "connections": connections,
        "rounds": rounds,
        "duration": duration,
        "runs": results,
        "summary": summary,
    }


@contextlib.contextmanager
def _pythonpath(folder: Path) -> Iterator[None]:
    """Servers started inside import ``backplane`` and ``server`` from ``folder`` first."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(folder.resolve())
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def _profile(session: Session, pid: int, duration: float, grace: float, out: Path) -> None:
    """A closed-loop run of hubplane with py-spy attached (a flame graph, or raw stacks)."""
    pyspy = Path(sys.executable).parent / "py-spy"
    fmt = "raw" if out.suffix == ".txt" else "flamegraph"
    command = ["taskset", "-c", ",".join(map(str, sorted(DRIVER_CPUS))), str(pyspy), "record"]
    command += ["--nonblocking", "--gil", "-r", "500", "-f", fmt, "-o", str(out)]
    command += ["-d", str(max(1, int(duration))), "-p", str(pid)]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.3)
    session.run(duration, grace)
    spy.wait(timeout=duration + 30)
    log(f"profile in {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--window", type=int, default=1, help="calls in flight per connection")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--json", type=Path, help="write the runs and the summary here")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy (--gil: time holding the GIL) of one more run of each side (.svg/.txt)",
    )
    parser.add_argument("--logs", type=Path, default=Path("/tmp/hubplane-ab-logs"))
    parser.add_argument(
        "--code",
        action="append",
        default=[],
        help="NAME=DIR: a side running hubplane's code from DIR",
    )
    args = parser.parse_args(argv)
    result = interleaved(
        args.logs,
        args.rounds,
        args.duration,
        args.window,
        args.connections,
        profile=args.profile,
        code={k: Path(v) for k, _, v in (c.partition("=") for c in args.code)},
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(describe(result["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
