"""Prometheus metrics at ``/metrics``, read from the plain counters of the hubs and the bus.

One process: a custom collector turns the counters into metric families when Prometheus
scrapes, so the per-message paths never call into ``prometheus_client``.

Several worker processes (``--workers N``, or ``PROMETHEUS_MULTIPROC_DIR`` set): any worker
may answer a scrape, so each worker mirrors its counters and gauges into prometheus-client's
multiprocess files (every second and before it answers a scrape), observes its histograms
directly into prometheus-client histograms, and the answer is prometheus-client's
``MultiProcessCollector`` over every worker's files.

No label carries a connection id or a user id.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from backplane.handler import OUTCOMES, HubConnectionHandler
from backplane.redis.durable import DurableStats
from backplane.stats import BATCH_BUCKETS, INVOCATION_BUCKETS, ROUND_TRIP_BUCKETS, Buckets

if TYPE_CHECKING:
    from backplane.redis.node import RedisNode

    from .hubs import HubEndpoint
    from .nosticky import Forwarder

logger = logging.getLogger("hubplane.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class MetricsSource(Protocol):
    """What metrics read of the app (``Hubplane`` is one)."""

    @property
    def endpoints(self) -> Mapping[str, HubEndpoint]:
        """Every hub by path."""
        ...

    @property
    def redis_node(self) -> RedisNode | None:
        """The Redis backplane, if any."""
        ...

    @property
    def forwarder(self) -> Forwarder | None:
        """No-sticky forwarding, if running."""
        ...

    @property
    def draining(self) -> bool:
        """True while the node drains."""
        ...

    def readiness(self) -> str | None:
        """Why the node is not ready, or None."""
        ...


# name: (help, how several workers' values combine: prometheus-client's multiprocess mode)
_GAUGES: dict[str, tuple[str, str]] = {
    "hubplane_connections": ("Open (handshaken) connections on this node.", "livesum"),
    "hubplane_outbound_queued_bytes": (
        "Bytes waiting in the outbound queues of all connections.",
        "livesum",
    ),
    "hubplane_outbound_queued_bytes_max": (
        "Bytes waiting in the largest single outbound queue.",
        "livemax",
    ),
    "hubplane_backplane_connected": ("1 when Redis is reachable.", "livemin"),
    "hubplane_backplane_queued": (
        "Commands waiting for the node's Redis writer (held while Redis is unreachable).",
        "livesum",
    ),
    "hubplane_durable_connections": (
        "Stateful connections recorded in Redis on this node (--durable-resume).",
        "livesum",
    ),
    "hubplane_durable_watched_channels": (
        "Channels this node watches for its recorded connections (publishers keep history).",
        "livesum",
    ),
    "hubplane_ready": ("1 when /readyz answers 200.", "livemin"),
    "hubplane_draining": ("1 while the node drains before it stops.", "livemax"),
    "hubplane_build_info": ("The hubplane version; always 1.", "livemax"),
}
_COUNTERS: dict[str, str] = {
    "hubplane_connects": "Completed handshakes.",
    "hubplane_disconnects": "Connections that ended.",
    "hubplane_messages_received": "Hub messages received from clients (pings included).",
    "hubplane_messages_sent": "Hub messages queued to clients.",
    "hubplane_invocations": "Hub method invocations by outcome.",
    "hubplane_slow_clients": "Connections closed because their outbound buffer overflowed.",
    "hubplane_send_failures": (
        "Writes to a client's WebSocket that failed: the socket was dropped, so a stateful "
        "client resumes and gets them again and a plain connection ends."
    ),
    "hubplane_limit_refusals": (
        "Requests refused by a limit: a group join past --max-groups-per-connection, a stream "
        "past --max-streams-per-connection, a negotiate past --max-pending-negotiations."
    ),
    "hubplane_backplane_published": "Messages published to Redis.",
    "hubplane_backplane_received": "Messages received from Redis.",
    "hubplane_backplane_buffered": "Publishes that had to be held through a Redis outage.",
    "hubplane_backplane_dropped": (
        "Publishes and kept state writes dropped because the outage buffer was full."
    ),
    "hubplane_backplane_queue_dropped": (
        "Commands dropped because the Redis writer's queue was full while Redis was reachable "
        "(--redis-queue-limit: Redis slower than the node)."
    ),
    "hubplane_backplane_reconnects": "Reconnections to Redis.",
    "hubplane_backplane_errors": "Redis commands that failed.",
    "hubplane_backplane_redirections": (
        "Redis Cluster: commands sent again to the master a MOVED or ASK named."
    ),
    "hubplane_backplane_replayed": (
        "Redis Cluster: publishes sent again because the master that took them failed."
    ),
    "hubplane_backplane_channel_moves": (
        "Redis Cluster: channels subscribed again on another master (a failover, a reshard)."
    ),
    "hubplane_resumes": "Stateful reconnects: resumed here, taken from another node, refused.",
    "hubplane_handovers": "Stateful connections handed over to another node.",
    "hubplane_replayed_messages": "Messages sent again to clients after a stateful reconnect.",
    "hubplane_backplane_duplicates_dropped": "Backplane messages heard twice and dropped.",
    "hubplane_backplane_gaps": "Breaks in a publisher's numbering: messages never heard.",
    "hubplane_backplane_dead_nodes": (
        "Dead nodes this node purged, by the signal that showed it: connection (its Redis "
        "connection closed) or heartbeat (its heartbeat went stale)."
    ),
    "hubplane_forwarded_requests": "Requests forwarded to the node that owns the connection.",
    "hubplane_durable_records": "Records of durable connections confirmed by Redis.",
    "hubplane_durable_recorded_messages": "Messages added to durable connections' records.",
    "hubplane_durable_record_failures": (
        "Records that failed (Redis unreachable or slow) and were retried."
    ),
    "hubplane_history_publishes": "Messages published on watched channels with history.",
    "hubplane_revived_messages": (
        "Messages a connection taken up after its node died got from its channels' history."
    ),
}
_HISTOGRAMS: dict[str, tuple[str, tuple[float, ...]]] = {
    "hubplane_invocation_duration_seconds": (
        "How long hub methods ran (streams excluded).",
        INVOCATION_BUCKETS,
    ),
    "hubplane_backplane_batch_size": ("Commands per pipelined Redis round trip.", BATCH_BUCKETS),
    "hubplane_backplane_publish_duration_seconds": (
        "Duration of one pipelined Redis round trip.",
        ROUND_TRIP_BUCKETS,
    ),
}


def version() -> str:
    """The installed hubplane version."""
    try:
        return metadata.version("hubplane")
    except metadata.PackageNotFoundError:
        return "unknown"


def multiprocess_dir() -> str | None:
    """The directory of prometheus-client's multiprocess files, when several workers share."""
    return os.environ.get(MULTIPROC_ENV) or None


