"""Prometheus metrics, read from the running engine at scrape time.

A custom collector instead of counters updated on the hot path: the runtime already
counts per node (:class:`engine.node.Counters`), so a scrape costs one snapshot and the
message path costs nothing extra. Node-level numbers reset when a reload restarts a
node; Prometheus' ``rate()`` handles counter resets.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from editor_api.streams import EventHub
    from engine.supervisor import Supervisor
    from nodes.influx_spool import SpoolStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NODE_LABELS = ["flow", "node", "type"]


@runtime_checkable
class Spooling(Protocol):
    """A node with an on-disk spool (influxdb-out); exported as ``klimaflow_spool_*``."""

    def spool_stats(self) -> SpoolStats: ...


class EngineCollector(Collector):
    def __init__(self, supervisor: Supervisor, hub: EventHub) -> None:
        self.supervisor = supervisor
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        sup = self.supervisor
        engine = sup.engine
        received = CounterMetricFamily(
            "klimaflow_node_received_messages", "Messages a node took from its inbox.", labels=_NODE_LABELS
        )
        sent = CounterMetricFamily(
            "klimaflow_node_sent_messages", "Messages a node emitted (one per receiver).", labels=_NODE_LABELS
        )
        errors = CounterMetricFamily("klimaflow_node_errors", "Errors raised by a node.", labels=_NODE_LABELS)
        dropped = CounterMetricFamily(
            "klimaflow_node_dropped_messages", "Messages a node dropped on purpose.", labels=_NODE_LABELS
        )
        busy = CounterMetricFamily(
            "klimaflow_node_processing_seconds",
            "Time a node spent handling messages (divide by received for the mean latency).",
            labels=_NODE_LABELS,
        )
        inbox = GaugeMetricFamily(
            "klimaflow_node_inbox_messages", "Messages waiting in a node's inbox.", labels=_NODE_LABELS
        )
        capacity = GaugeMetricFamily(
            "klimaflow_node_inbox_capacity", "Inbox bound (back-pressure starts here).", labels=_NODE_LABELS
        )
        stat = CounterMetricFamily(
            "klimaflow_node_stat",
            "Node-specific counters (influxdb-out: written, rejected, spooled, replayed, retries, "
            "write_requests, write_seconds).",
            labels=[*_NODE_LABELS, "stat"],
        )
        stat_gauge = GaugeMetricFamily(
            "klimaflow_node_stat_last",
            "Node-specific values that go up and down: stats named last_* "
            "(influxdb-out: last_write_seconds).",
            labels=[*_NODE_LABELS, "stat"],
        )
        spool_bytes = GaugeMetricFamily(
            "klimaflow_spool_bytes", "Bytes held in a node's on-disk spool.", labels=_NODE_LABELS
        )
        spool_points = GaugeMetricFamily(
            "klimaflow_spool_points", "Points held in a node's on-disk spool.", labels=_NODE_LABELS
        )
        status = GaugeMetricFamily(
            "klimaflow_node_status", "1 for the node's current status level.", labels=[*_NODE_LABELS, "level"]
        )
        if engine is not None:
            for rt in list(engine.runtimes.values()):
                labels = [rt.flow_id, rt.node_id, rt.spec.type]
                c = rt.counters
                received.add_metric(labels, c.received)
                sent.add_metric(labels, c.sent)
                errors.add_metric(labels, c.errors)
                dropped.add_metric(labels, c.dropped)
                busy.add_metric(labels, c.processing_seconds)
                inbox.add_metric(labels, rt.inbox.qsize())
                capacity.add_metric(labels, rt.inbox.maxsize)
                status.add_metric([*labels, rt.status.level], 1)
                for name, value in _node_stats(rt.node).items():
                    # A counter that goes down reads as a reset to rate(): last_* are gauges.
                    (stat_gauge if name.startswith("last_") else stat).add_metric([*labels, name], value)
                if isinstance(rt.node, Spooling):
                    spool = rt.node.spool_stats()
                    spool_bytes.add_metric(labels, spool.bytes)
                    spool_points.add_metric(labels, spool.points)
        yield from (
            received,
            sent,
            errors,
            dropped,
            busy,
            inbox,
            capacity,
            stat,
            stat_gauge,
            spool_bytes,
            spool_points,
            status,
        )

        reloads = CounterMetricFamily(
            "klimaflow_reloads",
            "Reloads and deploys by outcome (applied, unchanged, refused).",
            labels=["outcome"],
        )
        for outcome in ("applied", "unchanged", "refused"):
            reloads.add_metric([outcome], self.hub.reloads[outcome])
        yield reloads
        last = sup.last_result
        if last is not None:
            yield GaugeMetricFamily(
                "klimaflow_last_reload_duration_seconds",
                "Duration of the last reload or deploy.",
                value=last.duration,
            )
            yield GaugeMetricFamily(
                "klimaflow_last_reload_ok",
                "1 if the last reload or deploy was applied.",
                value=1 if last.ok else 0,
            )
            yield GaugeMetricFamily(
                "klimaflow_last_reload_timestamp_seconds",
                "When the last reload or deploy started.",
                value=last.started_at,
            )
        info = GaugeMetricFamily(
            "klimaflow_deployment_info", "The running deployment's revision.", labels=["revision"]
        )
        if sup.revision is not None:
            info.add_metric([sup.revision], 1)
        yield info
        yield CounterMetricFamily(
            "klimaflow_unhandled_errors",
            "Errors with no error wire and no catch node (only logged).",
            value=engine.unhandled_errors if engine is not None else 0,
        )
        yield GaugeMetricFamily(
            "klimaflow_event_stream_clients", "Open live event streams.", value=self.hub.clients
        )


def _node_stats(node: Any) -> dict[str, float]:
    stats = getattr(node, "stats", None)
    if not isinstance(stats, dict):
        return {}
    return {
        str(k): float(v) for k, v in stats.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


def render_metrics(supervisor: Supervisor, hub: EventHub) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(supervisor, hub))
    return generate_latest(registry)
