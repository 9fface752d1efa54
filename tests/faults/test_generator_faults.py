"""A real generator that dies, freezes, or is not there. Whatever it does, the client gets
exactly one `error` event (or a clean HTTP error before the stream) within the bound the
gateway's setting promises, and the gateway comes out of it healthy, holding no more
open files or tasks than before (`support.faults.assert_recovered`):

- killed (SIGKILL) mid-stream: `upstream_failed`, within TOKEN_TIMEOUT_S (at once, in
  fact: the connection breaks); the gateway serves again once a generator is back;
- frozen (SIGSTOP) before the first token: `upstream_timeout` within
  FIRST_TOKEN_TIMEOUT_S, as an SSE `error` event and as a 504 from the OpenAI endpoint;
  thawed, the generator drops the requests the gateway gave up on;
- frozen mid-stream: `upstream_timeout` within TOKEN_TIMEOUT_S; thawed, it stops;
- nothing listening on its port: `upstream_unavailable` within CONNECT_TIMEOUT_S on the
  SSE stream, 503 from the OpenAI endpoint and to the official client, `/readyz` 503;
  a generator appearing on that port is then served normally;
- a port that takes connections into a full backlog and never accepts them:
  `upstream_unavailable` within CONNECT_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
from httpx_sse import aconnect_sse

from devtools.processes import free_port
from support.faults import (
    CONNECT_TIMEOUT_S,
    FIRST_TOKEN_TIMEOUT_S,
    TOKEN_TIMEOUT_S,
    assert_generator_stops,
    assert_recovered,
    assert_within,
    cancelled_requests,
    fault_gateway,
    steady_state,
    within,
)
from support.sse import Event, check_stream, read_events
from support.upstreams import ScriptedUpstream

LONG = {"prompt": "Once upon a time", "max_new_tokens": 1000}  # a minute of tiny-model work
CLIENT_TIMEOUT_S = 60.0  # the client's own patience: far beyond every bound asserted


async def _stream_then(client: httpx.AsyncClient, act: Callable[[], None]) -> list[Event]:
    """Read a long stream to its end, calling `act()` after the third token."""
    events: list[Event] = []
    async with aconnect_sse(client, "GET", "/generate", params=LONG) as source:
        async for sse in source.aiter_sse():
            events.append(Event(sse.event, sse.id, json.loads(sse.data)))
            if sse.event == "token" and sse.id == "2":
                act()
    return events


async def test_generator_killed_mid_stream(generator, gateway):
    baseline = await steady_state(gateway.url)
    killed = 0.0

    def kill() -> None:
        nonlocal killed
        killed = time.monotonic()
        generator.signal(signal.SIGKILL)

    async with httpx.AsyncClient(base_url=gateway.url, timeout=CLIENT_TIMEOUT_S) as client:
        events = await _stream_then(client, kill)
    assert_within(killed, TOKEN_TIMEOUT_S, "killed mid-stream → error")
    error = check_stream(events)
    assert error.event == "error"
    assert error.data["code"] == "upstream_failed"

    await assert_recovered(gateway.url, baseline, generator_up=False)
    generator.start()  # a new generator on the same port: the gateway serves it at once
    await assert_recovered(gateway.url, baseline)


async def test_generator_frozen_before_the_first_token(generator, gateway, freeze):
    """SIGSTOP: the connection is accepted (by the kernel) and then nothing, ever."""
    baseline = await steady_state(gateway.url)
    freeze()
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 900}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=CLIENT_TIMEOUT_S) as client:
        events, r = await asyncio.gather(
            within(
                FIRST_TOKEN_TIMEOUT_S,
                "frozen before the first token → error",
                read_events(client, "/generate", params=LONG),
            ),
            within(
                FIRST_TOKEN_TIMEOUT_S,
                "frozen, non-streamed OpenAI → 504",
                client.post("/v1/chat/completions", json=chat),
            ),
        )
    error = check_stream(events)
    assert error.event == "error"
    assert error.data["code"] == "upstream_timeout"
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "upstream_timeout"

    thawed = time.monotonic()
    generator.signal(signal.SIGCONT)
    # Both requests the gateway gave up on reach the generator only now, their connections
    # already closed: it drops them (before or after admitting them; only an admitted one
    # is counted `cancelled`, so no count is asserted), and runs neither.
    await assert_generator_stops(generator.url, thawed)
    await assert_recovered(gateway.url, baseline)


async def test_generator_frozen_mid_stream(generator, gateway, freeze):
    """SIGSTOP after the third token, the connection open: only the timeout can end it."""
    baseline = await steady_state(gateway.url)
    cancelled = cancelled_requests(generator.url)
    frozen = 0.0

    def stop() -> None:
        nonlocal frozen
        frozen = time.monotonic()
        freeze()

    async with httpx.AsyncClient(base_url=gateway.url, timeout=CLIENT_TIMEOUT_S) as client:
        events = await _stream_then(client, stop)
    assert_within(frozen, TOKEN_TIMEOUT_S, "frozen mid-stream → error")
    error = check_stream(events)
    assert error.event == "error"
    assert error.data["code"] == "upstream_timeout"

    thawed = time.monotonic()
    generator.signal(signal.SIGCONT)
    await assert_generator_stops(generator.url, thawed, cancelled=cancelled + 1)
    await assert_recovered(gateway.url, baseline)


async def test_generator_port_closed():
    port = free_port()
    with fault_gateway(f"http://127.0.0.1:{port}") as gateway:
        baseline = await steady_state(gateway.url, generator_up=False)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=CLIENT_TIMEOUT_S) as client:
            started = time.monotonic()
            events = await read_events(client, "/generate", params={"prompt": "hi"})
            assert_within(started, CONNECT_TIMEOUT_S, "connection refused → error")
            error = check_stream(events)
            assert error.event == "error"
            assert error.data["code"] == "upstream_unavailable"

            r = await client.post("/v1/completions", json={"prompt": "hi"})
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "upstream_unavailable"
            assert (await client.get("/readyz")).status_code == 503
        sdk = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            await sdk.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        await sdk.close()
        await assert_recovered(gateway.url, baseline, generator_up=False)
        with ScriptedUpstream(port=port):  # a generator appears on the port
            await assert_recovered(gateway.url, baseline)


@pytest.fixture
def never_accepting() -> Iterator[int]:
    """A port whose listen backlog is full: the kernel drops new SYNs, so connecting to it
    neither fails nor succeeds (a generator host that is up but swamped, or gone silent)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))  # in progress, never completed
        fillers.append(filler)
    yield port
    for filler in fillers:
        filler.close()
    listener.close()


async def test_generator_never_accepts_the_connection(never_accepting):
    with fault_gateway(f"http://127.0.0.1:{never_accepting}") as gateway:
        baseline = await steady_state(gateway.url, generator_up=False)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=CLIENT_TIMEOUT_S) as client:
            events, r, ready = await asyncio.gather(
                within(
                    CONNECT_TIMEOUT_S,
                    "connect timeout → error",
                    read_events(client, "/generate", params={"prompt": "hi"}),
                ),
                within(
                    CONNECT_TIMEOUT_S,
                    "connect timeout → OpenAI 503",
                    client.post("/v1/completions", json={"prompt": "hi"}),
                ),
                within(CONNECT_TIMEOUT_S, "connect timeout → /readyz 503", client.get("/readyz")),
            )
        error = check_stream(events)
        assert error.event == "error"
        assert error.data["code"] == "upstream_unavailable"
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "upstream_unavailable"
        assert ready.status_code == 503
        await assert_recovered(gateway.url, baseline, generator_up=False)
