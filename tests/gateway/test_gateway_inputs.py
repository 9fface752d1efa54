"""Invariant 4 at the gateway: bad input gets a 4xx naming the field, never a 500 or a
traceback — on the SSE endpoints and the OpenAI ones alike. Plus the start-id checks."""

from __future__ import annotations

import time

import pytest

from gateway.settings import Settings
from gateway.signing import MAX_ID_CHARS, StartIdSigner
from streamkit.errors import InvalidRequest
from support.gateway import SECRET

QUERY_CASES = [
    ({}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "hi", "max_new_tokens": "many"}, "max_new_tokens"),
    ({"prompt": "hi", "max_new_tokens": "0"}, "max_new_tokens"),
    ({"prompt": "hi", "max_new_tokens": "100000"}, "max_new_tokens"),
    ({"prompt": "hi", "temperature": "9"}, "temperature"),
    ({"prompt": "hi", "top_p": "0"}, "top_p"),
    ({"prompt": "hi", "top_k": "-1"}, "top_k"),
    ({"prompt": "hi", "seed": "-3"}, "seed"),
    ({"prompt": "hi", "chat": "perhaps"}, "chat"),
    ({"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": "hi", "max_tokens": "3"}, "max_tokens"),
    ({"prompt": "x" * (Settings().max_prompt_chars + 1)}, "prompt"),
    ({"id": "v1.abc.def"}, "id"),
    ({"id": "nonsense"}, "id"),
    ({"id": "v1.abc.def", "prompt": "hi"}, "id"),
]


def _assert_names_field(response, field: str, *, status: int = 422) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert error["message"].startswith(field)
    assert "Traceback" not in response.text


@pytest.mark.parametrize(("query", "field"), QUERY_CASES)
async def test_generate_query_errors(gateway, query, field):
    _assert_names_field(await gateway.get("/generate", params=query), field)


