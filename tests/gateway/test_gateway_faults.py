"""Invariant 3: whatever the generator does — refuse, stall, die, garble — the client gets
exactly one `error` event (or a clean HTTP error before the stream), within the bound."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
from httpx_sse import aconnect_sse

from devtools.processes import ServerProcess, free_port
from support.gateway import gateway_process
from support.sse import Event, check_stream, read_events

BOUND_S = 30.0  # generous: "never hangs", not a speed limit


async def _stream_then(client: httpx.AsyncClient, act: Callable[[], None]) -> list[Event]:
    """Read a long stream to its end, calling `act()` after the third token."""
    events: list[Event] = []
    params = {"prompt": "Once upon a time", "max_new_tokens": 1000}
    async with aconnect_sse(client, "GET", "/generate", params=params) as source:
        async for sse in source.aiter_sse():
            events.append(Event(sse.event, sse.id, json.loads(sse.data)))
            if sse.event == "token" and sse.id == "2":
                act()
    return events


@pytest.fixture
def generator(tiny_model_dir) -> Iterator[ServerProcess]:
    with ServerProcess("generator.app:create_app", {"MODEL": str(tiny_model_dir)}) as server:
        yield server
        if server.process and server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGCONT)


async def test_generator_port_closed():
    with gateway_process(f"http://127.0.0.1:{free_port()}") as gateway:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=BOUND_S) as client:
            events = await read_events(client, "/generate", params={"prompt": "hi"})
            error = check_stream(events)
            assert error.event == "error"
            assert error.data["code"] == "upstream_unavailable"

            r = await client.post("/v1/completions", json={"prompt": "hi"})
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "upstream_unavailable"
            assert (await client.get("/readyz")).status_code == 503
        sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            sdk.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )


async def test_generator_killed_mid_stream(generator):
    with gateway_process(generator.url) as gateway:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=BOUND_S) as client:
            started = time.monotonic()
            events = await _stream_then(client, lambda: generator.kill(signal.SIGKILL))
            assert time.monotonic() - started < BOUND_S
    error = check_stream(events)
    assert error.event == "error"
    assert error.data["code"] == "upstream_failed"


async def test_generator_stalls_mid_stream(generator):
    """SIGSTOP freezes the generator with its connection open: only a timeout can end it."""
    with gateway_process(generator.url, TOKEN_TIMEOUT_S="1") as gateway:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=BOUND_S) as client:
            started = time.monotonic()
            events = await _stream_then(
                client, lambda: os.killpg(generator.process.pid, signal.SIGSTOP)
            )
            assert time.monotonic() - started < BOUND_S
    error = check_stream(events)
    assert error.event == "error"
    assert error.data["code"] == "upstream_timeout"


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and reads requests but never answers (a hung upstream)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    sock.close()


async def test_generator_silent_before_first_token(silent_server):
    with gateway_process(silent_server, FIRST_TOKEN_TIMEOUT_S="1") as gateway:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=BOUND_S) as client:
            started = time.monotonic()
            events = await read_events(client, "/generate", params={"prompt": "hi"})
            assert time.monotonic() - started < BOUND_S
            error = check_stream(events)
            assert error.data["code"] == "upstream_timeout"
            r = await client.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
            )
            assert r.status_code == 504
            assert r.json()["error"]["code"] == "upstream_timeout"


def _ndjson_app(lines: list[bytes], status: int = 200):
    """A stand-in upstream that answers with exactly `lines` (faults the real generator
    cannot be made to produce on demand: garbage, a missing terminal event)."""

    async def app(scope, receive, send):
        assert scope["type"] == "http"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/x-ndjson")],
            }
        )
        for line in lines:
            await send({"type": "http.response.body", "body": line, "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


TOKEN = b'{"type":"token","index":0,"text":"Hi"}\n'


@pytest.mark.parametrize(
    ("lines", "code"),
    [
        ([TOKEN], "upstream_failed"),  # ends without done/error: never a silent truncation
        ([TOKEN, b"not json\n"], "upstream_failed"),
        ([TOKEN, b'{"type":"token","index":5,"text":"x"}\n'], "upstream_failed"),
        ([b'{"type":"mystery"}\n'], "upstream_failed"),
        (
            [TOKEN, b'{"type":"error","code":"generation_failed","message":"boom"}\n'],
            "generation_failed",
        ),
    ],
)
async def test_broken_upstream_streams(make_gateway, lines, code):
    gateway = make_gateway(_ndjson_app(lines))
    events = await read_events(gateway, "/generate", params={"prompt": "hi"})
    error = check_stream(events)
    assert error.event == "error"
    assert error.data["code"] == code
    r = await gateway.post("/v1/completions", json={"prompt": "hi"})
    assert r.status_code >= 500
    assert r.json()["error"]["code"] == code
    text = (await gateway.get("/metrics")).text
    assert "gateway_upstream_errors_total{kind=" in text


async def test_upstream_rejection_is_relayed_naming_the_field(make_gateway):
    body = b'{"error":{"code":"invalid_request","message":"prompt: too long","field":"prompt"}}'
    gateway = make_gateway(_ndjson_app([body], status=422))
    # SSE: an `error` event that EventSource can read, still naming the field.
    error = check_stream(await read_events(gateway, "/generate", params={"prompt": "hi"}))
    assert error.event == "error"
    assert error.data["code"] == "invalid_request"
    assert error.data["field"] == "prompt"
    r = await gateway.post("/v1/completions", json={"prompt": "hi"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "prompt"
