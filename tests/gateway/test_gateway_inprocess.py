"""The gateway in-process against the real generator app (tiny GPT-2), via ASGITransport."""

from __future__ import annotations

import json

import pytest

from support.gateway import ORIGIN
from support.sse import check_stream, read_events, token_text

PROMPT = "Once upon a time"


async def test_generate_streams_tokens_then_done(gateway):
    events = await read_events(
        gateway, "/generate", params={"prompt": PROMPT, "max_new_tokens": 12, "seed": 3}
    )
    done = check_stream(events)
    assert done.event == "done"
    assert done.id == "end"
    assert done.data["usage"]["completion_tokens"] == 12
    assert done.data["finish_reason"] == "length"
    assert set(done.data["timings"]) >= {"ttft_ms", "total_ms", "tokens_per_s"}


async def test_stream_headers(gateway):
    async with gateway.stream(
        "GET", "/generate", params={"prompt": "hi", "max_new_tokens": 2}
    ) as r:
        await r.aread()
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["x-accel-buffering"] == "no"


@pytest.mark.parametrize("seed", [1, 7, 42])
async def test_streamed_text_equals_one_piece_text(gateway, seed):
    """Invariant 1 across the gateway: SSE tokens joined == the non-streamed completion,
    byte for byte (the tiny GPT-2 emits byte tokens that split multi-byte characters)."""
    params = {"prompt": PROMPT, "max_new_tokens": 40, "temperature": 1.0, "seed": seed}
    events = await read_events(gateway, "/generate", params=params)
    streamed = token_text(events)

    response = await gateway.post(
        "/v1/completions",
        json={"prompt": PROMPT, "max_tokens": 40, "temperature": 1.0, "seed": seed},
    )
    assert response.status_code == 200, response.text
    whole = response.json()["choices"][0]["text"]
    # (Random weights may emit byte sequences that are invalid UTF-8 as a whole; the
    # point is that streaming never adds or moves a replacement character.)
    assert streamed.encode() == whole.encode()
    # The same generation streamed through the OpenAI endpoint, too.
    chunks = []
    async with gateway.stream(
        "POST",
        "/v1/completions",
        json={"prompt": PROMPT, "max_tokens": 40, "temperature": 1.0, "seed": seed, "stream": True},
    ) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:])["choices"][0]["text"])
    assert "".join(chunks).encode() == whole.encode()


async def test_start_then_generate_by_id(gateway):
    start = await gateway.post("/start", json={"prompt": PROMPT, "max_new_tokens": 8, "seed": 5})
    assert start.status_code == 200, start.text
    body = start.json()
    assert body["stream_url"] == f"/generate?id={body['id']}"
    by_id = await read_events(gateway, body["stream_url"])
    by_query = await read_events(
        gateway, "/generate", params={"prompt": PROMPT, "max_new_tokens": 8, "seed": 5}
    )
    assert check_stream(by_id).event == "done"
    assert token_text(by_id) == token_text(by_query)


async def test_reconnect_after_end_is_told_to_stop(gateway):
    """EventSource reconnects by itself when a response ends, sending Last-Event-ID:
    the gateway answers 204 so it stops instead of generating again."""
    r = await gateway.get("/generate", params={"prompt": PROMPT}, headers={"Last-Event-ID": "end"})
    assert r.status_code == 204


async def test_request_id_is_propagated_and_returned(gateway, upstream):
    r = await gateway.post(
        "/v1/completions",
        json={"prompt": "hi", "max_tokens": 2},
        headers={"X-Request-ID": "trace-abc.123"},
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "trace-abc.123"
    assert upstream.headers[-1]["x-request-id"] == "trace-abc.123"

    r = await gateway.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2})
    minted = r.headers["x-request-id"]
    assert len(minted) >= 16
    assert upstream.headers[-1]["x-request-id"] == minted


async def test_chat_completion_non_streamed(gateway):
    r = await gateway.post(
        "/v1/chat/completions",
        json={
            "model": "anything",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
            ],
            "max_tokens": 6,
            "seed": 1,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "anything"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] in ("length", "stop")
    usage = body["usage"]
    assert usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_chat_stream_with_usage(gateway):
    payload = {
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    lines = []
    async with gateway.stream("POST", "/v1/chat/completions", json=payload) as r:
        assert r.status_code == 200
        lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] in ("length", "stop")
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] <= 5
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)


async def test_stop_sequences_pass_through(gateway):
    """A stop string the text is known to reach (the same greedy request without it) ends
    the completion just before it, with finish_reason "stop"."""
    body = {"prompt": PROMPT, "max_tokens": 30, "temperature": 0}
    full = (await gateway.post("/v1/completions", json=body)).json()["choices"][0]["text"]
    stop = full[8:11]  # three characters well inside the text (random tiny model: byte soup)
    assert len(stop) == 3
    r = await gateway.post("/v1/completions", json={**body, "stop": stop})
    assert r.status_code == 200
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["text"] == full[: full.index(stop)]


async def test_models_health_ready_metrics(gateway):
    models = (await gateway.get("/v1/models")).json()
    assert models["object"] == "list"
    assert models["data"][0]["id"].startswith("tiny-gpt2")
    assert (await gateway.get("/healthz")).json() == {"status": "ok"}
    ready = await gateway.get("/readyz")
    assert ready.status_code == 200, ready.text
    await read_events(gateway, "/generate", params={"prompt": "hi", "max_new_tokens": 3})
    text = (await gateway.get("/metrics")).text
    assert "gateway_relayed_tokens_total 3.0" in text
    assert 'gateway_streams_total{endpoint="generate",outcome="done"} 1.0' in text
    assert "gateway_active_streams 0.0" in text
    assert "gateway_added_latency_seconds_count 3.0" in text


async def test_cors_preflight_from_allowed_origin(gateway):
    r = await gateway.options(
        "/start",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in r.headers["access-control-allow-methods"]
    r = await gateway.get("/healthz", headers={"Origin": ORIGIN})
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in r.headers["access-control-expose-headers"].lower()


async def test_cors_other_origin_gets_no_cors_headers(gateway):
    evil = "http://evil.example"
    r = await gateway.options(
        "/start", headers={"Origin": evil, "Access-Control-Request-Method": "POST"}
    )
    assert r.status_code == 400
    assert "access-control-allow-origin" not in r.headers
    r = await gateway.get("/healthz", headers={"Origin": evil})
    assert "access-control-allow-origin" not in r.headers
