"""Fault runs: nodes rolled (SIGTERM) and killed (SIGKILL), Redis frozen and killed, under
traffic, and what clients lost.

    .venv/bin/python load-tests/faults.py [--quick] [--out DIR]
        [--only rolling,kill,kill-durable,redis-freeze,redis-kill]

It runs with the project's venv (``make venv``; the harness is tests/e2e/churn.py, which needs
hubplane itself, redis-server, nginx and node). Three nodes behind nginx round robin, a
publisher sending ``Tick(seq)`` to a group 20 times a second, and official JS clients through
nginx (stateful WebSockets, plain clients on every transport and protocol), each echoing one
call at a time. Scenarios:

- ``rolling``: every node in turn, ``--rounds`` times over: SIGTERM, exit, start again, pause;
- ``kill``: SIGKILL of the node serving the most stateful clients, started again once the
  others no longer list it in presence;
- ``kill-durable``: the same with ``--durable-resume`` (left out, with the reason, while
  ``hubplane serve`` has no such flag);
- ``redis-freeze``: Redis stopped with SIGSTOP for ``--freeze-seconds`` (8), longer than the
  presence timeout (2 s), then SIGCONT;
- ``redis-kill``: Redis killed with SIGKILL and started again, empty, after ``--redis-down``
  seconds (5).

The Redis scenarios add a second publisher: a client of node 0 invoking ``Publish(group, seq)``
so that ``NodeTick(seq)`` leaves through that node's outbox (kept through the outage); the
Emitter's sends that raise meanwhile are counted as not published (never lost, never retried).
They report when each node noticed, when all were back with their outbox flushed, whether the
nodes ZSET ever lacked a live node (a purge), each node's purged_nodes counter and log lines.

Per scenario and class of client (stateful, plain per transport): ticks lost and duplicated,
failed echoes, connection-id changes, resumes, reconnects, the longest silence (how long the
clients took to move); per fault step the drain's exit time, how long presence still listed
the node (the dead-node detection time after a SIGKILL), the restart time; each node's
backplane counters at the end. Written to ``DIR/faults.json`` and ``DIR/faults.md`` (default
``load-tests/results/<date>-faults``), node logs under ``DIR/logs``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.churn import (  # noqa: E402
    ChurnOptions,
    Outcome,
    client_table,
    fleet,
    freeze_redis,
    kill_busiest,
    kill_redis,
    roll,
    run_scenario,
    serve_supports,
    summary_table,
)

SCENARIOS = ("rolling", "kill", "kill-durable", "redis-freeze", "redis-kill")
REDIS_SCENARIOS = ("redis-freeze", "redis-kill")


def node_flags(o: ChurnOptions) -> str:
    """The flags every node gets, as they matter here (no secrets, no ports)."""
    flags = [
        f"--drain-timeout {o.drain_timeout:g}",
        f"--disconnect-timeout {o.disconnect_timeout:g}",
        f"--presence-heartbeat {o.presence_heartbeat:g}",
        f"--presence-timeout {o.presence_timeout:g}",
        f"--keepalive-interval {o.keepalive_interval:g}",
    ]
    if o.token_secret:
        flags.append("--token-secret (shared)")
    return " ".join(flags + list(o.extra_args))


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def steps_table(outcome: Outcome) -> str:
    """One row per fault step: the node, its timings, the clients it served and their moves."""
    steps: list[dict[str, Any]] = outcome.fault.get("steps") or [outcome.fault]
    cols = [
        ("node", "node"),
        ("signal", "kind"),
        ("exit s", "exit_seconds"),
        ("left presence s", "left_presence_seconds"),
        ("dead node detected s", "dead_node_detected_seconds"),
        ("ready again s", "ready_seconds"),
        ("clients served", "affected"),
        ("move median s", "move_median"),
        ("move max s", "move_max"),
    ]
    head = "| " + " | ".join(c for c, _ in cols) + " |"
    rule = "|---" * len(cols) + "|"
    rows = []
    for step in steps:
        cells = []
        for _, key in cols:
            value = step.get(key, outcome.fault.get("kind") if key == "kind" else None)
            if key == "affected":
                value = len(value or [])
            cells.append("–" if value is None else str(value))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


def redis_table(outcome: Outcome) -> str:
    """The Redis fault: how long, when each node noticed, when all were back, purges."""
    f = outcome.fault
    presence = f.get("presence") or {}
    purged = {n: e.get("purged_nodes") for n, e in outcome.purges.items()}
    lines = sum(len(e.get("lines") or []) for e in outcome.purges.values())
    rows = [
        ("fault", f.get("kind")),
        ("Redis away s", f.get("down_seconds")),
        ("nodes noticed after s", f.get("noticed_seconds")),
        ("all connected, outbox flushed, s after", f.get("recovered_seconds")),
        ("nodes ZSET held all nodes again s after", presence.get("all_back_seconds")),
        ("live nodes missing from the ZSET (data kept: purged)", presence.get("absent") or "none"),
        ("missing once all were back", presence.get("absent_after_back") or "none"),
        ("oldest heartbeat seen after it, s per node", presence.get("max_heartbeat_age")),
        ("purged_nodes per node", purged),
        ('"purged it" log lines', lines),
        ("Emitter sends failed (not published)", outcome.publisher.get("failed")),
        ("failed in s (median, max)", outcome.publisher.get("failed_in_seconds")),
        ("node publisher", outcome.publisher.get("node")),
    ]
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def nodes_table(outcome: Outcome) -> str:
    keys = (
        "published",
        "received",
        "duplicates_dropped",
        "gaps",
        "forwarded",
        "reconnects",
        "purged_nodes",
        "reregistrations",
    )
    head = "| node | " + " | ".join(keys) + " |"
    rule = "|---" * (len(keys) + 1) + "|"
    rows = []
    for name, stats in outcome.nodes.items():
        if isinstance(stats, dict):
            rows.append(f"| {name} | " + " | ".join(str(stats.get(k, "–")) for k in keys) + " |")
    return "\n".join([head, rule, *rows])


def troubled(outcome: Outcome) -> Outcome:
    """The same outcome with only the clients that lost, duplicated, failed or moved."""
    keep = {
        n: c
        for n, c in outcome.clients.items()
        if c["lost"]
        or c["duplicated"]
        or c["failed"]
        or c["id_changed"]
        or c["resumes"]
        or c.get("node_lost")
        or c.get("node_duplicated")
    }
    return Outcome(
        outcome.scenario, keep, outcome.classes, outcome.fault, outcome.publisher, outcome.seconds
    )


def markdown(results: list[dict[str, Any]], setup: dict[str, Any]) -> str:
    lines = [
        "# Fault runs",
        "",
        f"{setup['date']}, hubplane `{setup['commit']}`: three nodes behind nginx "
        f"{setup['balancing']}, "
        f"{setup['clients']} official JS clients ({setup['stateful']} stateful WebSockets, "
        f"{setup['plain_each']} plain of every transport and protocol), `Tick(seq)` to their "
        f"group {setup['rate']:g}/s from an Emitter, one Echo at a time per client. Node "
        f"flags: `{setup['node_args']}`.",
        "",
        "Columns: `lost` ticks published while the client was meant to be a member (from its "
        "first tick to the last one published) that it never got; `duplicated` ticks it got "
        "again; `failed` echoes that errored or never answered; `id_changed` clients that got "
        "a new connection id (a refused resume, or a plain reconnect); `resumes` stateful "
        "resumes that answered; `max_gap` the longest silence of a client, in seconds. Redis "
        "scenarios: `lost` counts only ticks Redis confirmed (an Emitter send that raised is "
        "not published; `failed_delivered` those that arrived all the same), `node_lost` and "
        "`node_duplicated` the NodeTicks node 0 accepted that a client never got, or got twice.",
    ]
    for r in results:
        lines += ["", f"## {r['scenario']}", ""]
        if "skipped" in r:
            lines.append(f"Not run: {r['skipped']}")
            continue
        outcome: Outcome = r["outcome"]
        pub = outcome.publisher
        node_pub = pub.get("node")
        lines += [
            f"{outcome.seconds} s in all; {pub['published']} ticks published "
            f"({pub['failed']} failed)"
            + (
                f"; {node_pub['accepted']} NodeTicks accepted by node 0 "
                f"({node_pub['failed']} refused)."
                if node_pub
                else "."
            ),
            "",
            redis_table(outcome) if r["scenario"] in REDIS_SCENARIOS else steps_table(outcome),
            "",
            summary_table(outcome),
            "",
            "Each node's backplane at the end (`/_hubplane/backplane`):",
            "",
            nodes_table(outcome),
            "",
            "Clients that lost, duplicated, failed or moved:",
            "",
            client_table(troubled(outcome)),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer clients, shorter windows")
    parser.add_argument("--out", type=Path, help="result folder (default results/<date>-faults)")
    parser.add_argument("--only", help=f"comma-separated scenarios: {', '.join(SCENARIOS)}")
    parser.add_argument("--stateful", type=int, help="stateful WebSocket clients")
    parser.add_argument("--plain-each", type=int, help="plain clients per transport/protocol")
    parser.add_argument("--rate", type=float, default=20.0, help="ticks per second")
    parser.add_argument("--rounds", type=int, help="rolling restarts of every node")
    parser.add_argument("--settle", type=float, help="seconds of traffic after the faults")
    parser.add_argument(
        "--freeze-seconds", type=float, default=8.0, help="redis-freeze: SIGSTOP for so long"
    )
    parser.add_argument(
        "--redis-down", type=float, default=5.0, help="redis-kill: seconds until the restart"
    )
    parser.add_argument(
        "--node-args", default="", help="extra `hubplane serve` flags for every node (quoted)"
    )
    parser.add_argument(
        "--affinity",
        action="store_true",
        help="nginx hashes on the connection id instead of round robin (no forwarding)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    stateful = args.stateful if args.stateful is not None else (8 if quick else 24)
    plain_each = args.plain_each if args.plain_each is not None else (2 if quick else 4)
    rounds = args.rounds or (1 if quick else 2)
    settle = args.settle if args.settle is not None else (3.0 if quick else 6.0)
    warmup = 1.5 if quick else 3.0
    only = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    extra = tuple(shlex.split(args.node_args))
    today = datetime.date.today().isoformat()
    # Absolute: nginx resolves its paths from its own prefix, not from here.
    out: Path = (
        args.out or HERE / "results" / f"{today}-faults{'-quick' if quick else ''}"
    ).resolve()
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    deps = subprocess.run(["bash", str(ROOT / "scripts" / "node-deps.sh")], cwd=ROOT)
    if deps.returncode != 0:
        log("installing tests/node packages failed")
        return 1
    specs = fleet(stateful=stateful, plain_each=plain_each)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    setup = {
        "date": today,
        "commit": commit or "?",
        "clients": len(specs),
        "stateful": stateful,
        "plain_each": plain_each,
        "rate": args.rate,
        "rounds": rounds,
        "settle": settle,
        "node_args": node_flags(ChurnOptions(extra_args=extra)),
        "balancing": "hashing on the connection id" if args.affinity else "round robin",
    }
    results: list[dict[str, Any]] = []
    for name in only:
        node_extra = extra
        if name == "kill-durable":
            if not serve_supports("--durable-resume"):
                why = "`hubplane serve --help` lists no --durable-resume"
                log(f"{name}: left out ({why})")
                results.append({"scenario": name, "skipped": why})
                continue
            node_extra = (*extra, "--durable-resume")
        if name == "rolling":
            action = roll(pause=2.0, rounds=rounds)
        elif name == "redis-freeze":
            action = freeze_redis(args.freeze_seconds)
        elif name == "redis-kill":
            action = kill_redis(args.redis_down)
        else:
            action = kill_busiest(True)
        workdir = logs / name
        workdir.mkdir(exist_ok=True)
        log(f"{name}: {len(specs)} clients ...")
        outcome = run_scenario(
            name,
            workdir,
            action,
            specs=specs,
            options=ChurnOptions(extra_args=node_extra, affinity=args.affinity),
            rate=args.rate,
            warmup=warmup,
            settle=settle,
            driver_timeout=300.0,
            node_publisher=name in REDIS_SCENARIOS,
        )
        log(f"{name}: done in {outcome.seconds} s\n{summary_table(outcome)}")
        results.append({"scenario": name, "outcome": outcome})
    (out / "faults.json").write_text(
        json.dumps(
            {
                "setup": setup,
                "scenarios": [
                    {"scenario": r["scenario"], "skipped": r["skipped"]}
                    if "skipped" in r
                    else r["outcome"].as_dict()
                    for r in results
                ],
            },
            indent=1,
        )
    )
    (out / "faults.md").write_text(markdown(results, setup))
    log(f"written: {out / 'faults.md'}, {out / 'faults.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