START_CASES = [
    ({"max_new_tokens": 5}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": "hi", "max_new_tokens": "5"}, "max_new_tokens"),
    ({"prompt": "hi", "temperature": -1}, "temperature"),
    ({"prompt": "hi", "stop": [""]}, "stop.0"),
    ({"prompt": "hi", "colour": "red"}, "colour"),
]


@pytest.mark.parametrize(("body", "field"), START_CASES)
async def test_start_body_errors(gateway, body, field):
    _assert_names_field(await gateway.post("/start", json=body), field)


async def test_start_not_json(gateway):
    r = await gateway.post("/start", content=b"{nope", headers={"content-type": "application/json"})
    _assert_names_field(r, "body")


def _openai_error(response, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert param in error["message"]
    assert error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "code", "param"}


COMPLETION_CASES = [
    ({}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"prompt": [1, 2, 3]}, "prompt.str"),
    ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": 100000}, "max_tokens"),  # the field the client sent
    ({"prompt": "hi", "temperature": 3}, "temperature"),
    ({"prompt": "hi", "n": 2}, "n"),
    ({"prompt": "hi", "echo": True}, "echo"),
    ({"prompt": "hi", "logprobs": 2}, "logprobs"),
    ({"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": "hi", "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
    ({"prompt": "hi", "frequency_penalty": 2.5}, "frequency_penalty"),
    ({"prompt": "hi", "presence_penalty": "high"}, "presence_penalty"),
    ({"prompt": "hi", "user": 5}, "user"),
    ({"prompt": "hi", "response_format": {"type": "json_object"}}, "response_format.type"),
]


@pytest.mark.parametrize(("body", "param"), COMPLETION_CASES)
async def test_completions_errors(gateway, body, param):
    _openai_error(await gateway.post("/v1/completions", json=body), param)


def _chat(messages, **extra):
    return {"messages": messages, **extra}


USER = [{"role": "user", "content": "hi"}]
CHAT_CASES = [
    ({}, "messages"),
    (_chat([]), "messages"),
    (_chat([{"role": "user"}]), "messages.0.content"),
    (_chat([{"role": "robot", "content": "hi"}]), "messages.0.role"),
    (_chat([{"role": "tool", "content": "42"}]), "messages.0.role"),
    (_chat([{"role": "user", "content": "  "}]), "messages.0.content"),
    (
        _chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
        "messages.0.content.0.type",
    ),
    (_chat([{"role": "user", "content": [{"type": "text"}]}]), "messages.0.content.0.text"),
    (
        _chat([{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}, *USER]),
        "messages.0.tool_calls",
    ),
    (_chat(USER, max_tokens=-1), "max_tokens"),
    (_chat(USER, top_p=2), "top_p"),
    (_chat(USER, seed="1"), "seed"),
    (_chat(USER, tools=[{"type": "function", "function": {"name": "f"}}]), "tools"),
    (_chat(USER, tool_choice="auto"), "tool_choice"),
    (_chat(USER, logprobs=True), "logprobs"),
    (_chat(USER, top_logprobs=2), "top_logprobs"),
    (_chat(USER, n=3), "n"),
]


@pytest.mark.parametrize(("body", "param"), CHAT_CASES)
async def test_chat_errors(gateway, body, param):
    _openai_error(await gateway.post("/v1/chat/completions", json=body), param)


async def test_unknown_route_and_method(gateway):
    r = await gateway.get("/nope")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    r = await gateway.get("/v1/nope")
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = await gateway.delete("/start")
    assert r.status_code == 405


# -- start ids ---------------------------------------------------------------------------


def test_start_id_round_trip_and_tampering():
    signer = StartIdSigner(b"k", ttl_s=60)
    params = {"prompt": "héllo 🌍", "seed": 3}
    start_id = signer.issue(params)
    assert signer.verify(start_id) == params

    version, payload, signature = start_id.split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    for bad in (
        f"{version}.{flipped}.{signature}",
        f"{version}.{payload}.{signature[:-1]}x",
        f"v2.{payload}.{signature}",
        StartIdSigner(b"other key", ttl_s=60).issue(params),
        "",
        "v1..",
    ):
        with pytest.raises(InvalidRequest) as caught:
            signer.verify(bad)
        assert caught.value.field == "id"


def test_start_id_expires():
    signer = StartIdSigner(b"k", ttl_s=10)
    start_id = signer.issue({"prompt": "hi"}, now=1000.0)
    assert signer.verify(start_id, now=1009.0) == {"prompt": "hi"}
    with pytest.raises(Exception, match="expired") as caught:
        signer.verify(start_id, now=1010.0)
    assert getattr(caught.value, "status_code", None) == 410


def test_start_id_too_long_for_a_url():
    signer = StartIdSigner(b"k", ttl_s=10)
    random_text = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(MAX_ID_CHARS))
    with pytest.raises(InvalidRequest) as caught:
        signer.issue({"prompt": random_text})
    assert caught.value.field == "prompt"


def test_unset_secret_warns_and_still_works(caplog):
    signer = StartIdSigner.from_settings(Settings(start_secret=None))
    assert "START_SECRET" in caplog.text
    assert signer.verify(signer.issue({"prompt": "x"})) == {"prompt": "x"}


async def test_forged_and_expired_ids_over_http(make_gateway):
    gateway = make_gateway(start_ttl_s=1)
    start = (await gateway.post("/start", json={"prompt": "hi", "max_new_tokens": 2})).json()
    forged = StartIdSigner(b"not " + SECRET.encode(), ttl_s=60).issue({"prompt": "evil"})
    r = await gateway.get("/generate", params={"id": forged})
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "id"
    expired = StartIdSigner(SECRET.encode(), ttl_s=60).issue({"prompt": "hi"}, now=time.time() - 61)
    r = await gateway.get("/generate", params={"id": expired})
    assert r.status_code == 410
    assert r.json()["error"] == {
        "code": "start_id_expired",
        "message": "id: this start id has expired; call POST /start again",
        "field": "id",
    }
    assert (await gateway.get(start["stream_url"])).status_code == 200
