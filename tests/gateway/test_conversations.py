"""Conversations through the gateway: the official `openai` client past its first message,
content parts, fields it does not know, the SSE path carrying `messages`, and the model's
name. Real processes for the client tests (tiny GPT-2 with the SmolLM2 chat template)."""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from devtools.processes import ServerProcess
from generator.app import create_app as create_generator
from generator.metrics import GeneratorMetrics
from generator.serving.engine import Engine
from generator.settings import Settings as GeneratorSettings
from support.gateway import gateway_process
from support.models import build_tiny_gpt2
from support.sse import check_stream, read_events, token_text

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "My name is Ada."},
    {"role": "assistant", "content": "Hello Ada."},
    {"role": "user", "content": "What is my name?"},
]
# Fields real clients send that the gateway does not use: accepted, ignored, named.
UNKNOWN = {
    "parallel_tool_calls": False,
    "metadata": {"conversation": "42"},
    "store": False,
    "service_tier": "auto",
    "min_p": 0.05,
}


@pytest.fixture(scope="module")
def gateway(tiny_generator: ServerProcess) -> Iterator[ServerProcess]:
    with gateway_process(tiny_generator.url, LOG_LEVEL="info") as server:
        yield server


@pytest.fixture(scope="module")
def client(gateway: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)


def rendered_tokens(tiny_model_dir: Path, messages: list[dict[str, str]]) -> int:
    """How many tokens the conversation is once the model's own template renders it."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_a_four_message_conversation_streams_with_usage(client, tiny_model_dir):
    stream = client.chat.completions.create(
        model="tiny", messages=CONVERSATION, max_tokens=12, seed=4, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert usage is not None
    assert 1 <= usage.completion_tokens <= 12
    # Every turn reached the model, the system prompt as its system turn, once.
    assert usage.prompt_tokens == rendered_tokens(tiny_model_dir, CONVERSATION)

    whole = client.chat.completions.create(
        model="tiny", messages=CONVERSATION, max_tokens=12, seed=4
    )
    assert whole.choices[0].message.content == text
    assert whole.choices[0].message.role == "assistant"
    assert whole.usage is not None
    assert whole.usage.prompt_tokens == usage.prompt_tokens


def test_developer_messages_and_text_parts_are_the_same_conversation(client):
    as_parts = [
        {"role": "developer", "content": [{"type": "text", "text": "You are terse."}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": "My name "}, {"type": "text", "text": "is Ada."}],
        },
        *CONVERSATION[2:],
    ]
    answers = [
        client.chat.completions.create(model="tiny", messages=m, max_tokens=8, seed=9)
        for m in (CONVERSATION, as_parts)
    ]
    assert answers[0].choices[0].message.content == answers[1].choices[0].message.content
    assert answers[0].usage is not None
    assert answers[1].usage is not None
    assert answers[0].usage.prompt_tokens == answers[1].usage.prompt_tokens


def test_unknown_fields_are_ignored_named_and_logged_once(client, gateway):
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model="tiny", messages=CONVERSATION, max_tokens=4, seed=1,
            response_format={"type": "text"}, top_logprobs=0, frequency_penalty=0.5,
            presence_penalty=0.5, extra_body=UNKNOWN,
        )  # fmt: skip
        assert raw.parse().choices[0].finish_reason in ("length", "stop")
        ignored = raw.headers["x-ignored-fields"].split(", ")
        assert sorted(ignored) == sorted(UNKNOWN)
    logs = gateway.logs()
    assert logs.count("ignoring request fields it does not use") == 1
    assert all(name in logs for name in UNKNOWN)
    assert "Ada" not in logs  # names only: nothing of the conversation reaches a log


@pytest.mark.parametrize(
    ("change", "param"),
    [
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ]
            },
            "messages.0.content.0.type",
        ),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format.type"),
        (
            {"messages": [{"role": "tool", "content": "42", "tool_call_id": "1"}]},
            "messages.0.role",
        ),
    ],
)
def test_what_cannot_be_honoured_is_a_400_naming_the_field(client, change, param):
    body = {"model": "tiny", "messages": CONVERSATION, "max_tokens": 4, **change}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**body)
    assert caught.value.body["param"] == param


# -- the SSE path: POST /start and POST /generate carry conversations -------------------


async def test_a_conversation_through_start_and_the_event_stream(gateway):
    body = {"messages": CONVERSATION, "max_new_tokens": 6, "seed": 2}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        start = (await http.post("/start", json=body)).json()
        by_id = await read_events(http, start["stream_url"])
        assert check_stream(by_id).event == "done"
        async with http.stream("POST", "/generate", json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
        posted = await read_events(http, "/generate", method="POST", json=body)
    assert token_text(posted) == token_text(by_id)


@pytest.fixture(scope="module")
def long_context_app(tmp_path_factory):
    """A tiny GPT-2 with an 8192-token context: room for a conversation whose start id
    would be too long for a URL."""
    model = build_tiny_gpt2(tmp_path_factory.mktemp("tiny-8k"), context=8192)
    settings = GeneratorSettings(model=str(model))
    engine = Engine(settings, GeneratorMetrics())
    engine.load()
    return create_generator(settings, engine)


async def test_a_conversation_longer_than_any_start_id_streams_from_post_generate(
    make_gateway, long_context_app
):
    words = random.Random(0)
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant",
         "content": " ".join("".join(words.choices(string.ascii_lowercase, k=6))
                             for _ in range(120))}
        for i in range(11)
    ]  # fmt: skip
    body = {"messages": turns, "max_new_tokens": 4}
    gateway = make_gateway(long_context_app)
    refused = await gateway.post("/start", json=body)
    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "messages"
    assert "POST /generate" in refused.json()["error"]["message"]
    events = await read_events(gateway, "/generate", method="POST", json=body)
    done = check_stream(events)
    assert done.event == "done", done
    assert done.data["usage"]["prompt_tokens"] > 3000


# -- the model's name ------------------------------------------------------------------


async def test_models_names_the_served_model(make_gateway, upstream, tiny_model_dir):
    listed = (await make_gateway().get("/v1/models")).json()["data"]
    assert [m["id"] for m in listed] == [tiny_model_dir.name]  # what the generator reports
    upstream.headers.clear()
    named = make_gateway(model_name="SmolLM2-135M-Instruct")
    listed = (await named.get("/v1/models")).json()["data"]
    assert [m["id"] for m in listed] == ["SmolLM2-135M-Instruct"]
    assert upstream.headers == []  # answered without waking the generator
