"""The generator's tokenizer without transformers (`generator.weights.tokenizer`) gives what
transformers' gives: the same ids, the same text back, the same special tokens, and every
chat template rendered to the same characters (or refused with the same error)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from jinja2 import TemplateError

from generator.weights.checkpoint import read_tokenizer
from generator.weights.tokenizer import PlainTokenizer

TEXTS = (
    "Hello, world",
    " héllo 👋 世界 — naïve café",
    "<|im_start|>user\nHi there<|im_end|>\n<|endoftext|>",
    "def f(x):\n    return x * 2\n",
    "",
    "   leading and trailing   ",
)

CONVERSATIONS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "Hi 👋"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Why is the sky blue?"},
        {"role": "assistant", "content": "Rayleigh scattering."},
        {"role": "user", "content": 'And "sunsets"? <b>&</b>'},
    ],
    [{"role": "user", "content": "  spaced\n\nlines  "}, {"role": "assistant", "content": ""}],
]

# Templates in the styles models ship: the special tokens as variables, `raise_exception`
# for turn orders a model refuses, `tojson`, `namespace`, loop controls, whitespace control.
TEMPLATES = {
    "llama3": (
        "{{ bos_token }}{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' "
        "+ message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
        "{% endif %}"
    ),
    "alternating": (
        "{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Roles must alternate user/assistant/...') }}"
        "{% endif %}[{{ message['role'] }}] {{ message['content'] }}{{ eos_token }}\n"
        "{% endfor %}"
    ),
    "tojson-namespace-break": (
        "{% set ns = namespace(count=0) %}\n"
        "{% for message in messages %}\n"
        "  {% if ns.count >= 3 %}{% break %}{% endif %}\n"
        "  {% set ns.count = ns.count + 1 %}\n"
        "  {{ message | tojson }}\n"
        "{% endfor %}\n"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    ),
}


@pytest.fixture(scope="module")
def reference_tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_a_plain_directory_is_read_without_transformers(tiny_model_dir: Path) -> None:
    assert isinstance(read_tokenizer(str(tiny_model_dir)), PlainTokenizer)


def test_ids_text_and_special_tokens_match_transformers(
    tiny_model_dir: Path, reference_tokenizer: Any
) -> None:
    tokenizer = read_tokenizer(str(tiny_model_dir))
    reference = reference_tokenizer
    for text in TEXTS:
        for special in (True, False):
            ids = tokenizer(text, add_special_tokens=special)["input_ids"]
            assert ids == reference(text, add_special_tokens=special)["input_ids"], text
        for skip in (True, False):
            assert tokenizer.decode(ids, skip_special_tokens=skip) == reference.decode(
                ids, skip_special_tokens=skip
            )
    assert tokenizer.all_special_tokens == reference.all_special_tokens
    assert tokenizer.all_special_ids == reference.all_special_ids
    assert tokenizer.added_tokens_decoder == reference.added_tokens_decoder
    assert tokenizer.get_vocab() == reference.get_vocab()
    assert tokenizer.eos_token_id == reference.eos_token_id
    assert len(tokenizer) == len(reference)
    for token in [*reference.all_special_tokens, "hello", "<|im_end|>"]:
        assert tokenizer.convert_tokens_to_ids(token) == reference.convert_tokens_to_ids(token)


def test_the_models_own_template_renders_as_transformers_renders_it(
    tiny_model_dir: Path, reference_tokenizer: Any
) -> None:
    tokenizer = read_tokenizer(str(tiny_model_dir))
    assert tokenizer.chat_template == reference_tokenizer.chat_template
    for conversation in CONVERSATIONS:
        for prompt in (True, False):
            assert _render(tokenizer, conversation, prompt) == _render(
                reference_tokenizer, conversation, prompt
            )


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_other_templates_render_as_transformers_renders_them(
    tmp_path: Path, tiny_model_dir: Path, name: str
) -> None:
    from transformers import AutoTokenizer

    directory = tmp_path / name
    shutil.copytree(tiny_model_dir, directory)
    (directory / "chat_template.jinja").write_text(TEMPLATES[name], encoding="utf-8")
    tokenizer = read_tokenizer(str(directory))
    reference = AutoTokenizer.from_pretrained(directory)
    assert isinstance(tokenizer, PlainTokenizer)
    for conversation in CONVERSATIONS:
        for prompt in (True, False):
            try:
                expected = _render(reference, conversation, prompt)
            except TemplateError as refused:
                with pytest.raises(TemplateError, match=str(refused)):
                    _render(tokenizer, conversation, prompt)
                continue
            assert _render(tokenizer, conversation, prompt) == expected


def test_directories_it_does_not_cover_go_to_transformers(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    directory = tmp_path / "named-templates"
    shutil.copytree(tiny_model_dir, directory)
    (directory / "chat_template.jinja").unlink(missing_ok=True)
    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["chat_template"] = [{"name": "default", "template": "{{ messages }}"}]
    config_file.write_text(json.dumps(config))
    assert PlainTokenizer.read(directory) is None
    config["tokenizer_class"] = "LlamaTokenizer"
    config.pop("chat_template")
    config_file.write_text(json.dumps(config))
    assert PlainTokenizer.read(directory) is None


def _render(tokenizer: Any, conversation: list[dict[str, Any]], prompt: bool) -> str:
    text: str = tokenizer.apply_chat_template(
        conversation, add_generation_prompt=prompt, tokenize=False
    )
    return text
