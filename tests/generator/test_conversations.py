"""Conversations: `messages` rendered with the model's own chat template (or plainly, for a
model without one), bounded and checked turn by turn; and the frequency and presence
penalties. The tiny GPT-2 carries the real SmolLM2 tokenizer, chat template included."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from devtools.reference import decode_alone
from generator.decode.prompt import encode_prompt, render_plain
from generator.decode.sampling import OccurrencePenalty, Sampler
from generator.metrics import GeneratorMetrics
from generator.serving.engine import Engine
from generator.settings import Settings
from streamkit.errors import InvalidRequest
from streamkit.generation import GenerationParams, Message
from support.ndjson import parse_ndjson, streamed_text

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "My name is Ada."},
    {"role": "assistant", "content": "Hello Ada."},
    {"role": "user", "content": "What is my name?"},
]
DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM"


def rendered(engine: Engine, messages: list[dict[str, str]]) -> str:
    request = GenerationParams(messages=[Message(**m) for m in messages])
    ids = encode_prompt(engine.loaded, request, 16)
    return engine.loaded.tokenizer.decode(ids)


def test_the_template_renders_every_turn_and_the_system_prompt_once(tiny_engine):
    text = rendered(tiny_engine, CONVERSATION)
    template = tiny_engine.loaded.tokenizer.apply_chat_template(
        CONVERSATION, add_generation_prompt=True, tokenize=False
    )
    assert text == template
    assert text.count("You are terse.") == 1
    assert text.startswith("<|im_start|>system\nYou are terse.<|im_end|>")
    assert DEFAULT_SYSTEM_PROMPT not in text  # the model's own default gives way to ours
    assert text.index("My name is Ada.") < text.index("Hello Ada.") < text.index("my name?")
    assert text.endswith("<|im_start|>assistant\n")  # the cue for the answer


STRICT_TEMPLATE = (  # as some models' templates do: turns must alternate after the system
    "{% for m in messages %}{% if m['role'] == 'system' and not loop.first %}"
    "{{ raise_exception('System messages only come first') }}{% endif %}"
    "{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
)


def test_a_conversation_the_models_template_refuses_is_a_422_in_its_words(tiny_engine, monkeypatch):
    monkeypatch.setattr(tiny_engine.loaded.tokenizer, "chat_template", STRICT_TEMPLATE)
    late_system = [*CONVERSATION, {"role": "system", "content": "Be brief."}]
    request = GenerationParams(messages=[Message(**m) for m in late_system])
    with pytest.raises(InvalidRequest) as refused:
        encode_prompt(tiny_engine.loaded, request, 16)
    assert refused.value.field == "messages"
    assert "System messages only come first" in str(refused.value)
    # The same template renders a conversation it accepts.
    assert rendered(tiny_engine, CONVERSATION).endswith("assistant:")


def test_a_prompt_with_chat_is_one_user_turn(tiny_engine):
    request = GenerationParams(prompt="Hi there", chat=True)
    ids = encode_prompt(tiny_engine.loaded, request, 16)
    assert ids == encode_prompt(
        tiny_engine.loaded,
        GenerationParams(messages=[Message(role="user", content="Hi there")]),
        16,
    )


@pytest.fixture(scope="module")
def templateless_engine(tiny_model_dir: Path, tmp_path_factory) -> Engine:
    """The tiny model without a chat template, as a base model such as GPT-2 comes."""
    target = tmp_path_factory.mktemp("no-template")
    shutil.copytree(tiny_model_dir, target, dirs_exist_ok=True)
    (target / "chat_template.jinja").unlink(missing_ok=True)
    engine = Engine(Settings(model=str(target)), GeneratorMetrics())
    engine.load()
    assert engine.ready, engine.load_error
    assert not engine.loaded.tokenizer.chat_template
    return engine


def test_a_model_without_a_template_gets_the_plain_rendering(templateless_engine):
    text = rendered(templateless_engine, CONVERSATION)
    assert text == (
        "System: You are terse.\n\nUser: My name is Ada.\n\nAssistant: Hello Ada.\n\n"
        "User: What is my name?\n\nAssistant:"
    )
    assert render_plain([Message(role="user", content="hi")]) == "User: hi\n\nAssistant:"


async def test_a_conversation_streams_what_it_decodes_in_one_piece(client, tiny_engine):
    body = {"messages": CONVERSATION, "max_new_tokens": 60, "temperature": 1.0, "seed": 5}
    response = await client.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    events = parse_ndjson(response.text)
    request = GenerationParams(**body)
    lm = tiny_engine.loaded
    prompt_ids = encode_prompt(lm, request, 60)
    ids = list(decode_alone(lm, prompt_ids, 60, Sampler(request, lm.device, prompt_ids)))
    one_piece = lm.tokenizer.decode(
        [i for i in ids if i not in lm.eos_ids],
        skip_special_tokens=True,
        clean_up_tokenization_spaces=False,
    )
    assert streamed_text(events).encode() == one_piece.encode()
    assert events[-1]["usage"]["prompt_tokens"] == len(prompt_ids)


USER = {"role": "user", "content": "hi"}
BAD_CONVERSATIONS = [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "user"}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"messages": [USER, {"role": "assistant", "content": " \n"}]}, "messages.1.content"),
    ({"messages": [USER], "prompt": "hi"}, "messages"),
    ({"messages": [USER] * 300}, "messages"),  # MAX_MESSAGES: 256
    ({"messages": [USER, {"role": "user", "content": "x" * 64_001}]}, "messages.1.content"),
    ({"messages": [{"role": "user", "content": "word " * 5_000}]}, "messages"),  # > context
    ({"messages": [USER], "frequency_penalty": 3}, "frequency_penalty"),
    ({"messages": [USER], "presence_penalty": "some"}, "presence_penalty"),
]


@pytest.mark.parametrize(("body", "field"), BAD_CONVERSATIONS)
async def test_a_malformed_conversation_is_a_4xx_naming_the_field(client, body, field):
    response = await client.post("/v1/generate", json={**body, "max_new_tokens": 8})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    assert error["message"].startswith(field)


async def test_readiness_names_the_model(client, tiny_model_dir):
    body = (await client.get("/readyz")).json()
    assert body["model_name"] == tiny_model_dir.name  # no recorded name: the directory's
    settings = Settings(model=str(tiny_model_dir), model_name="tiny-chat")
    assert settings.served_name == "tiny-chat"


def test_the_prepared_default_model_records_its_name(default_model_dir):
    assert Settings(model=str(default_model_dir)).served_name == "SmolLM2-135M-Instruct"


# -- OpenAI's frequency and presence penalties -------------------------------------------


def test_occurrence_penalty_is_openais_definition():
    penalty = OccurrencePenalty(frequency=0.5, presence=1.0)
    scores = torch.zeros(1, 4)
    assert penalty(scores).tolist() == [[0.0, 0.0, 0.0, 0.0]]
    for token in (2, 2, 3):
        penalty.count(token)
    # Token 2 was generated twice: 2 * 0.5 + 1.0; token 3 once: 0.5 + 1.0.
    assert penalty(scores).tolist() == [[0.0, 0.0, -2.0, -1.5]]


def test_a_presence_penalty_moves_greedy_decoding_off_a_repeated_token():
    """Greedy picks the likeliest token; once picked, a presence penalty larger than its
    lead sends the next pick elsewhere."""
    request = GenerationParams(prompt="x", temperature=0, presence_penalty=1.0)
    sampler = Sampler(request, "cpu", [1])
    logits = torch.tensor([[0.0, 3.0, 2.5, 0.0]])
    assert sampler(logits) == 1
    assert sampler(logits) == 2  # 3.0 - 1.0 < 2.5
    plain = Sampler(GenerationParams(prompt="x", temperature=0), "cpu", [1])
    assert [plain(logits), plain(logits)] == [1, 1]


async def test_penalties_are_accepted_and_change_nothing_at_zero(client):
    body = {"prompt": "Hello", "max_new_tokens": 12, "temperature": 0}
    plain = parse_ndjson((await client.post("/v1/generate", json=body)).text)
    zero = {**body, "frequency_penalty": 0.0, "presence_penalty": 0.0}
    same = parse_ndjson((await client.post("/v1/generate", json=zero)).text)
    assert streamed_text(same) == streamed_text(plain)
    strong = {**body, "frequency_penalty": 2.0, "presence_penalty": 2.0}
    penalised = parse_ndjson((await client.post("/v1/generate", json=strong)).text)
    assert penalised[-1]["type"] == "done"