def hub_labels(hubplane: MetricsSource) -> dict[str, HubConnectionHandler]:
    """The ``hub`` label of each hub: its class name, with its path if the class is served twice."""
    endpoints = list(hubplane.endpoints.values())
    names = [e.handler.hub_type.__name__ for e in endpoints]
    return {
        name if names.count(name) == 1 else f"{name}{e.path}": e.handler
        for name, e in zip(names, endpoints, strict=True)
    }


class _Families:
    """Metric families filled from one reading of the counters."""

    def __init__(self) -> None:
        self.gauges: dict[str, GaugeMetricFamily] = {}
        self.counters: dict[str, CounterMetricFamily] = {}
        self.histograms: list[HistogramMetricFamily] = []

    def declare(self, name: str, labels: list[str]) -> None:
        """A family that exists before its first sample (alerts see 0, not nothing)."""
        if name in _GAUGES and name not in self.gauges:
            self.gauges[name] = GaugeMetricFamily(name, _GAUGES[name][0], labels=labels)
        elif name in _COUNTERS and name not in self.counters:
            self.counters[name] = CounterMetricFamily(name, _COUNTERS[name], labels=labels)

    def gauge(self, name: str, labels: dict[str, str], value: float) -> None:
        family = self.gauges.get(name)
        if family is None:
            family = self.gauges[name] = GaugeMetricFamily(
                name, _GAUGES[name][0], labels=list(labels)
            )
        family.add_metric(list(labels.values()), value)

    def counter(self, name: str, labels: dict[str, str], value: float) -> None:
        family = self.counters.get(name)
        if family is None:
            family = self.counters[name] = CounterMetricFamily(
                name, _COUNTERS[name], labels=list(labels)
            )
        family.add_metric(list(labels.values()), value)

    def histogram(self, name: str, labels: dict[str, str], buckets: Buckets) -> None:
        family = HistogramMetricFamily(name, _HISTOGRAMS[name][0], labels=list(labels))
        family.add_metric(list(labels.values()), buckets.cumulative(), buckets.total)
        self.histograms.append(family)

    def all(self) -> Iterator[Metric]:
        yield from self.gauges.values()
        yield from self.counters.values()
        yield from self.histograms


