"""End to end: real uvicorn processes for the generator (tiny GPT-2) and the gateway."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from httpx_sse import aconnect_sse

from devtools.metrics import metric
from devtools.processes import ServerProcess
from support.gateway import gateway_process
from support.sse import Event, check_stream, read_events, token_text

LONG = 1000  # tokens: seconds of work for the tiny model, so a stop is visible


@pytest.fixture(scope="module")
def generator(tiny_model_dir) -> Iterator[ServerProcess]:
    with ServerProcess(
        "generator.app:create_app", {"MODEL": str(tiny_model_dir), "MAX_CONCURRENCY": "1"}
    ) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(generator) -> Iterator[ServerProcess]:
    with gateway_process(generator.url) as server:
        yield server


@pytest.fixture
async def client(gateway) -> httpx.AsyncClient:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        yield http


async def test_sse_stream_and_start_id(client):
    params = {"prompt": "Once upon a time", "max_new_tokens": 32, "seed": 11}
    events = await read_events(client, "/generate", params=params)
    done = check_stream(events)
    assert done.event == "done"
    assert done.data["usage"]["completion_tokens"] == 32

    start = (await client.post("/start", json=params)).json()
    by_id = await read_events(client, start["stream_url"])
    assert check_stream(by_id).event == "done"
    assert token_text(by_id) == token_text(events)

    whole = await client.post(
        "/v1/completions", json={"prompt": params["prompt"], "max_tokens": 32, "seed": 11}
    )
    assert token_text(events).encode() == whole.json()["choices"][0]["text"].encode()


async def test_tokens_arrive_while_the_generator_works(client, generator):
    """Streaming, not buffering: the first token event is in the client's hands while
    the generator is still generating the rest."""
    params = {"prompt": "Once upon a time", "max_new_tokens": LONG}
    async with aconnect_sse(client, "GET", "/generate", params=params) as source:
        async for sse in source.aiter_sse():
            if sse.event == "token":
                break
        assert metric(generator.url, "generator_active_generations") == 1.0
    # Leaving stopped it (see the cancellation test for the proof).


def test_openai_client_streams_chat_with_usage(gateway):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Say hello"}],
        max_tokens=10,
        seed=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert usage is not None
    assert 1 <= usage.completion_tokens <= 10
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish in (["length"], ["stop"])

    whole = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Say hello"}], max_tokens=10, seed=4
    )
    assert whole.choices[0].message.content == text
    assert whole.usage is not None
    assert whole.usage.completion_tokens == usage.completion_tokens

    completion = client.completions.create(model="tiny", prompt="Hello", max_tokens=5, seed=1)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5
    assert [m.id for m in client.models.list()] == [gateway_model_id(gateway)]


def gateway_model_id(gateway: ServerProcess) -> str:
    return httpx.get(gateway.url + "/v1/models").json()["data"][0]["id"]


def test_openai_client_sees_bad_input_as_400(gateway):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], temperature=5
        )
    assert caught.value.body["param"] == "temperature"


async def test_disconnect_stops_the_generator(client, generator, gateway):
    """Invariant 2 across both hops: a client that leaves mid-stream stops the model."""
    before = metric(generator.url, "generator_decode_steps_total")
    params = {"prompt": "Once upon a time", "max_new_tokens": LONG}
    async with aconnect_sse(client, "GET", "/generate", params=params) as source:
        seen = 0
        async for sse in source.aiter_sse():
            seen += sse.event == "token"
            if seen == 5:
                break
    # Gone. Give the two hops a moment, then the step counter must stand still.
    deadline = time.monotonic() + 10
    while metric(generator.url, "generator_active_generations") != 0.0:
        assert time.monotonic() < deadline, "generation still running after the disconnect"
        await asyncio.sleep(0.05)
    settled = metric(generator.url, "generator_decode_steps_total")
    await asyncio.sleep(1.0)
    assert metric(generator.url, "generator_decode_steps_total") == settled
    assert settled - before < LONG / 2, "the generator ran on after the client left"
    assert metric(gateway.url, "gateway_active_streams") == 0.0
    text = (await client.get("/metrics")).text
    assert 'gateway_streams_total{endpoint="generate",outcome="cancelled"}' in text

    # The slot is free at once: the next stream starts without waiting in the queue.
    events = await read_events(client, "/generate", params={"prompt": "hi", "max_new_tokens": 3})
    assert not [e for e in events if e.event == "status"]
    assert check_stream(events).event == "done"


async def test_status_events_when_queued_and_overload(tiny_model_dir):
    """Queue position is relayed as `status` events; a full queue is an `overloaded`
    error event on the SSE stream and 503 + Retry-After on the OpenAI endpoints."""
    env = {"MODEL": str(tiny_model_dir), "MAX_CONCURRENCY": "1", "MAX_QUEUE": "1"}
    with (
        ServerProcess("generator.app:create_app", env) as generator,
        gateway_process(generator.url) as gateway,
    ):
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
            long = {"prompt": "Once upon a time", "max_new_tokens": LONG}
            async with aconnect_sse(client, "GET", "/generate", params=long) as first:
                busy = first.aiter_sse()
                assert (await anext(busy)).event == "token"
                async with aconnect_sse(
                    client, "GET", "/generate", params={"prompt": "hi", "max_new_tokens": 3}
                ) as second:
                    waiting = second.aiter_sse()
                    status = await anext(waiting)
                    assert status.event == "status"
                    assert json.loads(status.data) == {"state": "queued", "position": 1}

                    overloaded = await read_events(client, "/generate", params={"prompt": "x"})
                    error = check_stream(overloaded)
                    assert error.event == "error"
                    assert error.data["code"] == "overloaded"
                    assert error.data["retry_after_s"] >= 1

                    r = await client.post("/v1/completions", json={"prompt": "x"})
                    assert r.status_code == 503
                    assert int(r.headers["retry-after"]) >= 1
                    assert r.json()["error"]["code"] == "overloaded"

                    await first.response.aclose()  # frees the slot: the queued one runs
                    rest = [Event(s.event, s.id, json.loads(s.data)) async for s in waiting]
                    done = check_stream(rest)
                    assert done.event == "done"
                    assert done.data["usage"]["completion_tokens"] == 3
