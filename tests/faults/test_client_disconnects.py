"""A client that goes away, at every stage of a request, stops the generator's work, and
leaves the gateway healthy with no more open files or tasks than before:

- before the response headers (the generator frozen, so the gateway still waits for its
  answer): once the generator runs again it sees the request gone and drops it;
- while queued behind another generation (a `status` event received): the queue place is
  given up at once, the running generation goes on, and the left request never runs;
- mid-stream, on the SSE stream and on OpenAI's streamed chat;
- during a non-streamed OpenAI request (`/v1/chat/completions`, `stream` false): nothing
  is sent before the end, yet the hang-up still reaches the generator.

Each time, within STOP_BOUND_S: the generator's `generator_active_generations` and
`generator_queue_depth` back to 0, every admitted request counted `cancelled` in
`generator_requests_total` (one that only ever queued is counted nowhere), and then its
`generator_decode_steps_total` standing still; the gateway counts the stream
`cancelled`.

And a client that stops reading without hanging up is dropped after SEND_TIMEOUT_S: the
gateway closes its connection to the generator (the stand-in, which streams big tokens
as fast as it is read) within that bound of the client's last read, then the client's.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from httpx_sse import aconnect_sse

from devtools.metrics import metric
from support.faults import (
    MARGIN_S,
    SEND_TIMEOUT_S,
    STOP_BOUND_S,
    assert_generator_stops,
    assert_recovered,
    assert_within,
    cancelled_requests,
    decode_steps,
    steady_state,
)
from support.upstreams import Endless

LONG = {"prompt": "Once upon a time", "max_new_tokens": 1000}  # a minute of tiny-model work
# The same as a chat (the template's default system turn takes its share of the context).
LONG_CHAT = {"messages": [{"role": "user", "content": "Once upon a time"}], "max_tokens": 900}
CLIENT_TIMEOUT_S = 60.0


async def _send_raw(
    url: str, method: str, target: str, body: dict[str, Any] | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A request written on a bare connection, which the test hangs up on when it likes."""
    where = urlsplit(url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    payload = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {target} HTTP/1.1\r\nHost: {where.netloc}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    writer.write(head.encode() + b"\r\n" + payload)
    await writer.drain()
    return reader, writer


async def _hang_up(writer: asyncio.StreamWriter) -> float:
    writer.close()
    await writer.wait_closed()
    return time.monotonic()


def _cancelled_streams(gateway_url: str, endpoint: str) -> float:
    try:
        return metric(gateway_url, "gateway_streams_total", endpoint=endpoint, outcome="cancelled")
    except LookupError:
        return 0.0


def _active_streams(gateway_url: str) -> float:
    return metric(gateway_url, "gateway_active_streams")


async def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_client_leaves_before_the_response_headers(generator, gateway, freeze):
    baseline = await steady_state(gateway.url)
    cancelled = cancelled_requests(generator.url)
    streams = _cancelled_streams(gateway.url, "generate")
    freeze()
    reader, writer = await _send_raw(gateway.url, "GET", "/generate?" + urlencode(LONG))
    # The gateway waits for the generator's answer: nothing reaches the client yet.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.5)
    await _hang_up(writer)
    # The gateway lets go at once, not when the generator answers: the stream's place is
    # free while the generator is still frozen, and its connection to it is closed.
    await _wait_for(lambda: _active_streams(gateway.url) == 0, "the stream's place is freed")
    assert _cancelled_streams(gateway.url, "generate") == streams + 1
    thawed = time.monotonic()
    generator.signal(signal.SIGCONT)
    await assert_generator_stops(generator.url, thawed, cancelled=cancelled + 1)
    await assert_recovered(gateway.url, baseline)


async def test_client_leaves_while_queued(generator, gateway):
    baseline = await steady_state(gateway.url)
    cancelled = cancelled_requests(generator.url)
    left_queue = _cancelled_streams(gateway.url, "generate")
    async with httpx.AsyncClient(base_url=gateway.url, timeout=CLIENT_TIMEOUT_S) as client:
        async with aconnect_sse(client, "GET", "/generate", params=LONG) as running:
            first = running.aiter_sse()
            assert (await anext(first)).event == "token"  # the one slot is taken
            async with aconnect_sse(client, "GET", "/generate", params=LONG) as queued:
                status = await anext(queued.aiter_sse())
                assert status.event == "status"
                assert json.loads(status.data) == {"state": "queued", "position": 1}
            left = time.monotonic()
            await _wait_for(
                lambda: metric(generator.url, "generator_queue_depth") == 0.0,
                "the generator kept the left request in its queue",
            )
            assert_within(left, STOP_BOUND_S, "queue place given up", margin_s=0)
            assert metric(generator.url, "generator_active_generations") == 1.0
            assert (await anext(first)).event == "token"  # the running one goes on
        gone = time.monotonic()
    # The running one is counted cancelled; the one that left the queue never ran.
    await assert_generator_stops(generator.url, gone, cancelled=cancelled + 1)
    assert _cancelled_streams(gateway.url, "generate") == left_queue + 2
    await assert_recovered(gateway.url, baseline)


@pytest.mark.parametrize(
    ("endpoint", "method", "path", "kwargs"),
    [
        pytest.param("generate", "GET", "/generate", {"params": LONG}, id="sse"),
        pytest.param(
            "chat_completions",
            "POST",
            "/v1/chat/completions",
            {"json": {**LONG_CHAT, "stream": True}},
            id="openai_stream",
        ),
    ],
)
async def test_client_leaves_mid_stream(
    generator, gateway, endpoint: str, method: str, path: str, kwargs: dict[str, Any]
):
    """Five events in, the client goes."""
    baseline = await steady_state(gateway.url)
    cancelled = cancelled_requests(generator.url)
    streams = _cancelled_streams(gateway.url, endpoint)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=CLIENT_TIMEOUT_S) as client:
        async with client.stream(method, path, **kwargs) as response:
            assert response.status_code == 200
            seen = 0
            async for line in response.aiter_lines():
                seen += line.startswith("data:")
                if seen == 5:
                    break
        left = time.monotonic()
    await assert_generator_stops(generator.url, left, cancelled=cancelled + 1)
    assert _cancelled_streams(gateway.url, endpoint) == streams + 1
    await assert_recovered(gateway.url, baseline)