def read(hubplane: MetricsSource, histograms: bool = True) -> _Families:
    """Every hubplane metric of this process, read from the counters now."""
    out = _Families()
    by_connection = ["hub", "transport", "protocol"]
    for name in ("hubplane_connections", "hubplane_connects", "hubplane_disconnects"):
        out.declare(name, by_connection)
    for hub, handler in hub_labels(hubplane).items():
        stats = handler.stats
        open_by: dict[tuple[str, str], int] = {}
        queued = largest = 0
        for connection in list(handler.connections.values()):
            protocol = connection.protocol
            if protocol is not None and not connection.closing:
                key = (connection.transport, protocol.name)
                open_by[key] = open_by.get(key, 0) + 1
            size = connection.outbound.size
            queued += size
            largest = max(largest, size)
        for (transport, protocol_name), n in open_by.items():
            labels = {"hub": hub, "transport": transport, "protocol": protocol_name}
            out.gauge("hubplane_connections", labels, n)
        out.gauge("hubplane_outbound_queued_bytes", {"hub": hub}, queued)
        out.gauge("hubplane_outbound_queued_bytes_max", {"hub": hub}, largest)
        for name, table in (
            ("hubplane_connects", stats.connects),
            ("hubplane_disconnects", stats.disconnects),
        ):
            for (transport, protocol_name), n in list(table.items()):
                labels = {"hub": hub, "transport": transport, "protocol": protocol_name}
                out.counter(name, labels, n)
        out.counter("hubplane_messages_received", {"hub": hub}, stats.messages_received)
        out.counter("hubplane_messages_sent", {"hub": hub}, stats.messages_sent)
        for outcome in OUTCOMES:
            labels = {"hub": hub, "outcome": outcome}
            out.counter("hubplane_invocations", labels, stats.invocations.get(outcome, 0))
        out.counter("hubplane_slow_clients", {"hub": hub}, stats.slow_clients)
        out.counter("hubplane_send_failures", {"hub": hub}, stats.send_failures)
        refusals = dict(stats.refusals)
        registry = getattr(handler.lifetime, "registry", None)
        refusals["groups"] = getattr(registry, "refused", 0)
        for limit, n in refusals.items():
            out.counter("hubplane_limit_refusals", {"hub": hub, "limit": limit}, n)
        for outcome, n in stats.resumes.items():
            out.counter("hubplane_resumes", {"hub": hub, "outcome": outcome}, n)
        out.counter("hubplane_handovers", {"hub": hub}, stats.handovers)
        out.counter("hubplane_replayed_messages", {"hub": hub}, stats.replayed)
        out.counter("hubplane_revived_messages", {"hub": hub}, stats.revived_messages)
        if histograms and isinstance(stats.invocation_seconds, Buckets):
            out.histogram(
                "hubplane_invocation_duration_seconds", {"hub": hub}, stats.invocation_seconds
            )
    node = hubplane.redis_node
    if node is not None:
        bus = node.bus
        bstats = bus.stats
        out.gauge("hubplane_backplane_connected", {}, 1 if bus.connected else 0)
        out.gauge("hubplane_backplane_queued", {}, bus.queued)
        out.counter("hubplane_backplane_published", {}, bstats.published)
        out.counter("hubplane_backplane_received", {}, bstats.received)
        out.counter("hubplane_backplane_buffered", {}, bstats.buffered)
        out.counter("hubplane_backplane_dropped", {}, bstats.dropped)
        out.counter("hubplane_backplane_queue_dropped", {}, bstats.overflowed)
        out.counter("hubplane_backplane_reconnects", {}, bstats.reconnects)
        out.counter("hubplane_backplane_errors", {}, bstats.errors)
        # Redis Cluster only (0 on one Redis).
        out.counter("hubplane_backplane_redirections", {}, bstats.redirections)
        out.counter("hubplane_backplane_replayed", {}, bstats.replayed)
        out.counter("hubplane_backplane_channel_moves", {}, bstats.channel_moves)
        heard = node.received.stats
        out.counter("hubplane_backplane_duplicates_dropped", {}, heard.duplicates)
        out.counter("hubplane_backplane_gaps", {}, heard.gaps)
        for signal, count in list(node.dead_nodes.items()):
            out.counter("hubplane_backplane_dead_nodes", {"signal": signal}, count)
        out.counter("hubplane_history_publishes", {}, node.history.kept)
        # Zero without --durable-resume (dashboards and alerts see the same families).
        recorder = node.durable
        dstats = recorder.stats if recorder is not None else DurableStats()
        out.gauge("hubplane_durable_connections", {}, recorder.connections if recorder else 0)
        watched = len(recorder.watching) if recorder is not None else 0
        out.gauge("hubplane_durable_watched_channels", {}, watched)
        out.counter("hubplane_durable_records", {}, dstats.records)
        out.counter("hubplane_durable_recorded_messages", {}, dstats.messages)
        out.counter("hubplane_durable_record_failures", {}, dstats.failures)
        if histograms and isinstance(bstats.batch_sizes, Buckets):
            out.histogram("hubplane_backplane_batch_size", {}, bstats.batch_sizes)
        if histograms and isinstance(bstats.round_trips, Buckets):
            out.histogram("hubplane_backplane_publish_duration_seconds", {}, bstats.round_trips)
    if hubplane.forwarder is not None:
        out.counter("hubplane_forwarded_requests", {}, hubplane.forwarder.forwarded)
    out.gauge("hubplane_ready", {}, 1 if hubplane.readiness() is None else 0)
    out.gauge("hubplane_draining", {}, 1 if hubplane.draining else 0)
    out.gauge("hubplane_build_info", {"version": version()}, 1)
    return out


