"""Prometheus metrics of one gateway app (own registry, so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# The gateway's own work per token is parse + encode + hand to the socket: microseconds.
ADDED_LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.5,
)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.active_streams = Gauge(
            "gateway_active_streams", "Streams being relayed now.", registry=self.registry
        )
        self.streams = Counter(
            "gateway_streams",
            "Finished streams by endpoint and outcome (done, error code, cancelled).",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.relayed_tokens = Counter(
            "gateway_relayed_tokens", "Token events passed on to clients.", registry=self.registry
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors",
            "Failures talking to the generator, by kind (connect, timeout, broken, malformed, "
            "rejected, overloaded, generator_error).",
            ["kind"],
            registry=self.registry,
        )
        self.added_latency = Histogram(
            "gateway_added_latency_seconds",
            "Per token: generator line received → event handed to the client's connection.",
            buckets=ADDED_LATENCY_BUCKETS,
            registry=self.registry,
        )
