"""Streaming cost: the same generation from the generator's HTTP endpoint (NDJSON) and
through the gateway (SSE), as a client sees them, alternating run by run.

A TCP tap between gateway and generator notes when each token line leaves the
generator; the client receiving that token through the gateway minus that moment is
the gateway's added latency per token (one process, one clock; it includes the
loopback hop tap → gateway, so it slightly overstates the gateway's share).
"""

from __future__ import annotations

import time
from typing import Any

from benchkit.servers import ServerProcess, peak_rss_mb
from benchkit.stats import Spread, percentile, rate
from benchkit.streams import Tap, direct_run, gateway_run
from benchkit.workload import Workload


def measure_serving(work: Workload, env: dict[str, str]) -> dict[str, Any]:
    body = work.body()
    with ServerProcess("generator.app:create_app", env) as generator:
        tap = Tap(generator.port)
        with ServerProcess(
            "gateway.app:create_app", {**env, "GENERATOR_URL": f"http://127.0.0.1:{tap.port}"}
        ) as gateway:
            direct_run(generator.url, body)  # warm-up both paths (first-call costs)
            gateway_run(gateway.url, body)
            added: list[float] = []
            sides: dict[str, list[tuple[float, float, int]]] = {"generator": [], "gateway": []}
            for _ in range(work.runs):
                started = time.perf_counter()
                times = direct_run(generator.url, body)
                sides["generator"].append((rate(times), times[0] - started, len(times)))
                tap.seen.clear()
                started = time.perf_counter()
                times, by_index = gateway_run(gateway.url, body)
                sides["gateway"].append((rate(times), times[0] - started, len(times)))
                added += [at - tap.seen[i] for i, at in by_index.items() if i in tap.seen]
            rss = peak_rss_mb(generator.pid)
    return {
        **{
            side: {
                "tok_s": Spread.of([r for r, _, _ in runs]).as_dict(),
                "ttft_ms": Spread.of([t * 1e3 for _, t, _ in runs]).as_dict(),
                "tokens": min(n for _, _, n in runs),
            }
            for side, runs in sides.items()
        },
        "added_latency_ms": {
            "p50": percentile(added, 0.5) * 1e3,
            "p99": percentile(added, 0.99) * 1e3,
            "max": max(added) * 1e3,
            "tokens": len(added),
        },
        "generator_peak_rss_mb": rss,
    }