class HubplaneCollector(Collector):
    """A prometheus-client collector reading one node's counters at scrape time."""

    def __init__(self, hubplane: MetricsSource) -> None:
        self.hubplane = hubplane

    def collect(self) -> Iterator[Metric]:
        yield from read(self.hubplane).all()


class MultiprocessMirror:
    """Copies this worker's counters and gauges into prometheus-client's multiprocess files.

    Counters go up by what they grew since the last copy; gauges are set. Histograms are
    prometheus-client's own: :meth:`attach` puts them in place of the plain buckets.
    """

    def __init__(self) -> None:
        self._metrics: dict[str, Any] = {}
        self._seen: dict[tuple[str, tuple[str, ...]], float] = {}
        self._histograms: dict[str, Histogram] = {}

    def attach(self, hubplane: MetricsSource) -> None:
        """Observe the histograms straight into prometheus-client (shared across workers)."""
        for hub, handler in hub_labels(hubplane).items():
            histogram = self._histogram("hubplane_invocation_duration_seconds", ("hub",))
            handler.stats.invocation_seconds = histogram.labels(hub)
        if hubplane.redis_node is not None:
            stats = hubplane.redis_node.bus.stats
            stats.batch_sizes = self._histogram("hubplane_backplane_batch_size", ())
            stats.round_trips = self._histogram("hubplane_backplane_publish_duration_seconds", ())

    def _histogram(self, name: str, labels: tuple[str, ...]) -> Histogram:
        histogram = self._histograms.get(name)
        if histogram is None:
            help_text, buckets = _HISTOGRAMS[name]
            histogram = self._histograms[name] = Histogram(
                name, help_text, labels, registry=None, buckets=buckets
            )
        return histogram

    def update(self, hubplane: MetricsSource) -> None:
        """Copy the current values (cheap: a few dozen numbers)."""
        families = read(hubplane, histograms=False)
        for gauges in families.gauges.values():
            for sample in gauges.samples:
                gauge = self._metric(Gauge, gauges.name, tuple(sample.labels))
                child = gauge.labels(*sample.labels.values()) if sample.labels else gauge
                child.set(sample.value)
        for family in families.counters.values():
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue  # the _created samples
                counter = self._metric(Counter, family.name, tuple(sample.labels))
                key = (family.name, tuple(sample.labels.values()))
                delta = sample.value - self._seen.get(key, 0.0)
                if delta > 0:
                    self._seen[key] = sample.value
                    child = counter.labels(*sample.labels.values()) if sample.labels else counter
                    child.inc(delta)

    def _metric(self, kind: type[Any], name: str, labels: tuple[str, ...]) -> Any:
        key = f"{kind.__name__}:{name}"
        metric = self._metrics.get(key)
        if metric is None:
            if kind is Gauge:
                help_text, mode = _GAUGES[name]
                metric = Gauge(
                    name,
                    help_text,
                    labels,
                    registry=None,
                    multiprocess_mode=mode,  # type: ignore[arg-type]
                )
            else:
                metric = Counter(name, _COUNTERS[name], labels, registry=None)
            self._metrics[key] = metric
        return metric


class Metrics:
    """The ``/metrics`` endpoint of one app."""

    def __init__(self, hubplane: MetricsSource) -> None:
        self.hubplane = hubplane
        self.registry = CollectorRegistry(auto_describe=False)
        directory = multiprocess_dir()
        self.mirror: MultiprocessMirror | None = None
        if directory is not None:
            from prometheus_client.multiprocess import MultiProcessCollector

            MultiProcessCollector(self.registry, path=directory)  # type: ignore[no-untyped-call]
            self.mirror = MultiprocessMirror()
            self.mirror.attach(hubplane)
        else:
            self.registry.register(HubplaneCollector(hubplane))
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)

    def tick(self) -> None:
        """Called about once a second: keep the multiprocess files fresh for other workers."""
        if self.mirror is not None:
            try:
                self.mirror.update(self.hubplane)
            except Exception:
                logger.exception("updating the multiprocess metrics failed")

    async def endpoint(self, request: Request) -> Response:
        """``GET /metrics``: the Prometheus text format (or OpenMetrics when asked for)."""
        if self.mirror is not None:
            self.mirror.update(self.hubplane)
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        body = encoder(self.registry)
        return Response(
            body,
            media_type=None,
            headers={"content-type": content_type or CONTENT_TYPE_LATEST},
        )
