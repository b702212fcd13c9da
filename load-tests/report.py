"""report.md and PNG plots from a results folder's results.json.

load-tests/.venvs/driver/bin/python load-tests/report.py load-tests/results/<date>
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {
    ("bare", "raw"): "bare ASGI",
    ("aiosignalr", "signalr-json"): "aiosignalr",
    ("socketio", "socketio"): "python-socketio",
    ("hubplane", "signalr-json"): "hubplane json",
    ("hubplane", "signalr-msgpack"): "hubplane msgpack",
}
COLORS = {
    "bare ASGI": "#999999",
    "aiosignalr": "#e69f00",
    "python-socketio": "#56b4e9",
    "hubplane json": "#009e73",
    "hubplane msgpack": "#006d4f",
}
SCENARIOS = ("echo", "broadcast", "groups")
UNITS = {"echo": "round trips/s", "broadcast": "deliveries/s", "groups": "deliveries/s"}
BUSY = 0.9  # a side busier than this set the pace


def label(row: dict[str, Any]) -> str:
    name = LABELS.get((row["peer"], row["adapter"]), f"{row['peer']} {row['adapter']}")
    return name if row["nodes"] == 1 else f"{name} ×{row['nodes']}"


def _color(name: str) -> str:
    return COLORS.get(name.split(" ×")[0], "#cc79a7")


def _find(runs: list[dict[str, Any]], scenario: str, name: str) -> dict[str, Any] | None:
    for row in runs:
        if row["scenario"] == scenario and label(row) == name:
            return row
    return None


def _fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _bars(
    ax: Any, groups: list[str], series: dict[str, list[float | None]], ylabel: str, log: bool
) -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ys = [v or 0 for v in values]
        hatch = "//" if "×" in name else None  # several nodes
        ax.bar(xs, ys, width, label=name, color=_color(name), edgecolor="white", hatch=hatch)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)


def plots(out: Path, runs: list[dict[str, Any]]) -> list[str]:
    names = list(dict.fromkeys(label(r) for r in runs if r["scenario"] in SCENARIOS))
    made = []
    # Throughput and CPU per 1,000 messages: one group of bars per scenario.
    for key, title, fname, log in (
        ("delivered_per_s", "Throughput (messages delivered per second)", "throughput.png", False),
        ("cpu_s_per_1k", "Server CPU seconds per 1,000 delivered messages", "cpu.png", True),
    ):
        fig, ax = plt.subplots(figsize=(10, 4.8))
        series = {
            n: [(_find(runs, s, n) or {}).get(key) for s in SCENARIOS]
            for n in names
            if any(_find(runs, s, n) for s in SCENARIOS)
        }
        _bars(ax, list(SCENARIOS), series, key.replace("_", " "), log)
        ax.set_title(title)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        made.append(fname)
    # Latency percentiles: one panel per scenario.
    fig, axes = plt.subplots(1, len(SCENARIOS), figsize=(15, 4.8))
    for ax, scenario in zip(axes, SCENARIOS, strict=True):
        rows = [r for r in runs if r["scenario"] == scenario]
        percentiles = ["p50", "p90", "p99", "p99.9"]
        series = {label(r): [r["latency"].get(p) for p in percentiles] for r in rows}
        _bars(ax, percentiles, series, "ms (log)", True)
        ax.set_title(f"{scenario}: latency percentiles")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)
    made.append("latency.png")
    # Memory per idle connection.
    rows = [r for r in runs if r["scenario"] == "connect"]
    if rows:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        names = [label(r) for r in rows]
        values = [r["idle_bytes_per_connection"] / 1024 for r in rows]
        ax.bar(names, values, color=[_color(n) for n in names])
        ax.axhline(25, color="red", linestyle="--", linewidth=1, label="target 25 KB")
        ax.set_ylabel("KB of server RSS per idle connection")
        ax.set_title(f"Idle memory per connection ({rows[0]['connected']:,} connections)")
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "memory.png", dpi=110)
        plt.close(fig)
        made.append("memory.png")
    return made


def within(row: dict[str, Any]) -> bool:
    """The capacity rule: 99% of messages within 1 s and under 1% errors."""
    return row["latency"].get("p99", 1e9) <= 1000 and row["error_rate"] < 0.01


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | None:
    if a is None or b is None or not b.get(key):
        return None
    return float(a[key]) / float(b[key])


def targets(runs: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(target, wanted, measured, verdict) rows."""
    out = []

    def check(name: str, wanted: float, got: float | None, higher: bool = True) -> None:
        if got is None:
            out.append((name, f"{wanted:g}", "not measured", "–"))
            return
        ok = got >= wanted if higher else got <= wanted
        out.append(
            (name, f"{'≥' if higher else '≤'} {wanted:g}", f"{got:.2f}", "met" if ok else "missed")
        )

    hub = "hubplane json"
    key = "delivered_per_s"
    for scenario, wanted_bare in (("echo", 0.75), ("broadcast", 0.9)):
        h = _find(runs, scenario, hub)
        check(
            f"{scenario}: hubplane / bare ASGI",
            wanted_bare,
            _ratio(h, _find(runs, scenario, "bare ASGI"), key),
        )
        check(
            f"{scenario}: hubplane / aiosignalr",
            1.5 if scenario == "echo" else 2.0,
            _ratio(h, _find(runs, scenario, "aiosignalr"), key),
        )
        if scenario == "echo":
            check(
                "echo: hubplane / python-socketio",
                2.0,
                _ratio(h, _find(runs, scenario, "python-socketio"), key),
            )
    idle = _find(runs, "connect", hub)
    check(
        "idle memory per connection, KB",
        25,
        idle["idle_bytes_per_connection"] / 1024 if idle else None,
        higher=False,
    )
    out.append(("cross-node p99 at half of capacity, ms", "≤ 5", "not measured yet", "–"))
    return out


