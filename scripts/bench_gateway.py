#!/usr/bin/env python3
"""Measure what the gateway adds on top of the generator, side by side, with real processes.

Starts the generator (MODEL, default: the converted SmolLM2-135M-Instruct) and the
gateway on free loopback ports, with a byte-for-byte TCP tap between them that notes
when each token line leaves the generator. Then, alternating, it streams the same
greedy generation directly from the generator (NDJSON) and through the gateway (SSE).

Reported:
- added latency per token (p50/p99): the client receiving token i through the gateway
  minus the tap seeing the generator send token i (one process, one clock; it includes
  the loopback hop tap → gateway, so it slightly overstates the gateway's share);
- client tok/s and time to first token, direct vs through the gateway.

Usage: `make bench-gateway` or `.venv/bin/python scripts/bench_gateway.py --runs 5`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx

from benchkit.servers import ServerProcess
from benchkit.stats import percentile, rate
from benchkit.streams import Tap, direct_run, gateway_run
from devtools.metrics import value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per side (alternating)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--prompt", default="Once upon a time")
    args = parser.parse_args()
    body = {"prompt": args.prompt, "max_new_tokens": args.max_new_tokens, "temperature": 0}

    with ServerProcess("generator.app:create_app", {"LOG_LEVEL": "warning"}) as generator:
        tap = Tap(generator.port)
        with ServerProcess(
            "gateway.app:create_app",
            {"GENERATOR_URL": f"http://127.0.0.1:{tap.port}", "LOG_LEVEL": "warning"},
        ) as gateway:
            direct_run(generator.url, body)  # warm-up both paths (first-call costs)
            gateway_run(gateway.url, body)
            added: list[float] = []
            sides: dict[str, list[tuple[float, float]]] = {"generator": [], "gateway": []}
            for _ in range(args.runs):
                started = time.perf_counter()
                times = direct_run(generator.url, body)
                sides["generator"].append((rate(times), times[0] - started))
                tap.seen.clear()
                started = time.perf_counter()
                times, by_index = gateway_run(gateway.url, body)
                sides["gateway"].append((rate(times), times[0] - started))
                added += [at - tap.seen[i] for i, at in by_index.items() if i in tap.seen]
            metrics = httpx.get(gateway.url + "/metrics").text

    report(args, sides, added, metrics)


def report(
    args: argparse.Namespace,
    sides: dict[str, list[tuple[float, float]]],
    added: list[float],
    metrics: str,
) -> None:
    rates = {side: statistics.median(r for r, _ in runs) for side, runs in sides.items()}
    ttfts = {side: statistics.median(t for _, t in runs) * 1e3 for side, runs in sides.items()}
    spread = {
        side: f"{min(r for r, _ in runs):.1f}-{max(r for r, _ in runs):.1f}"
        for side, runs in sides.items()
    }
    inside = {
        part: value(metrics, f"gateway_added_latency_seconds_{part}") for part in ("sum", "count")
    }
    print(f"model: generator default; {args.runs} runs x {args.max_new_tokens} tokens, greedy")
    print(f"{'':24}{'generator alone':>18}{'through gateway':>18}")
    print(f"{'client tok/s (median)':24}{rates['generator']:>18.2f}{rates['gateway']:>18.2f}")
    print(f"{'  min-max':24}{spread['generator']:>18}{spread['gateway']:>18}")
    print(f"{'TTFT ms (median)':24}{ttfts['generator']:>18.1f}{ttfts['gateway']:>18.1f}")
    print(f"gateway tok/s relative to generator: {rates['gateway'] / rates['generator']:.3f}")
    p50, p99 = percentile(added, 0.5) * 1e3, percentile(added, 0.99) * 1e3
    print(
        f"added latency per token over {len(added)} tokens: p50 {p50:.3f} ms, "
        f"p99 {p99:.3f} ms, max {max(added) * 1e3:.3f} ms"
    )
    if inside["count"]:
        mean_ms = inside["sum"] / inside["count"] * 1e3
        print(f"gateway_added_latency_seconds mean (inside the gateway process): {mean_ms:.3f} ms")


if __name__ == "__main__":
    main()
