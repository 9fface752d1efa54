"""The generator's HTTP contract, in-process, with the tiny GPT-2 and the real engine."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from devtools.metrics import value
from devtools.reference import decode_alone
from generator.app import create_app
from generator.decode.prompt import encode_prompt
from generator.decode.sampling import Sampler
from generator.metrics import GeneratorMetrics
from generator.serving.engine import Engine
from generator.serving.protocol import GenerateRequest
from generator.settings import Settings
from support.ndjson import parse_ndjson, streamed_text


async def generate(client, **body):
    response = await client.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return parse_ndjson(response.text)


def reference_ids(engine: Engine, **body) -> list[int]:
    """The token ids the same request yields from the model loop, without streaming."""
    request = GenerateRequest(**body)
    lm = engine.loaded
    prompt_ids = encode_prompt(lm, request, request.max_new_tokens or 128)
    sampler = Sampler(request, lm.device, prompt_ids)
    return list(decode_alone(lm, prompt_ids, request.max_new_tokens or 128, sampler))


@pytest.mark.parametrize("seed", [1, 7, 42])
async def test_stream_concatenation_equals_one_piece_decode(client, tiny_engine, seed):
    body = {"prompt": "Hello, world", "max_new_tokens": 200, "temperature": 1.0, "seed": seed}
    events = await generate(client, **body)
    ids = reference_ids(tiny_engine, **body)
    one_piece = tiny_engine.loaded.tokenizer.decode(
        [i for i in ids if i not in tiny_engine.loaded.eos_ids],
        skip_special_tokens=True,
        clean_up_tokenization_spaces=False,
    )
    # Random weights emit raw byte tokens: the output must contain multi-byte text.
    assert any(ord(ch) > 0x7F for ch in one_piece)
    assert streamed_text(events).encode() == one_piece.encode()
    tokens = [e for e in events if e["type"] == "token"]
    assert [e["index"] for e in tokens] == list(range(len(tokens)))
    assert all(e["text"] for e in tokens)
    assert events[-1]["type"] == "done"
    assert events[-1]["usage"]["completion_tokens"] == len(ids)


async def test_events_end_with_exactly_one_done_carrying_usage_and_timings(client):
    events = await generate(client, prompt="Once upon a time", max_new_tokens=16, temperature=0)
    assert [e["type"] for e in events].count("done") == 1
    done = events[-1]
    assert done["type"] == "done"
    assert done["finish_reason"] in ("length", "eos")
    assert done["usage"]["prompt_tokens"] == 4
    assert 1 <= done["usage"]["completion_tokens"] <= 16
    assert set(done["timings"]) == {"queue_ms", "ttft_ms", "total_ms", "tokens_per_s"}
    assert 0 <= done["timings"]["ttft_ms"] <= done["timings"]["total_ms"]


async def test_seed_makes_sampling_reproducible(client):
    body = {"prompt": "The weather", "max_new_tokens": 40, "temperature": 0.9, "top_p": 0.95}
    first = streamed_text(await generate(client, seed=123, **body))
    again = streamed_text(await generate(client, seed=123, **body))
    other = streamed_text(await generate(client, seed=124, **body))
    assert first == again
    assert first != other


async def test_greedy_is_deterministic_without_a_seed(client):
    body = {"prompt": "abc", "max_new_tokens": 30, "temperature": 0}
    assert streamed_text(await generate(client, **body)) == streamed_text(
        await generate(client, **body)
    )


async def test_stop_string_ends_generation_and_is_not_emitted(client):
    body = {"prompt": "Stop here", "max_new_tokens": 120, "temperature": 0.8, "seed": 5}
    full = streamed_text(await generate(client, **body))
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert len(stop) == 3
    events = await generate(client, stop=[stop], **body)
    text = streamed_text(events)
    assert text == full[: full.index(stop)]
    assert stop not in text
    assert events[-1]["finish_reason"] == "stop"


async def test_stop_string_that_never_appears_changes_nothing(client):
    body = {"prompt": "Stop here", "max_new_tokens": 60, "temperature": 0.8, "seed": 5}
    full = streamed_text(await generate(client, **body))
    events = await generate(client, stop=["\x00never\x00"], **body)
    assert streamed_text(events) == full
    assert events[-1]["finish_reason"] == "length"


async def test_chat_template_is_applied(client, tiny_engine):
    events = await generate(client, prompt="Hi", chat=True, max_new_tokens=4, temperature=0)
    template = tiny_engine.loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    expected = len(tiny_engine.loaded.tokenizer(template, add_special_tokens=False)["input_ids"])
    assert events[-1]["usage"]["prompt_tokens"] == expected > 2


BAD_BODIES = [
    ({}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": "x" * (Settings().max_prompt_chars + 1)}, "prompt"),
    ({"prompt": "hi", "max_new_tokens": 0}, "max_new_tokens"),
    ({"prompt": "hi", "max_new_tokens": -3}, "max_new_tokens"),
    ({"prompt": "hi", "max_new_tokens": 10**9}, "max_new_tokens"),
    ({"prompt": "hi", "max_new_tokens": "64"}, "max_new_tokens"),
    ({"prompt": "hi", "max_new_tokens": 1.5}, "max_new_tokens"),
    ({"prompt": "hi", "temperature": -0.1}, "temperature"),
    ({"prompt": "hi", "temperature": "hot"}, "temperature"),
    ({"prompt": "hi", "top_p": 0}, "top_p"),
    ({"prompt": "hi", "top_p": 1.5}, "top_p"),
    ({"prompt": "hi", "top_k": -1}, "top_k"),
    ({"prompt": "hi", "repetition_penalty": 0}, "repetition_penalty"),
    ({"prompt": "hi", "stop": "x"}, "stop"),
    ({"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": "hi", "stop": [""]}, "stop.0"),
    ({"prompt": "hi", "stop": ["x" * 65]}, "stop.0"),
    ({"prompt": "hi", "seed": -1}, "seed"),
    ({"prompt": "hi", "seed": "1"}, "seed"),
    ({"prompt": "hi", "chat": "yes"}, "chat"),
    ({"prompt": "hi", "unknown_knob": 1}, "unknown_knob"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
async def test_bad_input_is_a_4xx_naming_the_field(client, body, field):
    response = await client.post("/v1/generate", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert error["message"].startswith(field)
    assert "Traceback" not in response.text


async def test_prompt_that_overflows_the_context_names_max_new_tokens(client):
    # The tiny model's context is 1024 tokens; 600 words + 512 new tokens cannot fit.
    response = await client.post(
        "/v1/generate", json={"prompt": "word " * 600, "max_new_tokens": 512}
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "max_new_tokens"
    assert "context" in response.json()["error"]["message"]


async def test_a_prompt_of_characters_without_tokens_is_a_422(client):
    # Control characters the byte-level vocabulary has no token for encode to nothing.
    response = await client.post("/v1/generate", json={"prompt": "\u0006"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "prompt"
    assert "no tokens" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"{not json", "not valid JSON"), (b"[1, 2]", ""), (b"", "")],
)
async def test_malformed_bodies_are_4xx(client, content, message):
    response = await client.post(
        "/v1/generate", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert message in response.json()["error"]["message"]


async def test_plain_text_endpoint_streams_the_same_generation(client):
    params = {"prompt": "Hello", "max_new_tokens": 50, "temperature": 0.7, "seed": 3}
    response = await client.get("/", params=params)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == streamed_text(await generate(client, **params))


async def test_plain_text_endpoint_validates_query_parameters(client):
    response = await client.get("/", params={"prompt": "hi", "max_new_tokens": "many"})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "max_new_tokens"
    response = await client.get("/", params={"prompt": "hi", "bogus": "1"})
    assert response.json()["error"]["field"] == "bogus"


async def test_request_id_is_honoured_or_minted(client):
    response = await client.post(
        "/v1/generate",
        json={"prompt": "x", "max_new_tokens": 1},
        headers={"X-Request-ID": "trace-123"},
    )
    assert response.headers["x-request-id"] == "trace-123"
    minted = await client.get("/healthz")
    assert len(minted.headers["x-request-id"]) == 32


async def test_metrics_count_requests_and_tokens(client):
    """Each series moves by exactly what one generation did: one request with its outcome,
    its prompt and completion tokens, one forward pass per token (it decoded alone: the
    prefill gives the first token), one time-to-first-token sample and one inter-token
    sample per further token; nothing left running or queued."""
    series = {
        "prompt": ("generator_prompt_tokens_total", {}),
        "completion": ("generator_completion_tokens_total", {}),
        "steps": ("generator_decode_steps_total", {}),
        "ttft": ("generator_time_to_first_token_seconds_count", {}),
        "gaps": ("generator_inter_token_latency_seconds_count", {}),
    }

    async def read(name: str, **labels: str) -> float:
        text = (await client.get("/metrics")).text
        try:
            return value(text, name, **labels)
        except LookupError:  # a labelled series appears with its first sample
            return 0.0

    for reason in ("length", "eos", "stop"):
        series[reason] = ("generator_requests_total", {"outcome": reason})
    before = {key: await read(name, **labels) for key, (name, labels) in series.items()}
    events = await generate(client, prompt="count me", max_new_tokens=5, temperature=0)
    done = events[-1]
    # The request is counted as its row leaves the batch, just after its done event.
    for _ in range(100):
        after = {key: await read(name, **labels) for key, (name, labels) in series.items()}
        if after[done["finish_reason"]] != before[done["finish_reason"]]:
            break
        await asyncio.sleep(0.05)
    for reason in ("length", "eos", "stop"):
        assert after[reason] - before[reason] == (reason == done["finish_reason"])
    tokens = done["usage"]["completion_tokens"]
    assert 1 <= tokens <= 5
    assert after["prompt"] - before["prompt"] == done["usage"]["prompt_tokens"]
    assert after["completion"] - before["completion"] == tokens
    assert after["steps"] - before["steps"] == tokens
    assert after["ttft"] - before["ttft"] == 1
    assert after["gaps"] - before["gaps"] == tokens - 1
    assert await read("generator_active_generations") == 0
    assert await read("generator_queue_depth") == 0


async def test_readiness_is_503_until_the_model_is_loaded(tiny_settings):
    engine = Engine(tiny_settings, GeneratorMetrics())
    app = create_app(tiny_settings, engine)  # ASGITransport runs no lifespan: nothing loads
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://generator"
    ) as http:
        loading = await http.get("/readyz")
        assert loading.status_code == 503
        assert loading.json()["status"] == "loading"
        assert (await http.get("/healthz")).status_code == 200
        engine.start_loading()
        events = parse_ndjson(
            (await http.post("/v1/generate", json={"prompt": "hi", "max_new_tokens": 3})).text
        )
        assert events[0] == {"type": "status", "state": "loading"}
        assert events[-1]["type"] == "done"
        assert (await http.get("/readyz")).status_code == 200


async def test_a_model_that_cannot_load_is_reported_not_hung(tmp_path):
    settings = Settings(model=str(tmp_path / "missing"))
    engine = Engine(settings, GeneratorMetrics())
    engine.load()
    app = create_app(settings, engine)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://generator"
    ) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert "make model" in ready.json()["error"]["message"]
        response = await http.post("/v1/generate", json={"prompt": "hi"})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "model_unavailable"
