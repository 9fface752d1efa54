"""Gateway capacity: how many SSE streams one gateway process holds open at once, and
what that costs it in memory.

One real gateway process (uvicorn) in front of a paced upstream (`devtools.paced_upstream`:
the generator's wire protocol with canned tokens at a fixed pace, no model — a load
source for the gateway only, since the real generator runs at most 64 generations at
once). A client in this process opens N `GET /generate?prompt=…` streams together over
raw sockets (cheap per event, so the client does not starve the gateway of CPU) and
reads each to its end. Each round runs on a fresh gateway, so its VmHWM is that
round's peak.

Reported per round, medians over rounds: streams that ended with `done` and all their
tokens; errors by kind; the peak of streams open at once, seen by the client (response
headers in → terminal event) and by the gateway (`gateway_active_streams` sampled from
/metrics), and whether every stream had its first token before any stream ended (so all
N were streaming at the same time); the gateway's peak RSS (VmHWM) and idle RSS; TTFT
p50/p95 (request sent → first token event); token events/s through the gateway; the
gateway's CPU time over the round per token event (stream setup included).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from benchkit.servers import ServerProcess, peak_rss_mb
from benchkit.stats import Spread, percentile
from gateway.fdlimit import raise_open_files_limit

ACTIVE = re.compile(rb"^gateway_active_streams ([0-9.e+-]+)$", re.MULTILINE)


@dataclass(frozen=True)
class CapacityLoad:
    """One round: `streams` opened together, each `tokens` long, one token every
    `token_interval_s` from the upstream (so a stream lasts about tokens * interval)."""

    streams: int = 1000
    tokens: int = 40
    token_interval_s: float = 0.5
    deadline_s: float = 120.0

    def query(self) -> str:
        return urlencode({"prompt": "capacity", "max_new_tokens": self.tokens})


@dataclass
class StreamResult:
    sent: float = 0.0
    opened: float | None = None  # response headers received
    first_token: float | None = None
    ended: float | None = None  # terminal event received
    tokens: int = 0
    outcome: str = "none"  # "done", or the kind of failure
    detail: str = ""  # what the failure said (one example per kind is reported)


class _SseReader:
    """Counts the events of one SSE body fed in pieces; checks the token sequence."""

    def __init__(self, result: StreamResult, expected_tokens: int) -> None:
        self.result = result
        self.expected = expected_tokens
        self.buffer = b""
        self.finished = False

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while not self.finished and b"\n\n" in self.buffer:
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            self._event(block)

    def _event(self, block: bytes) -> None:
        fields: dict[bytes, bytes] = {}
        for line in block.split(b"\n"):
            name, _, value = line.partition(b": ")
            if name:  # a line starting with ":" is a comment (ping)
                fields[name] = value
        kind = fields.get(b"event")
        result = self.result
        if kind == b"token":
            if fields.get(b"id") != str(result.tokens).encode():
                self._end("token_out_of_sequence")
                return
            if result.first_token is None:
                result.first_token = time.perf_counter()
            result.tokens += 1
        elif kind == b"done":
            usage = json.loads(fields.get(b"data", b"{}")).get("usage", {})
            complete = usage.get("completion_tokens") == result.tokens == self.expected
            self._end("done" if complete else "tokens_missing")
        elif kind == b"error":
            error = json.loads(fields.get(b"data", b"{}"))
            result.detail = str(error.get("message", ""))
            self._end("error_event:" + str(error.get("code", "?")))

    def _end(self, outcome: str) -> None:
        self.result.ended = time.perf_counter()
        self.result.outcome = outcome
        self.finished = True


async def _read_body(reader: asyncio.StreamReader, head: bytes, sse: _SseReader) -> None:
    """Feed the response body to `sse`, undoing chunked transfer encoding if used."""
    chunked = b"transfer-encoding: chunked" in head.lower()
    while not sse.finished:
        if chunked:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                return
            data = (await reader.readexactly(size + 2))[:-2]
        else:
            data = await reader.read(65536)
            if not data:
                return
        sse.feed(data)


async def one_stream(host: str, port: int, target: str, load: CapacityLoad) -> StreamResult:
    """One client: send the request, read the SSE stream to its terminal event."""
    result = StreamResult(sent=time.perf_counter())
    request = f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(load.deadline_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request.encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1].decode()
            result.opened = time.perf_counter()
            if status != "200":
                result.outcome = f"http_{status}"
                return result
            sse = _SseReader(result, load.tokens)
            await _read_body(reader, head, sse)
            if not sse.finished:
                result.outcome = "ended_without_terminal_event"
    except TimeoutError:
        result.outcome = "client_timeout"
    except asyncio.IncompleteReadError:
        result.outcome = "ended_without_terminal_event"
    except OSError as exc:
        result.outcome = ("connect_" if result.opened is None else "reset_") + type(exc).__name__
        result.detail = str(exc)
    finally:
        if writer is not None:
            writer.close()
    return result


def _proc_status(pid: int, key: str) -> float:
    """A /proc/<pid>/status memory line (kB) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024 / 1e6
    return 0.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _active_streams(host: str, port: int) -> float | None:
    """The gateway's own count of streams being relayed (`gateway_active_streams`)."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET /metrics HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        body = await reader.read()
        writer.close()
    except OSError:
        return None
    match = ACTIVE.search(body)
    return float(match.group(1)) if match else None


@dataclass
class _Samples:
    active_peak: float = 0.0
    stop: asyncio.Event = field(default_factory=asyncio.Event)


async def _sample(host: str, port: int, samples: _Samples) -> None:
    while not samples.stop.is_set():
        active = await _active_streams(host, port)
        samples.active_peak = max(samples.active_peak, active or 0.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(samples.stop.wait(), 0.25)


async def run_round(host: str, port: int, pid: int, load: CapacityLoad) -> dict[str, Any]:
    """Open `load.streams` streams at once against a running gateway; summarise them."""
    target = "/generate?" + load.query()
    samples = _Samples()
    sampler = asyncio.create_task(_sample(host, port, samples))
    cpu_before = _cpu_seconds(pid)
    started = time.perf_counter()
    results = await asyncio.gather(
        *(one_stream(host, port, target, load) for _ in range(load.streams))
    )
    wall = time.perf_counter() - started
    cpu = _cpu_seconds(pid) - cpu_before
    samples.stop.set()
    await sampler
    return summarise(results, wall, cpu, samples.active_peak)


def summarise(
    results: list[StreamResult], wall_s: float, gateway_cpu_s: float, active_peak: float
) -> dict[str, Any]:
    outcomes = Counter(r.outcome for r in results)
    ok = outcomes.pop("done", 0)
    examples = {r.outcome: r.detail for r in results if r.outcome != "done"}
    # Peak of streams open at once, seen by the client: +1 at headers, -1 at the end.
    edges = sorted(
        [(r.opened, 1) for r in results if r.opened is not None]
        + [(r.ended, -1) for r in results if r.opened is not None and r.ended is not None]
    )
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    firsts = [r.first_token for r in results if r.first_token is not None]
    ends = [r.ended for r in results if r.ended is not None]
    ttfts = [(r.first_token - r.sent) * 1e3 for r in results if r.first_token is not None]
    events = sum(r.tokens for r in results)
    return {
        "streams": len(results),
        "ok": ok,
        "errors": dict(outcomes),
        "error_examples": examples,
        "peak_open_client": peak,
        "peak_active_gateway": int(active_peak),
        "all_streaming_together": len(firsts) == len(results)
        and bool(ends)
        and max(firsts) < min(ends),
        "held_all_s": (min(ends) - max(firsts)) if firsts and ends else 0.0,
        "ttft_ms_p50": percentile(ttfts, 0.5) if ttfts else None,
        "ttft_ms_p95": percentile(ttfts, 0.95) if ttfts else None,
        "token_events": events,
        "wall_s": wall_s,
        "events_per_s": events / wall_s,
        "gateway_cpu_s": gateway_cpu_s,
    }


def upstream_process(env: dict[str, str], load: CapacityLoad) -> ServerProcess:
    """The paced upstream (see `devtools.paced_upstream`) as its own uvicorn process."""
    return ServerProcess(
        "devtools.paced_upstream:create_app",
        {**env, "PACED_TOKEN_INTERVAL_S": str(load.token_interval_s)},
        ready_path="/readyz",
    )


def measure_capacity(env: dict[str, str], load: CapacityLoad, rounds: int) -> dict[str, Any]:
    # One socket per stream here (two in the gateway, which lifts its own limit too).
    files = raise_open_files_limit()[1]
    per_round: list[dict[str, Any]] = []
    with upstream_process(env, load) as upstream:
        for _ in range(rounds):
            with ServerProcess(
                "gateway.app:create_app",
                {**env, "GENERATOR_URL": upstream.url},
                ready_path="/healthz",
            ) as gateway:
                pid = gateway.pid
                idle = _proc_status(pid, "VmRSS")
                host, port = "127.0.0.1", gateway.port
                outcome = asyncio.run(run_round(host, port, pid, load))
                outcome["idle_rss_mb"] = idle
                outcome["peak_rss_mb"] = peak_rss_mb(pid)
                per_round.append(outcome)
    return {
        "load": {
            "streams": load.streams,
            "tokens": load.tokens,
            "token_interval_s": load.token_interval_s,
            "upstream": "paced stand-in (devtools.paced_upstream), no model",
            "open_files_limit": files,
        },
        "rounds": per_round,
        **_medians(per_round),
    }


def _medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def spread(key: str) -> dict[str, Any]:
        summary: dict[str, Any] = Spread.of([float(r[key]) for r in rounds]).as_dict()
        return summary

    errors: Counter[str] = Counter()
    for r in rounds:
        errors.update(r["errors"])
    return {
        "ok": spread("ok"),
        "errors_total": dict(errors),
        "peak_open_client": spread("peak_open_client"),
        "peak_active_gateway": spread("peak_active_gateway"),
        "all_streaming_together": all(r["all_streaming_together"] for r in rounds),
        "peak_rss_mb": spread("peak_rss_mb"),
        "idle_rss_mb": spread("idle_rss_mb"),
        "ttft_ms_p50": spread("ttft_ms_p50"),
        "ttft_ms_p95": spread("ttft_ms_p95"),
        "events_per_s": spread("events_per_s"),
        "gateway_cpu_us_per_event": Spread.of(
            [r["gateway_cpu_s"] * 1e6 / max(1, r["token_events"]) for r in rounds]
        ).as_dict(),
        "median_held_all_s": statistics.median(r["held_all_s"] for r in rounds),
    }
