"""Prometheus counters and latency histograms, one worker's or all workers' together."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess


class Metrics:
    """Prometheus counters and latency histogram, in a registry of this app's own;
    ``shared``: one of several worker processes, whose ``render`` adds up all of them
    (prometheus_client's multiprocess mode, its files under ``PROMETHEUS_MULTIPROC_DIR``)."""

    def __init__(self, shared: bool = False) -> None:
        self.shared = shared
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mtrec_http_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mtrec_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        if not self.shared:
            return generate_latest(self.registry)
        every = CollectorRegistry()
        multiprocess.MultiProcessCollector(every)  # type: ignore[no-untyped-call]
        return generate_latest(every)
