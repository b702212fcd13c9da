"""What the churn harness counts (tests/e2e/churn.py runs the processes).

Per client (``analyse_client``):

- the window runs from the first tick the client saw to the last tick published before the
  end barrier (the publisher stops, then every client gets a few seconds to catch up);
- ``lost``: ticks published in the window that never arrived. A plain client's reconnect
  leaves a hole (it is in no group until it joins again): counted as lost, and reported.
  "Published" means confirmed by Redis: a send that raised (Redis unreachable or silent) is
  "not published", never lost, and was not retried under its number (a retry would be a new
  message). Redis may still have run it (a frozen Redis runs what was written to it before
  the publisher gave up): such a tick arriving once is ``failed_delivered``, not unexpected;
- ``duplicated``: arrivals beyond the first of a tick;
- ``failed``: Echo calls that errored or had no answer within ``echo_timeout``;
- ``ids``: the connection ids the client had. A stateful resume keeps the id; a new one means
  the resume was refused and the client started over (``withAutomaticReconnect``);
- ``resumes``: stateful resumes that answered (a new WebSocket under the same connection);
- ``connected_at_end``: the client's state at the end, and ``receiving_at_end``: whether it
  got the last tick published. A client connected but not receiving is ``stalled``;
- ``max_gap``: the longest silence between two ticks (seconds; for a client that missed the
  last ticks, up to the last one published), and ``outages``: every silence
  longer than ``OUTAGE_FACTOR`` tick periods (seconds from the start, and length): how long
  the client took to move. Per fault step, ``move_seconds`` gives the longest silence of each
  client the node served when it got its signal, from then until the next step.

The second publisher (``node_*`` keys, when a run has one): a client of one node invokes
``Publish(group, seq)`` and the node sends ``NodeTick(seq)`` to the group through its own
outbox. A seq is accepted when the invocation completed without error; every accepted one
must reach every client once. It starts after every client joined, so its window starts at 1.

Per class (``stateful``, ``plain/<transport>``), ``summarise_classes`` adds them up.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

#: A silence longer than this many tick periods is an outage in the report.
OUTAGE_FACTOR = 3

# --------------------------------------------------------------------------- the fleet


@dataclass(frozen=True)
class ClientSpec:
    """One client of the fleet: its transport, protocol and whether it uses stateful reconnect."""

    name: str
    transport: str = "WebSockets"
    protocol: str = "json"
    stateful: bool = False

    @property
    def klass(self) -> str:
        """Its class in the report: ``stateful`` or ``plain/<transport>``."""
        return "stateful" if self.stateful else f"plain/{self.transport}"

    def wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "transport": self.transport,
            "protocol": self.protocol,
            "stateful": self.stateful,
        }


#: Every plain combination the official client runs (SSE carries text only: json).
PLAIN_COMBOS = [
    ("WebSockets", "json"),
    ("WebSockets", "messagepack"),
    ("ServerSentEvents", "json"),
    ("LongPolling", "json"),
    ("LongPolling", "messagepack"),
]


def fleet(stateful: int = 6, plain_each: int = 1) -> list[ClientSpec]:
    """``stateful`` stateful WebSocket clients (json and messagepack in turn) and
    ``plain_each`` plain clients of every transport and protocol."""
    specs = [
        ClientSpec(f"s{i}-{p}", "WebSockets", p, True)
        for i, p in enumerate(("json", "messagepack") * stateful)
        if i < stateful
    ]
    for i in range(plain_each):
        for transport, protocol in PLAIN_COMBOS:
            short = {"WebSockets": "ws", "ServerSentEvents": "sse", "LongPolling": "lp"}[transport]
            specs.append(ClientSpec(f"p{i}-{short}-{protocol}", transport, protocol, False))
    return specs


@dataclass
class ClientRecord:
    """Everything the driver reported about one client."""

    spec: ClientSpec
    seqs: list[int] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # epoch seconds, as seqs
    ids: list[str] = field(default_factory=list)  # distinct connection ids, in order
    # (epoch seconds, pid, why): the node serving it, after each (re)connect or resume
    nodes: list[tuple[float, int, str]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # life cycle, sockets
    echo_failures: list[tuple[int, str]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)  # the driver's finish summary
    node_seqs: list[int] = field(default_factory=list)  # NodeTick(seq), in arrival order
    node_arrivals: list[float] = field(default_factory=list)  # epoch seconds, as node_seqs

    @property
    def pid(self) -> int | None:
        """The pid of the node that served it last (as far as the client knows)."""
        return self.nodes[-1][1] if self.nodes else None

    @property
    def last_seq(self) -> int:
        return max(self.seqs, default=0)

    @property
    def last_node_seq(self) -> int:
        return max(self.node_seqs, default=0)

    def kinds(self, event: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            e for e in self.events if e["event"] == event and (kind is None or e["kind"] == kind)
        ]


# --------------------------------------------------------------------------- counting


def ranges(seqs: Iterable[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5,9"``."""
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and out[-1][1] == s - 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in out)