def write_report(out: Path) -> None:
    """Write report.md and the plots beside results.json."""
    data = json.loads((out / "results.json").read_text())
    meta, runs, redis = data["meta"], data["runs"], data["redis"]
    made = plots(out, runs)
    lines: list[str] = []
    w = lines.append
    w(f"# hubplane benchmarks, {meta['date']}{' (quick)' if meta['quick'] else ''}\n")
    m = meta["machine"]
    w(
        f"Machine: {m['cpus']} cores ({m['processor']}), Linux {m['kernel']}, Python "
        f"{m['python']}. Every server process (and the private redis-server of the three-node "
        f"runs) was pinned with `taskset` to core {meta['pinning']['servers_and_redis']}, the "
        f"driver processes to core {','.join(map(str, meta['pinning']['driver']))}: the three "
        "nodes share one core, so the ×3 rows measure the cost of the backplane, not scaling. "
        f"Each run: {meta['duration']:g} s of load after all connections are up, then "
        f"{meta['grace']:g} s for messages in flight; the whole suite took "
        f"{meta['wall_seconds']:.0f} s. Loopback only.\n"
    )
    w(
        "Load is closed-loop: each sending connection keeps a bounded window of its own "
        "messages in flight (echo: 50 connections × 4; broadcast: one sender × 8 to every "
        "connection; groups: every connection × 1 to its own group of 10) and sends the next "
        "when one comes back to it. Every message carries its send time; latency is from send to "
        "each receipt (HDR histograms, µs precision). CPU is the servers' user+system time "
        "(from /proc) over the load window, per 1,000 delivered messages (echo: round trips). "
        "`server busy` and `driver busy` are the share of one core each side used: a driver "
        "near 1.0 means the driver, not the server, set the pace (marked †). `frames/s` counts "
        "the WebSocket frames that carried them: hubplane puts several hub messages queued for "
        "one client into one frame, the bare app sends one frame per message, so for pipelined "
        "traffic the bare app is a ceiling of frames, not of messages. `capacity rule`: p99 "
        "≤ 1 s and errors < 1% at that load. Errors: messages not delivered by the end of the "
        "grace period, dropped connections and failed connects, over the deliveries expected.\n"
    )
    if meta.get("skipped"):
        w(f"Peers left out (could not be installed): {', '.join(meta['skipped'])}.\n")
    w("## Summary (one node)\n")
    names = list(dict.fromkeys(label(r) for r in runs if r["scenario"] in SCENARIOS))
    w(
        "| peer | echo round trips/s | broadcast deliveries/s | groups deliveries/s | "
        "echo p99 ms | broadcast p99 ms | groups p99 ms |"
    )
    w("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        cells = []
        for key in ("delivered_per_s", "p99"):
            for scenario in SCENARIOS:
                row = _find(runs, scenario, name)
                if row is None:
                    cells.append("–")
                elif key == "p99":
                    cells.append(_fmt(row["latency"].get("p99"), 2))
                else:
                    mark = "†" if row.get("driver_busy", 0) > BUSY else ""
                    cells.append(_fmt(row[key]) + mark)
        w(f"| {name} | " + " | ".join(cells) + " |")
    w("")
    w("## Targets (hubplane json against the peers, same run)\n")
    w("| target | wanted | measured | |")
    w("|---|---|---|---|")
    for row in targets(runs):
        w("| " + " | ".join(row) + " |")
    w("")
    w("## Every run\n")
    w(
        "| scenario | peer | nodes | conns | delivered/s | frames/s | p50 ms | p90 ms | p99 ms | "
        "p99.9 ms | CPU s / 1k msgs | server busy | driver busy | server RSS MB | errors | "
        "capacity rule |"
    )
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in runs:
        if r["scenario"] == "connect":
            continue
        lat = r["latency"]
        w(
            f"| {r['scenario']} | {label(r)} | {r['nodes']} | {r['connected']} | "
            f"{_fmt(r['delivered_per_s'])} | {_fmt(r.get('frames_per_s'))} | "
            f"{_fmt(lat.get('p50'), 2)} | "
            f"{_fmt(lat.get('p90'), 2)} | {_fmt(lat.get('p99'), 2)} | "
            f"{_fmt(lat.get('p99.9'), 2)} | {_fmt(r['cpu_s_per_1k'], 4)} | "
            f"{r['server_busy']:.2f} | {r['driver_busy']:.2f} | {r['rss_mb']:.0f} | "
            f"{r['error_rate']:.2%} | {'within' if within(r) else 'over'} |"
        )
    w("")
    connects = [r for r in runs if r["scenario"] == "connect"]
    if connects:
        w("## Connection ramp and idle memory\n")
        w(
            "Connections opened 64 at a time per driver process (SignalR: negotiate, upgrade, "
            "handshake; Socket.IO: upgrade, open, namespace connect), then left idle 2 s. "
            "Memory is the growth of the server's RSS over a warmed-up baseline, per connection.\n"
        )
        w(
            "| peer | connections | connects/s | connect p50 ms | connect p99 ms | "
            "idle KB per connection | server CPU ms per connect | errors |"
        )
        w("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in connects:
            lat = r["connect_latency"]
            w(
                f"| {label(r)} | {r['connected']:,} | {_fmt(r['connect_rate'])} | "
                f"{_fmt(lat.get('p50'), 1)} | {_fmt(lat.get('p99'), 1)} | "
                f"{r['idle_bytes_per_connection'] / 1024:.1f} | "
                f"{r['cpu_ms_per_connection']:.2f} | {r['error_rate']:.2%} |"
            )
        w("")
    if redis:
        w("## Backplane ceiling: redis-benchmark PUBLISH\n")
        w(
            "A private redis-server (core 0), `redis-benchmark` with 50 clients (core 1), "
            "64-byte messages, no subscribers.\n"
        )
        w("| pipeline | PUBLISH/s |")
        w("|---:|---:|")
        for r in redis:
            w(f"| {r['pipeline']} | {_fmt(r['publish_per_s'])} |")
        w("")
    w("## Plots\n")
    for fname in made:
        w(f"![{fname[:-4]}]({fname})\n")
    (out / "report.md").write_text("\n".join(lines))


if __name__ == "__main__":
    write_report(Path(sys.argv[1]))
