"""The fault suite's yardsticks: the small settings its gateways run with, the bounds those
settings promise, and the check every fault case ends with.

A fault case proves three things: the client got exactly one terminal event (or a clean
HTTP error before the stream) within the bound the gateway's setting promises; the
gateway is still healthy afterwards; and it holds nothing it did not hold before. The
last two are `assert_recovered`, against a `steady_state` read before the fault:

- healthy: `/healthz` 200, `/readyz` 200 (503 while the generator is known to be down),
  and a normal generation ends with `done`;
- no leak: the gateway's `process_open_fds` and `gateway_event_loop_tasks` come back to
  their baseline (polled for up to `LEAK_WAIT_S`). Every read first asks the gateway's
  `/readyz`, which makes its connection pool drop idle connections the generator has
  closed: those are the pool's to keep, and bounded; a stream that never let go of its
  upstream connection or its task is not idle, and stays counted.

The bounds are promises, not speed measurements: `MARGIN_S` absorbs a loaded two-core
machine, never a missed timeout (a missed timeout is the setting, not seconds, late).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from httpx_sse import aconnect_sse

from devtools.metrics import metric, value
from devtools.processes import ServerProcess
from streamkit.events import from_sse
from support.gateway import SECRET
from support.sse import Event, check_stream, read_events

TOKEN_TIMEOUT_S = 2.0
FIRST_TOKEN_TIMEOUT_S = 3.0
CONNECT_TIMEOUT_S = 1.0
SEND_TIMEOUT_S = 3.0
MARGIN_S = 3.0
# A client that leaves stops its generation "within about one token"; this is that token
# plus both hops noticing, on a loaded machine.
STOP_BOUND_S = 5.0
LEAK_WAIT_S = 10.0

FAULT_SETTINGS = {
    "TOKEN_TIMEOUT_S": f"{TOKEN_TIMEOUT_S:g}",
    "FIRST_TOKEN_TIMEOUT_S": f"{FIRST_TOKEN_TIMEOUT_S:g}",
    "CONNECT_TIMEOUT_S": f"{CONNECT_TIMEOUT_S:g}",
    "SEND_TIMEOUT_S": f"{SEND_TIMEOUT_S:g}",
}

T = TypeVar("T")

HEALTHY = {"prompt": "hi", "max_new_tokens": 3}  # a stand-in answers it well, as does a model


def fault_gateway(generator_url: str, *, port: int | None = None, **env: str) -> ServerProcess:
    """A real gateway process with the fault suite's small timeouts (and `START_SECRET`
    set, unless `env` says otherwise), pointed at `generator_url`; ready = `/healthz`, so
    it starts whatever state the generator is in."""
    return ServerProcess(
        "gateway.app:create_app",
        {
            "GENERATOR_URL": generator_url,
            "START_SECRET": SECRET,
            "LOG_LEVEL": "warning",
            **FAULT_SETTINGS,
            **env,
        },
        port=port,
        ready_path="/healthz",
    )


def assert_within(started: float, bound_s: float, what: str, margin_s: float = MARGIN_S) -> float:
    """Seconds since `started` (time.monotonic()), asserted to be within `bound_s` plus
    `margin_s`; printed, for the record (`pytest -s`)."""
    elapsed = time.monotonic() - started
    print(f"\n  {what}: {elapsed:.2f}s (bound {bound_s:g}s + {margin_s:g}s)", end="")
    assert elapsed <= bound_s + margin_s, f"{what}: {elapsed:.2f}s, promised {bound_s:g}s"
    return elapsed


async def read_events_quiet_since(
    client: httpx.AsyncClient, params: dict[str, Any]
) -> tuple[list[Event], float]:
    """`GET /generate`'s events (as `support.sse.read_events` reads them), and when the
    silence that the terminal event ended began: the request, or the last event before
    the terminal one (time.monotonic()). What a timeout bounds is that silence."""
    events: list[Event] = []
    quiet_since = time.monotonic()
    async with aconnect_sse(client, "GET", "/generate", params=params) as source:
        source.response.raise_for_status()
        async for sse in source.aiter_sse():
            data = from_sse(sse.event, sse.data).model_dump(exclude={"type"}, exclude_none=True)
            events.append(Event(sse.event, sse.id, data))
            if sse.event not in ("done", "error"):
                quiet_since = time.monotonic()
    return events, quiet_since


async def within(bound_s: float, what: str, awaitable: Awaitable[T]) -> T:
    """`awaitable`'s result, asserted to have come within `bound_s` plus the margin (so
    that several cases can wait out their timeouts at the same time)."""
    started = time.monotonic()
    result = await awaitable
    assert_within(started, bound_s, what)
    return result


@asynccontextmanager
async def one_shot_client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose every request is a fresh connection the server closes at once, so
    none of them is still open in the gateway when its open files are counted."""
    async with httpx.AsyncClient(
        base_url=base_url, timeout=30, headers={"Connection": "close"}
    ) as client:
        yield client