@dataclass(frozen=True)
class NodeStream:
    """What the node publisher did: the seqs a node accepted, those it refused or never
    answered, and the last accepted one before the end barrier."""

    accepted: frozenset[int]
    failed: frozenset[int]
    last: int


def analyse_stream(
    seqs: Iterable[int],
    published: Collection[int],
    last: int,
    failed: Collection[int] = (),
    first: int | None = None,
) -> dict[str, Any]:
    """One numbered stream as one client saw it: ``lost`` are the ``published`` seqs from
    ``first`` (default: the first one it saw) to ``last`` it never got; ``failed`` seqs (the
    publisher was told no) may arrive once without counting as unexpected."""
    got = [s for s in seqs if s <= last]
    seen = set(got)
    start = first if first is not None else min(seen, default=None)
    expected = {s for s in published if start is not None and start <= s <= last}
    lost = sorted(expected - seen)
    failed_set = set(failed)
    return {
        "first": start,
        "received": len(got),
        "lost": len(lost),
        "lost_seqs": ranges(lost),
        "duplicated": len(got) - len(seen),
        "unexpected": sorted(seen - set(published) - failed_set)[:10],
        "failed_delivered": len(seen & failed_set),
        "receiving_at_end": last in seen or last not in published,
    }


def analyse_client(
    record: ClientRecord,
    published: dict[int, float],
    last: int,
    t0: float,
    period: float,
    failed: Collection[int] = (),
    node: NodeStream | None = None,
) -> dict[str, Any]:
    """What one client lost, got twice, failed, and how it moved (see the module docstring)."""
    ticks = analyse_stream(record.seqs, published, last, failed)
    first = ticks["first"]
    arrivals = sorted(record.arrivals)
    # A client that stopped receiving before the end: silent from its last tick to the last
    # tick published (and beyond: the catch-up wait), however connected it claims to be.
    receiving = bool(ticks["receiving_at_end"])
    if not receiving and arrivals:
        arrivals.append(published[last])
    outages: list[tuple[float, float]] = []
    max_gap = 0.0
    for a, b in zip(arrivals, arrivals[1:], strict=False):
        max_gap = max(max_gap, b - a)
        if b - a > OUTAGE_FACTOR * period:
            outages.append((round(a - t0, 2), round(b - a, 3)))
    inversions = sum(1 for x, y in zip(record.seqs, record.seqs[1:], strict=False) if y < x)
    echo = record.final.get("echo") or {}
    failures = list(echo.get("failed") or [])
    pending = 1 if echo.get("pending") else 0
    reconnects = record.kinds("conn", "reconnected")
    result = {
        "class": record.spec.klass,
        "transport": record.spec.transport,
        "protocol": record.spec.protocol,
        "first": first,
        "received": ticks["received"],
        "lost": ticks["lost"],
        "lost_seqs": ticks["lost_seqs"],
        "duplicated": ticks["duplicated"],
        "failed_delivered": ticks["failed_delivered"],
        "out_of_order": inversions,
        "unexpected": ticks["unexpected"],
        "echo_sent": int(echo.get("sent") or 0),
        "failed": len(failures) + pending,
        "failures": [f[1] for f in failures][:5],
        "ids": list(record.ids),
        "id_changed": len(record.ids) > 1,
        "reconnects": len(reconnects),
        "resumes": len([n for n in record.nodes if n[2] == "where"]),
        "pids": [n[1] for n in record.nodes],
        "closed": bool(record.kinds("conn", "closed")),
        "final_state": record.final.get("state"),
        "connected_at_end": record.final.get("state") == "Connected",
        "receiving_at_end": receiving,
        "max_gap": round(max_gap, 3),
        "outages": outages,
    }
    if node is not None:
        stream = analyse_stream(record.node_seqs, node.accepted, node.last, node.failed, first=1)
        result.update({f"node_{k}": v for k, v in stream.items() if k != "first"})
        result["node_out_of_order"] = sum(
            1 for x, y in zip(record.node_seqs, record.node_seqs[1:], strict=False) if y < x
        )
    return result


