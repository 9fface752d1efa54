"""Prometheus metrics of one generator app (own registry, so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)


class GeneratorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_open_fds, process_resident_memory_bytes...: what leak checks and load
        # tests read (Linux; an empty collector elsewhere).
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "generator_requests",
            "Generation requests by outcome (finish reason, error code, cancelled, rejected).",
            ["outcome"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "generator_prompt_tokens", "Prompt tokens processed.", registry=self.registry
        )
        self.completion_tokens = Counter(
            "generator_completion_tokens", "Tokens generated.", registry=self.registry
        )
        self.decode_steps = Counter(
            "generator_decode_steps",
            "Model forward passes: one per prompt prefill, one per batched decode step "
            "(however many streams it serves); stops growing when the last client leaves.",
            registry=self.registry,
        )
        self.ttft = Histogram(
            "generator_time_to_first_token_seconds",
            "Request arrival to first generated token.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inter_token = Histogram(
            "generator_inter_token_latency_seconds",
            "Time between consecutive generated tokens.",
            buckets=TOKEN_GAP_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "generator_queue_depth", "Requests waiting for a slot.", registry=self.registry
        )
        self.active = Gauge(
            "generator_active_generations", "Generations running now.", registry=self.registry
        )
        self.model_ready = Gauge(
            "generator_model_ready", "1 once the model is loaded.", registry=self.registry
        )
        self.model_load_seconds = Gauge(
            "generator_model_load_seconds",
            "How long loading the model took.",
            registry=self.registry,
        )
