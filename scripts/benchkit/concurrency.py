"""Concurrency: N clients start the same generation at once against one generator.

The generator runs with `MAX_CONCURRENCY=8` so every stream is admitted at once (a
large `MAX_QUEUE` so none is refused). Reported per N: aggregate tok/s (all tokens
received over the wall time from the common start to the last token), TTFT p50/p95
over every stream of every run, and fairness: the spread of per-stream decode rates.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from benchkit.servers import ServerProcess, peak_rss_mb
from benchkit.stats import Spread, percentile, rate
from benchkit.streams import direct_run
from benchkit.workload import Workload

SLOTS = 8


def _round(url: str, body: dict[str, Any], streams: int) -> list[tuple[float, list[float]]]:
    """One round: `streams` clients released together; (start, token times) for each."""
    barrier = threading.Barrier(streams)
    results: list[tuple[float, list[float]] | BaseException] = [RuntimeError()] * streams

    def client(i: int) -> None:
        try:
            barrier.wait()
            started = time.perf_counter()
            results[i] = (started, direct_run(url, body))
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=client, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        if isinstance(result, BaseException):
            raise RuntimeError(f"a concurrent stream failed: {result!r}")
    return [r for r in results if not isinstance(r, BaseException)]


def measure_concurrency(
    work: Workload, env: dict[str, str], levels: list[int], runs: int
) -> dict[str, Any]:
    body = work.body()
    server_env = {**env, "MAX_CONCURRENCY": str(SLOTS), "MAX_QUEUE": "256"}
    levels_out: dict[str, Any] = {}
    with ServerProcess("generator.app:create_app", server_env) as generator:
        direct_run(generator.url, body)  # warm-up
        for streams in levels:
            aggregate, ttfts, per_stream, tokens = [], [], [], 0
            for _ in range(runs):
                done = _round(generator.url, body, streams)
                start = min(s for s, _ in done)
                end = max(times[-1] for _, times in done)
                count = sum(len(times) for _, times in done)
                aggregate.append(count / (end - start))
                ttfts += [(times[0] - s) * 1e3 for s, times in done]
                per_stream += [rate(times) for _, times in done]
                tokens = count
            levels_out[str(streams)] = {
                "aggregate_tok_s": Spread.of(aggregate).as_dict(),
                "ttft_ms_p50": percentile(ttfts, 0.5),
                "ttft_ms_p95": percentile(ttfts, 0.95),
                "stream_tok_s": Spread.of(per_stream).as_dict(),
                "tokens_per_round": tokens,
            }
        rss = peak_rss_mb(generator.pid)
    return {"levels": levels_out, "generator_peak_rss_mb": rss}