def summarise_classes(clients: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per class (``stateful``, ``plain/<transport>``): totals over its clients."""
    classes: dict[str, dict[str, Any]] = {}
    for c in clients.values():
        k = classes.setdefault(
            c["class"],
            {
                "clients": 0,
                "lost": 0,
                "clients_losing": 0,
                "duplicated": 0,
                "failed": 0,
                "echo_sent": 0,
                "id_changed": 0,
                "resumes": 0,
                "reconnects": 0,
                "not_connected": 0,
                "stalled": 0,
                "outages": [],
                "gaps": [],
            },
        )
        k["clients"] += 1
        k["lost"] += c["lost"]
        k["clients_losing"] += 1 if c["lost"] else 0
        k["duplicated"] += c["duplicated"]
        k["failed"] += c["failed"]
        k["echo_sent"] += c["echo_sent"]
        k["id_changed"] += 1 if c["id_changed"] else 0
        k["resumes"] += c["resumes"]
        k["reconnects"] += c["reconnects"]
        k["not_connected"] += 0 if c["connected_at_end"] else 1
        k["stalled"] += 1 if c["connected_at_end"] and not c["receiving_at_end"] else 0
        k["outages"] += [d for _, d in c["outages"]]
        k["gaps"].append(c["max_gap"])
        if c.get("failed_delivered"):
            k["failed_delivered"] = k.get("failed_delivered", 0) + c["failed_delivered"]
        if "node_lost" in c:
            k["node_lost"] = k.get("node_lost", 0) + c["node_lost"]
            k["node_clients_losing"] = k.get("node_clients_losing", 0) + bool(c["node_lost"])
            k["node_duplicated"] = k.get("node_duplicated", 0) + c["node_duplicated"]
    for k in classes.values():
        durations: list[float] = k.pop("outages")
        gaps: list[float] = k.pop("gaps")
        k["outages"] = len(durations)
        k["max_gap_median"] = round(statistics.median(gaps), 3) if gaps else 0.0
        k["max_gap_max"] = round(max(gaps), 3) if gaps else 0.0
    return dict(sorted(classes.items()))


def served_by(record: ClientRecord, at: float) -> int | None:
    """The pid of the node that served the client at ``at`` (epoch seconds), as it knew."""
    pid = None
    for t, p, _ in record.nodes:
        if t > at:
            break
        pid = p
    return pid


def longest_silence(record: ClientRecord, since: float, until: float) -> float:
    """The longest gap between tick arrivals from the last one before ``since`` to the
    first one after ``until`` (or the last one)."""
    arrivals = sorted(record.arrivals)
    before = [a for a in arrivals if a <= since][-1:]
    inside = [a for a in arrivals if since < a <= until]
    after = [a for a in arrivals if a > until][:1]
    window = before + inside + after
    return round(max((b - a for a, b in zip(window, window[1:], strict=False)), default=0.0), 3)


def annotate_moves(fault: dict[str, Any], records: dict[str, ClientRecord], end: float) -> None:
    """Add ``affected`` and ``move_seconds`` to every step of a fault (each has ``pid`` and
    ``signal_at``): the clients the node served then, and the longest silence each saw."""
    steps: list[dict[str, Any]] = fault.get("steps") or [fault]
    for i, step in enumerate(steps):
        if "signal_at" not in step:
            continue
        at = float(step["signal_at"])
        until = float(steps[i + 1]["signal_at"]) if i + 1 < len(steps) else end
        affected = sorted(n for n, r in records.items() if served_by(r, at) == step["pid"])
        moves = {n: longest_silence(records[n], at, until) for n in affected}
        step["affected"] = affected
        step["move_seconds"] = moves
        if moves:
            step["move_median"] = round(statistics.median(moves.values()), 3)
            step["move_max"] = max(moves.values())


@dataclass
class Outcome:
    """One scenario's measurements."""

    scenario: str
    clients: dict[str, dict[str, Any]]
    classes: dict[str, dict[str, Any]]
    fault: dict[str, Any]
    publisher: dict[str, Any]
    seconds: float
    nodes: dict[str, Any] = field(default_factory=dict)  # each node's backplane at the end
    records: dict[str, ClientRecord] = field(repr=False, default_factory=dict)
    #: Purges of live nodes: each node's purged_nodes and reregistrations counters and its
    #: "stopped heartbeating: purged" log lines
    purges: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "seconds": self.seconds,
            "publisher": self.publisher,
            "fault": self.fault,
            "classes": self.classes,
            "clients": self.clients,
            "nodes": self.nodes,
            "purges": self.purges,
        }

    def summary(self) -> dict[str, Any]:
        """The compact form (the JUnit property): totals per class, the fault's timings and
        what each node's backplane dropped as duplicates or saw missing (gaps)."""
        return {
            "scenario": self.scenario,
            "publisher": self.publisher,
            "fault": self.fault,
            "classes": self.classes,
            "backplane": {
                name: {k: stats.get(k) for k in BACKPLANE_SUMMARY}
                for name, stats in self.nodes.items()
                if isinstance(stats, dict)
            },
        }


