"""Capacity: one real gateway process relays a few hundred SSE streams at the same time,
every one to a `done` with all its tokens, even when it was started with a soft
open-files limit too low for them (it lifts its own limit).

The upstream is the paced stand-in (`devtools.paced_upstream`), not the generator: the
generator runs at most 64 generations at once. It holds every stream after its first
token until all of them are open at once, so the test proves the concurrency rather
than hoping the streams overlap. `make bench BENCH_ARGS="--only capacity"` measures the
same path with 1000 streams.
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from devtools.processes import ServerProcess
from gateway.fdlimit import stream_capacity
from support.gateway import gateway_process
from support.sse import check_stream, read_events

STREAMS = 300
TOKENS = 20
# Lower than STREAMS needs (two sockets a stream), so only a gateway that lifts its own
# limit can pass.
LOW_SOFT_LIMIT = 256
BOUND_S = 120.0  # generous: "never hangs", not a speed limit


@pytest.fixture
def paced_upstream() -> Iterator[ServerProcess]:
    env = {
        "PACED_TOKEN_INTERVAL_S": "0.02",
        "PACED_HOLD_FOR_STREAMS": str(STREAMS),
        "PACED_HOLD_TIMEOUT_S": "20",  # below the gateway's TOKEN_TIMEOUT_S (30 s)
    }
    with ServerProcess("devtools.paced_upstream:create_app", env) as server:
        yield server


@contextmanager
def soft_open_files_limit(limit: int) -> Iterator[None]:
    """Lower this process's soft limit for the block (children started in it inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def soft_limit_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files line")


async def test_hundreds_of_concurrent_streams_all_complete(paced_upstream):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and stream_capacity(hard) < STREAMS + 50:
        pytest.skip(f"hard open-files limit {hard} is too low for {STREAMS} streams")
    gateway = gateway_process(paced_upstream.url)
    # Room for this process's own open files while it spawns the gateway.
    low = max(LOW_SOFT_LIMIT, len(os.listdir("/proc/self/fd")) + 32)
    assert low < 2 * STREAMS, "this process holds too many files to start a starved gateway"
    with soft_open_files_limit(low):
        gateway.launch()
    try:
        gateway.wait_ready()
        assert gateway.process is not None
        assert soft_limit_of(gateway.process.pid) > low  # it lifted its limit

        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=BOUND_S, limits=limits) as c:
            params = {"prompt": "capacity", "max_new_tokens": TOKENS}
            async with asyncio.timeout(BOUND_S):
                streams = await asyncio.gather(
                    *(read_events(c, "/generate", params=params) for _ in range(STREAMS))
                )
            ready = (await c.get(paced_upstream.url + "/readyz")).json()
    finally:
        gateway.stop()

    terminals = [check_stream(events) for events in streams]
    failures = [t.data for t in terminals if t.event != "done"]
    assert not failures, f"{len(failures)} of {STREAMS} streams failed, e.g. {failures[0]}"
    assert all(t.data["usage"]["completion_tokens"] == TOKENS for t in terminals)
    assert all(sum(e.event == "token" for e in events) == TOKENS for events in streams)
    # The upstream held every stream until all were open at once through the gateway.
    assert ready["peak_streams"] == STREAMS
