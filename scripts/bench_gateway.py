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
import asyncio
import json
import re
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.servers import ServerProcess, free_port  # noqa: E402

TOKEN_LINE = re.compile(rb'"type":"token","index":(\d+)')


class Tap:
    """A TCP relay (own thread, own event loop) that timestamps token lines going by."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.seen: dict[int, float] = {}
        self._ready = threading.Event()
        threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True).start()
        self._ready.wait(10)

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self._ready.set()
        async with server:
            await server.serve_forever()

    async def _handle(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pump(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tap: bool
        ) -> None:
            tail = b""
            try:
                while data := await reader.read(65536):
                    if tap:
                        now = time.perf_counter()
                        window = tail + data
                        for match in TOKEN_LINE.finditer(window):
                            self.seen.setdefault(int(match.group(1)), now)
                        tail = window[-64:]
                    writer.write(data)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()

        await asyncio.gather(pump(down_r, up_w, False), pump(up_r, down_w, True))


def direct_run(url: str, body: dict[str, Any]) -> list[float]:
    """Token arrival times reading the generator's NDJSON directly."""
    times, buffer = [], b""
    with httpx.stream("POST", url + "/v1/generate", json=body, timeout=300) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes():
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if json.loads(line)["type"] == "token":
                    times.append(time.perf_counter())
    return times


def gateway_run(url: str, body: dict[str, Any]) -> tuple[list[float], dict[int, float]]:
    """Token arrival times (by index) reading the gateway's SSE stream."""
    arrivals: dict[int, float] = {}
    with (
        httpx.Client(timeout=300) as client,
        connect_sse(client, "GET", url + "/generate", params=body) as source,
    ):
        for sse in source.iter_sse():
            if sse.event == "token":
                arrivals[int(sse.id)] = time.perf_counter()
            elif sse.event == "error":
                raise RuntimeError(sse.data)
    return [arrivals[i] for i in sorted(arrivals)], arrivals


def rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


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
    inside = dict(
        re.findall(r"^gateway_added_latency_seconds_(sum|count) (\S+)$", metrics, re.MULTILINE)
    )
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
    if inside.get("count"):
        mean_ms = float(inside["sum"]) / float(inside["count"]) * 1e3
        print(f"gateway_added_latency_seconds mean (inside the gateway process): {mean_ms:.3f} ms")


if __name__ == "__main__":
    main()
