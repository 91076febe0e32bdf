"""Prometheus metrics of a node (its own registry, so tests can run several nodes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from gateway.node import Node


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rooms = Gauge("mediagate_rooms", "Open rooms", registry=r)
        self.participants = Gauge("mediagate_participants", "Participants in open rooms", ["kind"], registry=r)
        self.events = Counter("mediagate_events_total", "Events emitted", ["event"], registry=r)
        self.loop_lag = Histogram("mediagate_loop_lag_seconds", "How late the asyncio loop woke up",
                                  buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0), registry=r)
        self.loop_lag_max = Gauge("mediagate_loop_lag_max_seconds", "Largest loop lag seen", registry=r)
        self.loop_lag_p99 = Gauge("mediagate_loop_lag_p99_seconds", "p99 loop lag over the last minute", registry=r)
        self.compositions = Gauge("mediagate_compositions", "Running composites", registry=r)
        # a counter (mediagate_composite_frames_total): never goes down when a composition ends
        self.frames = Counter("mediagate_composite_frames", "Composite frames since the node started",
                              ["state"], registry=r)
        self._frames_seen = {"rendered": 0, "skipped": 0}
        self.egress = Gauge("mediagate_egress", "Egress tasks by status", ["status"], registry=r)
        self.ingress = Gauge("mediagate_ingress", "Ingress tasks by status", ["status"], registry=r)

    def observe_lag(self, lag_ms: float) -> None:
        self.loop_lag.observe(lag_ms / 1000)

    def refresh(self, node: Node) -> None:
        rooms = node.rooms.list()
        self.rooms.set(len(rooms))
        counts: dict[str, int] = {}
        for room in rooms:
            for participant in room.participants.values():
                counts[participant.kind.value] = counts.get(participant.kind.value, 0) + 1
        self.participants.clear()
        for kind, count in counts.items():
            self.participants.labels(kind).set(count)
        self.loop_lag_max.set(node.loop_lag.max_ms / 1000)
        self.loop_lag_p99.set(node.loop_lag.percentile(0.99) / 1000)
        if node.media is not None:
            stats = node.media.stats()
            self.compositions.set(stats["compositions"])
            for state in ("rendered", "skipped"):
                total = int(stats[f"frames_{state}"])
                if total > self._frames_seen[state]:
                    self.frames.labels(state).inc(total - self._frames_seen[state])
                    self._frames_seen[state] = total
        for service, gauge in ((node.egress, self.egress), (node.ingress, self.ingress)):
            gauge.clear()
            for status, count in service.status_counts().items():
                gauge.labels(status).set(count)