@dataclass(frozen=True)
class Load:
    open_fds: float
    tasks: float


async def read_load(client: httpx.AsyncClient, *, sweep: bool = True) -> Load:
    if sweep:  # the gateway's pool drops the idle connections the generator has closed
        await client.get("/readyz")
    text = (await client.get("/metrics")).text
    return Load(value(text, "process_open_fds"), value(text, "gateway_event_loop_tasks"))


async def steady_state(gateway_url: str, *, generator_up: bool = True) -> Load:
    """The gateway's open files and tasks at rest, after one generation (whatever its
    outcome) has set up everything a first stream sets up once."""
    async with one_shot_client(gateway_url) as client:
        async with client.stream("GET", "/generate", params=HEALTHY) as response:
            await response.aread()
        previous = None
        deadline = time.monotonic() + LEAK_WAIT_S
        while time.monotonic() < deadline:
            load = await read_load(client, sweep=generator_up)
            if load == previous:
                return load
            previous = load
            await asyncio.sleep(0.2)
    raise AssertionError(f"the gateway never came to rest: {previous}")


async def assert_recovered(gateway_url: str, baseline: Load, *, generator_up: bool = True):
    """After a fault: the gateway healthy (a normal generation succeeds, unless the
    generator is known to be down) and back to `baseline` open files and tasks."""
    async with one_shot_client(gateway_url) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == (200 if generator_up else 503)
        if generator_up:
            events = await read_events(client, "/generate", params=HEALTHY)
            assert check_stream(events).event == "done", events
        deadline = time.monotonic() + LEAK_WAIT_S
        while True:
            load = await read_load(client, sweep=generator_up)
            if load.open_fds <= baseline.open_fds and load.tasks <= baseline.tasks:
                return
            assert time.monotonic() < deadline, f"the gateway leaked: {load}, was {baseline}"
            await asyncio.sleep(0.2)


def decode_steps(generator_url: str) -> float:
    return metric(generator_url, "generator_decode_steps_total")


def cancelled_requests(generator_url: str) -> float:
    """Requests the generator saw go away before their end (0 before the first)."""
    try:
        return metric(generator_url, "generator_requests_total", outcome="cancelled")
    except LookupError:
        return 0.0


async def assert_generator_stops(
    generator_url: str, since: float, *, cancelled: float | None = None
) -> float:
    """The generator drops the work within `STOP_BOUND_S` of `since`: nothing running,
    nothing queued, and (when given) `cancelled` requests counted as cancelled by then;
    its forward passes then stand still. Returns the seconds it took."""

    def work() -> dict[str, float]:
        """What is left to do or count; empty once the generator is done with it all."""
        left = {
            "active": metric(generator_url, "generator_active_generations"),
            "queued": metric(generator_url, "generator_queue_depth"),
        }
        if cancelled is not None:
            left["not yet counted cancelled"] = cancelled - cancelled_requests(generator_url)
        return {what: count for what, count in left.items() if count > 0}

    while left := work():
        elapsed = time.monotonic() - since
        assert elapsed <= STOP_BOUND_S, f"{elapsed:.2f}s later the generator still has {left}"
        await asyncio.sleep(0.05)
    elapsed = assert_within(since, STOP_BOUND_S, "generator stopped", margin_s=0)
    settled = decode_steps(generator_url)
    await asyncio.sleep(1.0)
    assert decode_steps(generator_url) == settled, "the generator ran on"
    return elapsed
