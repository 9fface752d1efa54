"""Prometheus metrics of one gateway app (own registry, so tests can build many apps)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

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
        # process_open_fds, process_resident_memory_bytes...: what leak checks and load
        # tests read (Linux; an empty collector elsewhere).
        ProcessCollector(registry=self.registry)
        self.active_streams = Gauge(
            "gateway_active_streams",
            "Streams held now (opening or relaying), against MAX_STREAMS.",
            registry=self.registry,
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
        self.event_loop_tasks = Gauge(
            "gateway_event_loop_tasks",
            "asyncio tasks alive on the event loop (read at scrape time): back to its idle "
            "value once streams end, or something leaked.",
            registry=self.registry,
        )
        self.event_loop_tasks.set_function(_running_tasks)
        self.added_latency = Histogram(
            "gateway_added_latency_seconds",
            "Per token: generator line received → event handed to the client's connection.",
            buckets=ADDED_LATENCY_BUCKETS,
            registry=self.registry,
        )


def _running_tasks() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # scraped off the event loop's thread (not the HTTP route)
        return float("nan")
