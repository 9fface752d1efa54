#!/usr/bin/env python3
"""Load test: concurrent SSE and OpenAI clients against the gateway for a few minutes.

Each SSE client loops until the time is up, alternating `GET /generate?prompt=…` and
`POST /generate` with a short conversation; each OpenAI client streams chat completions
with the official `openai.AsyncOpenAI` client against `{gateway}/v1`. Every request is
read to its end and counted as one of:

- done: the stream ended with `done` (OpenAI: a finish reason, then the usage chunk);
- refused with a retry hint: an `error` event `overloaded` with `retry_after_s`, or a
  503/429 with `Retry-After`; the client waits that long before its next request;
- failed, by kind: any other error (its code), a refusal without a retry hint, a stream
  past `--stream-timeout` (`hung`), one that ends without a terminal event (`truncated`).

Reported: requests, outcomes, TTFT (request sent → first token) and per-stream decode
tok/s (p50/p95), aggregate tok/s, and both processes' resident memory (their
`/metrics`) before the load (after one uncounted warm-up request) and after it (after a
settle), flagged when it grew by more than 10 %. Prints a Markdown table; writes
loadtest.json and loadtest.md. Exit status 1 when any request failed (refusals with a
retry hint are not failures), 2 when the service is not there.

Usage: `make loadtest` (LOADTEST_ARGS="--start --minutes 1"), or
`.venv/bin/python scripts/loadtest.py --help`. Against running servers (`make local-up`)
by default; `--start` starts its own generator and gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import httpx
import openai
from httpx_sse import ServerSentEvent, aconnect_sse
from openai.types.chat import ChatCompletionMessageParam

from bench import machine
from benchkit.servers import ROOT, ServerProcess
from benchkit.stats import Spread, percentile, rate
from devtools.metrics import metric
from devtools.processes import probe
from streamkit.events import DoneEvent, ErrorEvent, TokenEvent, from_sse

Outcome = Literal["done", "refused", "failed"]
RSS = "process_resident_memory_bytes"
MEMORY_GROWTH_WARN = 0.10  # flag a process whose RSS grew more than this over the run
FAILURE_PAUSE_S = 1.0  # after a failure, before the next request (no hot loop on a dead server)
SAMPLE_EVERY_S = 15.0  # progress line and memory sample

# Plain text to continue (GET /generate); a question as a raw prompt often ends at once.
PROMPTS = [
    "Once upon a time",
    "The best way to learn a new language is",
    "Here is a short story about a lighthouse keeper:",
    "The three most useful things in a kitchen are",
    "Paris is the capital of France, and",
    "A cat, described to someone who has never seen one, is",
]
# One user turn (OpenAI chat, every other request).
QUESTIONS = [
    "Explain in two sentences why the sky is blue.",
    "Write a haiku about the sea.",
    "List three uses of a paperclip.",
    "Describe a cat to someone who has never seen one.",
]
CONVERSATIONS: list[list[dict[str, str]]] = [
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "What is my name?"},
    ],
    [
        {"role": "user", "content": "Suggest a name for a bakery."},
        {"role": "assistant", "content": "The Rolling Pin."},
        {"role": "user", "content": "Another one, please, and say why."},
    ],
    [
        {"role": "system", "content": "You answer in one sentence."},
        {"role": "user", "content": "How do plants make food?"},
    ],
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--gateway", default="http://127.0.0.1:8000", help="gateway base URL")
    parser.add_argument(
        "--generator", default="http://127.0.0.1:8001", help="generator base URL (its /metrics)"
    )
    parser.add_argument(
        "--api-key",
        help="key for /v1/* (one of the gateway's API_KEYS); unset: the first of $API_KEYS",
    )
    parser.add_argument("--sse", type=int, default=6, help="concurrent SSE clients")
    parser.add_argument("--openai", type=int, default=2, help="concurrent OpenAI clients")
    parser.add_argument(
        "--minutes", type=float, default=2.0, help="how long clients start requests"
    )
    parser.add_argument("--max-new-tokens", type=int, default=64, help="asked of every request")
    parser.add_argument(
        "--stream-timeout", type=float, default=300.0, help="hard bound on one request, seconds"
    )
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds after the load before the last RSS"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / ".run" / "loadtest", help="output folder"
    )
    parser.add_argument(
        "--start",
        action="store_true",
        help="start a generator (default model) and a gateway on free ports instead",
    )
    args = parser.parse_args(argv)
    if args.sse < 0 or args.openai < 0 or args.sse + args.openai == 0:
        parser.error("--sse and --openai: at least one client in all")
    if args.minutes <= 0 or args.max_new_tokens < 1:
        parser.error("--minutes must be positive and --max-new-tokens at least 1")
    return args


def log(message: str) -> None:
    print(f"[loadtest] {message}", file=sys.stderr, flush=True)


# ---- one request ----------------------------------------------------------------------------


@dataclass
class Result:
    """One request, read to its end."""

    route: str  # sse-get, sse-post, openai-chat
    client: int
    started_s: float  # since the load started
    elapsed_s: float
    outcome: Outcome
    kind: str  # done, overloaded, or the failure's kind
    tokens: int
    ttft_s: float | None
    tok_s: float | None
    retry_after_s: float | None = None
    finish_reason: str | None = None
    detail: str | None = None  # what a failure said or showed


@dataclass
class Timing:
    """Token arrival times of one request, from the moment it was sent."""

    sent: float = field(default_factory=time.perf_counter)
    tokens: list[float] = field(default_factory=list)

    def token(self) -> None:
        self.tokens.append(time.perf_counter())

    def result(
        self,
        route: str,
        client: int,
        origin: float,
        outcome: Outcome,
        kind: str,
        *,
        retry_after_s: float | None = None,
        finish_reason: str | None = None,
        detail: str | None = None,
    ) -> Result:
        return Result(
            route=route,
            client=client,
            started_s=self.sent - origin,
            elapsed_s=time.perf_counter() - self.sent,
            outcome=outcome,
            kind=kind,
            tokens=len(self.tokens),
            ttft_s=self.tokens[0] - self.sent if self.tokens else None,
            tok_s=rate(self.tokens) if len(self.tokens) > 1 else None,
            retry_after_s=retry_after_s,
            finish_reason=finish_reason,
            detail=detail[:300] if detail else None,
        )


@dataclass
class Run:
    """What every client shares: where to go, until when, and the results so far."""

    gateway: str
    max_new_tokens: int
    stream_timeout_s: float
    origin: float  # perf_counter at the start of the load
    deadline: float  # perf_counter after which no new request starts
    results: list[Result] = field(default_factory=list)
    tokens: int = 0  # token events received so far, all requests
    windows: list[dict[str, float]] = field(default_factory=list)  # tok/s per progress tick

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    async def pause(self, result: Result) -> None:
        """Honour a retry hint; breathe after a failure; never past the deadline."""
        wait = 0.0
        if result.outcome == "refused" and result.retry_after_s is not None:
            wait = result.retry_after_s
        elif result.outcome == "failed":
            wait = FAILURE_PAUSE_S
        if wait > 0:
            await asyncio.sleep(max(0.0, min(wait, self.remaining())))


async def sse_request(run: Run, http: httpx.AsyncClient, client: int, n: int) -> Result:
    """One `/generate` stream: GET with a prompt, or POST with a conversation."""
    route = "sse-get" if (client + n) % 2 == 0 else "sse-post"
    if route == "sse-get":
        params = {"prompt": PROMPTS[(client + n // 2) % len(PROMPTS)]}
        request: dict[str, Any] = {"method": "GET", "params": {**params, **_limits(run)}}
    else:
        messages = CONVERSATIONS[(client + n // 2) % len(CONVERSATIONS)]
        request = {"method": "POST", "json": {"messages": messages, **_limits(run)}}
    timing = Timing()

    def end(outcome: Outcome, kind: str, **extra: Any) -> Result:
        return timing.result(route, client, run.origin, outcome, kind, **extra)

    terminal: DoneEvent | ErrorEvent | None = None
    method = request.pop("method")
    try:
        async with asyncio.timeout(run.stream_timeout_s):
            async with aconnect_sse(http, method, run.gateway + "/generate", **request) as source:
                response = source.response
                if response.status_code != 200:
                    await response.aread()
                    kind = f"http_{response.status_code}:{_error_code(response)}"
                    return end("failed", kind, detail=response.text)
                async for sse in source.aiter_sse():
                    if not sse.data:
                        # No event, per the SSE spec; httpx_sse yields one when a comment
                        # (`: ping`) ends a block after an `id:` was seen.
                        continue
                    try:
                        event = from_sse(sse.event, sse.data)
                    except ValueError:  # not JSON, or not an event (pydantic's error is one)
                        return end("failed", "malformed_event", detail=_shown(sse))
                    if terminal is not None:
                        return end("failed", "event_after_terminal", detail=_shown(sse))
                    if isinstance(event, TokenEvent):
                        timing.token()
                        run.tokens += 1
                    elif isinstance(event, DoneEvent | ErrorEvent):
                        terminal = event
    except TimeoutError:
        return end("failed", "hung", detail=f"{len(timing.tokens)} tokens before the bound")
    except httpx.HTTPError as error:
        return end("failed", f"transport:{type(error).__name__}", detail=str(error))
    if isinstance(terminal, DoneEvent):
        return end("done", "done", finish_reason=terminal.finish_reason)
    if isinstance(terminal, ErrorEvent):
        if terminal.code == "overloaded" and terminal.retry_after_s is not None:
            return end("refused", "overloaded", retry_after_s=float(terminal.retry_after_s))
        if terminal.code == "overloaded":
            return end("failed", "overloaded_without_retry_after", detail=terminal.message)
        return end("failed", f"error:{terminal.code}", detail=terminal.message)
    return end("failed", "truncated")


def _shown(sse: ServerSentEvent) -> str:
    return f"event: {sse.event!r} id: {sse.id!r} data: {sse.data!r}"


def _limits(run: Run) -> dict[str, Any]:
    return {"max_new_tokens": run.max_new_tokens}


def _error_code(response: httpx.Response) -> str:
    """The `code` of a JSON error body (`{"error": {"code": …}}`), else `?`."""
    try:
        body = response.json()
    except ValueError:
        return "?"
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return str(code) if code else "?"


async def openai_request(
    run: Run, api: openai.AsyncOpenAI, model: str, client: int, n: int
) -> Result:
    """One streamed chat completion, usage included, with the official client."""
    route = "openai-chat"
    # Alternately one user turn and a conversation.
    if (client + n) % 2 == 0:
        turns = [{"role": "user", "content": QUESTIONS[(client + n // 2) % len(QUESTIONS)]}]
    else:
        turns = CONVERSATIONS[(client + n // 2) % len(CONVERSATIONS)]
    messages = [_message(turn) for turn in turns]
    timing = Timing()

    def end(outcome: Outcome, kind: str, **extra: Any) -> Result:
        return timing.result(route, client, run.origin, outcome, kind, **extra)

    finish: str | None = None
    usage = False
    try:
        async with asyncio.timeout(run.stream_timeout_s):
            stream = await api.chat.completions.create(
                model=model,
                messages=messages,
                max_tokens=run.max_new_tokens,
                stream=True,
                stream_options={"include_usage": True},
            )
            async with stream:
                async for chunk in stream:
                    usage = usage or chunk.usage is not None
                    for choice in chunk.choices:
                        if choice.finish_reason is not None:
                            finish = choice.finish_reason
                        elif choice.delta.role is None and choice.delta.content is not None:
                            timing.token()
                            run.tokens += 1
    except TimeoutError:
        return end("failed", "hung", detail=f"{len(timing.tokens)} tokens before the bound")
    except openai.APIStatusError as error:
        retry_after = _seconds(error.response.headers.get("retry-after"))
        if error.status_code in (429, 503):
            if retry_after is not None:
                return end("refused", f"http_{error.status_code}", retry_after_s=retry_after)
            kind = f"http_{error.status_code}_without_retry_after:{error.code}"
            return end("failed", kind, detail=error.message)
        return end("failed", f"http_{error.status_code}:{error.code}", detail=error.message)
    except openai.APIConnectionError as error:  # APITimeoutError included
        return end("failed", f"transport:{type(error).__name__}", detail=str(error))
    except openai.APIError as error:  # a `data: {"error": …}` chunk in the stream
        if error.code == "overloaded":
            return end("failed", "overloaded_without_retry_after", detail=error.message)
        return end("failed", f"error:{error.code}", detail=error.message)
    if finish is None:
        return end("failed", "truncated")
    if not usage:
        return end("failed", "missing_usage")
    return end("done", "done", finish_reason=finish)


def _message(turn: dict[str, str]) -> ChatCompletionMessageParam:
    role, content = turn["role"], turn["content"]
    if role == "system":
        return {"role": "system", "content": content}
    if role == "assistant":
        return {"role": "assistant", "content": content}
    return {"role": "user", "content": content}


def _seconds(header: str | None) -> float | None:
    """A `Retry-After` in seconds (an HTTP date is not a hint this client reads)."""
    try:
        return float(header) if header is not None else None
    except ValueError:
        return None


# ---- the clients --------------------------------------------------------------------------


async def client_loop(run: Run, request: Callable[[int], Awaitable[Result]]) -> None:
    n = 0
    while run.remaining() > 0:
        result = await request(n)
        run.results.append(result)
        if result.outcome == "failed":
            log(f"{result.route} client {result.client}: {result.kind}: {result.detail}")
        n += 1
        await run.pause(result)


@dataclass
class Memory:
    """Resident memory of both processes over the run, from their /metrics, in bytes."""

    gateway_url: str
    generator_url: str
    samples: list[dict[str, float | None]] = field(default_factory=list)

    async def sample(self, at_s: float) -> dict[str, float | None]:
        gateway, generator = await asyncio.gather(_rss(self.gateway_url), _rss(self.generator_url))
        point = {"at_s": at_s, "gateway": gateway, "generator": generator}
        self.samples.append(point)
        return point


async def _rss(url: str) -> float | None:
    try:
        return await asyncio.to_thread(metric, url, RSS)
    except (OSError, LookupError, ValueError):
        return None


async def progress(run: Run, memory: Memory) -> None:
    """Every SAMPLE_EVERY_S: a line of counts and the tok/s since the last one (kept in
    `run.windows`), and a memory sample."""
    last_at, last_tokens = time.perf_counter(), run.tokens
    while True:
        await asyncio.sleep(SAMPLE_EVERY_S)
        now, tokens = time.perf_counter(), run.tokens
        window = (tokens - last_tokens) / (now - last_at)
        last_at, last_tokens = now, tokens
        run.windows.append({"at_s": now - run.origin, "tok_s": window})
        point = await memory.sample(now - run.origin)
        counts = Counter(r.outcome for r in run.results)
        log(
            f"{point['at_s']:.0f}s: {len(run.results)} requests, {counts['done']} done, "
            f"{counts['refused']} refused, {counts['failed']} failed; {window:.1f} tok/s "
            f"since the last line; RSS gateway {_mb(point['gateway'])}, "
            f"generator {_mb(point['generator'])}"
        )


async def load(args: argparse.Namespace, gateway: str, generator: str) -> dict[str, Any]:
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(10.0, read=None),  # the stream's bound is asyncio's
        limits=httpx.Limits(max_connections=args.sse + 10, max_keepalive_connections=args.sse),
    )
    api = openai.AsyncOpenAI(
        base_url=gateway + "/v1",
        api_key=args.api_key or (os.environ.get("API_KEYS") or "unused").split(",")[0].strip(),
        max_retries=0,
        timeout=args.stream_timeout,
    )
    async with http, api:
        model = await _model_name(api)
        warm = Run(gateway, 8, args.stream_timeout, time.perf_counter(), time.perf_counter())
        warmup = await sse_request(warm, http, 0, 0)  # first-request costs, not counted
        if warmup.outcome != "done":
            log(f"warm-up request ended {warmup.outcome} ({warmup.kind}); going on")
        memory = Memory(gateway, generator)
        start = perf = time.perf_counter()
        run = Run(
            gateway, args.max_new_tokens, args.stream_timeout, start, start + args.minutes * 60
        )
        await memory.sample(0.0)
        loads = [os.getloadavg()[0]]
        log(
            f"{args.sse} SSE + {args.openai} OpenAI clients for {args.minutes:g} min, "
            f"{args.max_new_tokens} new tokens each request"
        )
        clients = [client_loop(run, partial(sse_request, run, http, i)) for i in range(args.sse)]
        clients += [
            client_loop(run, partial(openai_request, run, api, model, i))
            for i in range(args.openai)
        ]
        ticker = asyncio.create_task(progress(run, memory))
        try:
            await asyncio.gather(*clients)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        wall_s = time.perf_counter() - perf
        loads.append(os.getloadavg()[0])
        log(f"clients stopped after {wall_s:.1f}s; settling {args.settle:g}s for the last RSS")
        await asyncio.sleep(args.settle)
        await memory.sample(time.perf_counter() - start)
    return summarize(args, run, wall_s, memory.samples, model, loads)


async def _model_name(api: openai.AsyncOpenAI) -> str:
    with contextlib.suppress(openai.APIError):
        async for card in api.models.list():
            return card.id
    return "default"


# ---- the report ---------------------------------------------------------------------------


def summarize(
    args: argparse.Namespace,
    run: Run,
    wall_s: float,
    samples: list[dict[str, float | None]],
    model: str,
    loads: list[float],
) -> dict[str, Any]:
    results = run.results
    routes = sorted({r.route for r in results})
    memory = {name: _memory(name, samples) for name in ("gateway", "generator")}
    warnings = [m["warning"] for m in memory.values() if m.get("warning")]
    hinted = [r for r in results if r.outcome == "refused"]
    return {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": machine(),
            "load_average_1min": {"start": loads[0], "end": loads[-1]},
            "command": " ".join(["scripts/loadtest.py", *sys.argv[1:]]),
            "model": model,
            "sse_clients": args.sse,
            "openai_clients": args.openai,
            "minutes": args.minutes,
            "max_new_tokens": args.max_new_tokens,
            "stream_timeout_s": args.stream_timeout,
        },
        "wall_s": wall_s,
        "all": _figures(results, wall_s),
        "by_route": {route: _figures([r for r in results if r.route == route]) for route in routes},
        "tok_s_windows": run.windows,
        "retry_after_s": sorted({r.retry_after_s for r in hinted if r.retry_after_s is not None}),
        "memory": memory,
        "warnings": warnings,
        "results": [asdict(r) for r in results],
    }


def _figures(results: list[Result], wall_s: float | None = None) -> dict[str, Any]:
    done = [r for r in results if r.outcome == "done"]
    ttft = [r.ttft_s * 1e3 for r in done if r.ttft_s is not None]
    tok_s = [r.tok_s for r in done if r.tok_s is not None]
    figures: dict[str, Any] = {
        "requests": len(results),
        "done": len(done),
        "done_without_tokens": sum(r.tokens == 0 for r in done),
        "refused_with_retry_hint": sum(r.outcome == "refused" for r in results),
        "failed": sum(r.outcome == "failed" for r in results),
        "failures": dict(Counter(r.kind for r in results if r.outcome == "failed")),
        "finish_reasons": dict(Counter(r.finish_reason for r in done)),
        "tokens": sum(r.tokens for r in results),
        "ttft_ms": _spread(ttft),
        "stream_tok_s": _spread(tok_s),
    }
    if wall_s:
        figures["aggregate_tok_s"] = figures["tokens"] / wall_s
    return figures


def _spread(values: list[float]) -> dict[str, Any] | None:
    """Median, min, max (Spread) and the nearest-rank p5/p50/p95 of some values."""
    if not values:
        return None
    return {
        **Spread.of(values).as_dict(),
        **{f"p{q}": percentile(values, q / 100) for q in (5, 50, 95)},
    }


def _memory(name: str, samples: list[dict[str, float | None]]) -> dict[str, Any]:
    values = [v for s in samples if (v := s.get(name)) is not None]
    start, end = samples[0].get(name), samples[-1].get(name)
    out: dict[str, Any] = {"start_bytes": start, "end_bytes": end}
    if values:
        out["samples_mb"] = Spread.of([v / 1e6 for v in values]).as_dict()
    if start is None or end is None:
        out["warning"] = f"{name}: resident memory not read at the start or the end (/metrics)"
        return out
    out["growth"] = (end - start) / start
    if out["growth"] > MEMORY_GROWTH_WARN:
        out["warning"] = (
            f"{name}: resident memory grew {out['growth']:+.1%} over the run "
            f"({_mb(start)} → {_mb(end)}), more than {MEMORY_GROWTH_WARN:.0%}"
        )
    return out


def _mb(value: float | None) -> str:
    return "?" if value is None else f"{value / 1e6:.1f} MB"


def _pair(spread: dict[str, Any] | None, unit: str, digits: int) -> str:
    if spread is None:
        return "–"
    return f"{spread['p50']:.{digits}f} / {spread['p95']:.{digits}f} {unit}"


def _triple(spread: dict[str, Any] | None, unit: str) -> str:
    if spread is None:
        return "–"
    return f"{spread['p5']:.1f} / {spread['p50']:.1f} / {spread['p95']:.1f} {unit}"


def markdown(report: dict[str, Any]) -> str:
    meta, figures = report["meta"], report["all"]
    failures = ", ".join(f"{kind} {n}" for kind, n in sorted(figures["failures"].items()))
    hints = ", ".join(f"{s:g} s" for s in report["retry_after_s"])
    rows = [
        ("clients", f"{meta['sse_clients']} SSE + {meta['openai_clients']} OpenAI"),
        (
            "duration",
            f"{meta['minutes'] * 60:.0f} s of new requests; {report['wall_s']:.1f} s "
            "until the last stream ended",
        ),
        ("requests", str(figures["requests"])),
        ("done", f"{figures['done']} ({figures['done_without_tokens']} without a token)"),
        (
            "refused with a retry hint",
            f"{figures['refused_with_retry_hint']}" + (f" (retry after {hints})" if hints else ""),
        ),
        ("failed", f"{figures['failed']}" + (f" ({failures})" if failures else "")),
        ("TTFT p50 / p95", _pair(figures["ttft_ms"], "ms", 0)),
        ("per-stream decode p5 / p50 / p95", _triple(figures["stream_tok_s"], "tok/s")),
        ("aggregate", f"{figures['aggregate_tok_s']:.1f} tok/s ({figures['tokens']} tokens)"),
    ]
    windows = [w["tok_s"] for w in report["tok_s_windows"]]
    if windows:
        rows.append(
            (f"aggregate per {SAMPLE_EVERY_S:g} s", f"{min(windows):.1f}–{max(windows):.1f} tok/s")
        )
    for name in ("gateway", "generator"):
        mem = report["memory"][name]
        growth = f" ({mem['growth']:+.1%})" if "growth" in mem else ""
        flag = " ⚠" if mem.get("warning") else ""
        rows.append(
            (f"{name} RSS start → end", f"{_mb(mem['start_bytes'])} → {_mb(mem['end_bytes'])}"
             f"{growth}{flag}")
        )  # fmt: skip
    lines = [
        f"Load test, {meta['date']}: {meta['machine']}, load average "
        f"{meta['load_average_1min']['start']:.2f} at the start and "
        f"{meta['load_average_1min']['end']:.2f} at the end; model {meta['model']}, "
        f"{meta['max_new_tokens']} new tokens a request.",
        "",
        "| figure | value |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in rows],
        "",
        "| route | requests | done | refused (hint) | failed | TTFT p50 / p95 | decode p50 / p95 |",
        "|---|---|---|---|---|---|---|",
    ]
    for route, f in report["by_route"].items():
        lines.append(
            f"| {route} | {f['requests']} | {f['done']} | {f['refused_with_retry_hint']} | "
            f"{f['failed']} | {_pair(f['ttft_ms'], 'ms', 0)} | "
            f"{_pair(f['stream_tok_s'], 'tok/s', 1)} |"
        )
    if report["warnings"]:
        lines += ["", *[f"Warning: {w}" for w in report["warnings"]]]
    return "\n".join(lines) + "\n"


# ---- the service ----------------------------------------------------------------------------


@contextlib.contextmanager
def service(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """(gateway URL, generator URL): started here with --start, else checked for readiness."""
    if not args.start:
        for name, url in (("gateway", args.gateway), ("generator", args.generator)):
            status, body = probe(url.rstrip("/") + "/readyz")
            if status != 200:
                said = f"answered {status} {json.dumps(body)}" if status else "did not answer"
                log(f"the {name} at {url} {said} on /readyz.")
                log(
                    "Start the service in another terminal with `make local-up`, or let the "
                    'load test start its own: `make loadtest LOADTEST_ARGS="--start"`.'
                )
                raise SystemExit(2)
        yield args.gateway.rstrip("/"), args.generator.rstrip("/")
        return
    log("starting a generator (default model) and a gateway on free ports ...")
    env = {"LOG_LEVEL": "warning"}
    generator = ServerProcess("generator.app:create_app", env, ready_timeout_s=600)
    gateway = ServerProcess("gateway.app:create_app", {**env, "GENERATOR_URL": generator.url})
    try:
        try:
            generator.launch()
            gateway.launch()
            _wait_loaded(generator)
            gateway.wait_ready()
        except RuntimeError as error:  # exited, failed, or not ready in time: with its log
            log(f"could not start the service (is the model prepared? `make model`): {error}")
            raise SystemExit(2) from None
        log(f"generator {generator.url}, gateway {gateway.url}")
        yield gateway.url, generator.url
    finally:
        gateway.stop()  # the gateway first, so no new work reaches the generator
        generator.stop()
        args.out.mkdir(parents=True, exist_ok=True)
        for server, name in ((gateway, "gateway.log"), (generator, "generator.log")):
            with contextlib.suppress(OSError):
                shutil.copyfile(server.log_path, args.out / name)


def _wait_loaded(generator: ServerProcess) -> None:
    """Like `wait_ready`, but a failed model load (`/readyz` says so) ends the wait at once."""
    deadline = time.monotonic() + generator.ready_timeout_s
    while time.monotonic() < deadline:
        if generator.exit_code() is not None:
            raise RuntimeError(f"the generator exited:\n{generator.logs()}")
        status, body = probe(generator.url + "/readyz")
        if status == 200:
            return
        if body.get("status") == "failed":
            raise RuntimeError(f"the model failed to load: {json.dumps(body)}")
        time.sleep(0.2)
    raise RuntimeError(f"the generator was not ready in {generator.ready_timeout_s:g} s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with service(args) as (gateway, generator):
        report = asyncio.run(load(args, gateway, generator))
    text = markdown(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "loadtest.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "loadtest.md").write_text(text)
    print(text)
    log(f"wrote {args.out}/loadtest.json, loadtest.md")
    failed = report["all"]["failed"]
    if failed:
        log(f"{failed} request(s) failed: exit status 1")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