#: Each node's backplane counters in the compact summary.
BACKPLANE_SUMMARY = ("duplicates_dropped", "gaps", "purged_nodes", "reregistrations")

CLASS_COLUMNS = (
    "clients",
    "lost",
    "clients_losing",
    "duplicated",
    "failed",
    "echo_sent",
    "id_changed",
    "resumes",
    "reconnects",
    "not_connected",
    "stalled",
    "outages",
    "max_gap_median",
    "max_gap_max",
)
#: Shown when some class has them: the node publisher's counts, publishes that failed and
#: arrived all the same.
OPTIONAL_COLUMNS = ("node_lost", "node_clients_losing", "node_duplicated", "failed_delivered")


def summary_table(outcome: Outcome) -> str:
    """The per-class totals as a markdown table (the node publisher's columns when a run
    had one, and ``failed_delivered`` when a failed publish arrived after all)."""
    columns = list(CLASS_COLUMNS)
    for extra in OPTIONAL_COLUMNS:
        if any(extra in k for k in outcome.classes.values()):
            columns.append(extra)
    head = "| class | " + " | ".join(columns) + " |"
    rule = "|---" * (len(columns) + 1) + "|"
    rows = [
        f"| {name} | " + " | ".join(str(k.get(c, 0)) for c in columns) + " |"
        for name, k in outcome.classes.items()
    ]
    return "\n".join([head, rule, *rows])


def client_table(outcome: Outcome) -> str:
    """One line per client: what it lost, got twice, failed and how it moved."""
    cols: tuple[str, ...] = ("class", "protocol", "lost", "lost_seqs", "duplicated", "failed")
    if any("node_lost" in c for c in outcome.clients.values()):
        cols += ("node_lost", "node_lost_seqs", "node_duplicated")
    cols += ("ids", "pids")
    head = "| client | " + " | ".join(cols) + " |"
    rule = "|---" * (len(cols) + 1) + "|"
    rows = []
    for name, c in outcome.clients.items():
        cells = [str(len(c["ids"])) if col == "ids" else str(c.get(col, "–")) for col in cols]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])
