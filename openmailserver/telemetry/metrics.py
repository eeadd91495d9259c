"""Prometheus metrics (`GET /metrics`) of the whole daemon.

Counters move where the events happen (MX acceptance, submission, each
delivery outcome, each failed login); gauges that describe state (queue
depth, open sessions) are read from their source at scrape time.

In a daemon, each worker process writes its counters and histograms to files in
`multiprocess_dir` (prometheus_client's multiprocess mode, which the supervisor
turns on before any worker starts) and a scrape, whichever worker answers it,
adds up every worker's files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _StateCollector:
    """Gauges computed on scrape by callables that return {label value: number}."""

    def __init__(self) -> None:
        self.sources: dict[str, tuple[str, str, Callable[[], dict[str, float]]]] = {}

    def add(self, name: str, documentation: str, label: str, source: Callable[[], dict[str, float]]) -> None:
        self.sources[name] = (documentation, label, source)

    def collect(self):
        for name, (documentation, label, source) in self.sources.items():
            family = GaugeMetricFamily(name, documentation, labels=[label])
            for value, number in source().items():
                family.add_metric([value], number)
            yield family


class Metrics:
    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter("openmailserver_messages_received", "Messages accepted by the MX, per mailbox copy",
                                registry=r)
        self.submitted = Counter("openmailserver_messages_sent", "Messages submitted for sending (SMTP and API)",
                                 ["via"], registry=r)
        self.outcomes = Counter("openmailserver_deliveries", "Outbound delivery attempts by outcome",
                                ["outcome"], registry=r)
        self.auth_failures = Counter("openmailserver_auth_failures", "Failed logins", ["protocol"], registry=r)
        self.delivery_seconds = Histogram("openmailserver_delivery_seconds",
                                          "Time of one outbound SMTP transaction", buckets=LATENCY_BUCKETS,
                                          registry=r)
        self.api_seconds = Histogram("openmailserver_api_request_seconds", "HTTP API latency by route",
                                     ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("openmailserver_queue_depth", "Recipients waiting in the outbound queue",
                                 registry=r, multiprocess_mode="mostrecent")
        self.state = _StateCollector()
        r.register(self.state)

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined, path=str(self.multiprocess_dir))
        combined.register(self.state)
        return generate_latest(combined)