async def test_client_leaves_a_non_streamed_openai_request(generator, gateway):
    baseline = await steady_state(gateway.url)
    cancelled = cancelled_requests(generator.url)
    streams = _cancelled_streams(gateway.url, "chat_completions")
    steps = decode_steps(generator.url)
    _, writer = await _send_raw(gateway.url, "POST", "/v1/chat/completions", LONG_CHAT)
    await _wait_for(
        lambda: decode_steps(generator.url) >= steps + 5, "the generation did not start"
    )
    left = await _hang_up(writer)
    await assert_generator_stops(generator.url, left, cancelled=cancelled + 1)
    assert _cancelled_streams(gateway.url, "chat_completions") == streams + 1
    await assert_recovered(gateway.url, baseline)


async def test_client_that_stops_reading_is_dropped(standin, standin_gateway):
    """It neither reads nor hangs up; the stand-in streams 64 KiB tokens as fast as they
    are taken, so the buffers between them fill within moments of its last read."""
    standin.scripts["endless"] = Endless(text_bytes=64 * 1024)
    url = standin_gateway.url
    baseline = await steady_state(url)
    where = urlsplit(url)
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.settimeout(CLIENT_TIMEOUT_S)
        client.connect((where.hostname, where.port))
        client.sendall(
            f"GET /generate?prompt=endless HTTP/1.1\r\nHost: {where.netloc}\r\n\r\n".encode()
        )
        received = b""
        while b"event: token" not in received:
            chunk = client.recv(4096)
            assert chunk, received
            received += chunk
        stopped = time.monotonic()  # its last read
        await asyncio.to_thread(standin.wait_closed, "endless", SEND_TIMEOUT_S + 2 * MARGIN_S)
        assert_within(stopped, SEND_TIMEOUT_S, "stopped reading → upstream closed")
        # And its own connection: what was buffered, then the end.
        client.settimeout(MARGIN_S)
        while client.recv(1 << 20):
            pass
    await assert_recovered(url, baseline)
    # Dropping a slow client is the design, logged as such: not an application error.
    assert "client too slow: stream dropped" in standin_gateway.logs()
    assert "Traceback" not in standin_gateway.logs()
