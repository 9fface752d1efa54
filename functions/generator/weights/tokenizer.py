"""The tokenizer as the generator serves it: `tokenizers` and the chat template, no transformers.

A model directory in the plain layout (`tokenizer.json`, a `tokenizer_config.json` naming
`tokenizers`' own tokenizer class) needs nothing of transformers to tokenize: the Rust
tokenizer does the work, and the chat template is a Jinja template. Importing
transformers for them costs a cold start about 1.4 s (its `__init__` indexes every
module it has) and ~25 MB, so `PlainTokenizer` reads them directly and offers the
part of transformers' tokenizer interface the generator uses; anything else goes to
`AutoTokenizer` (`generator.weights.checkpoint.read_tokenizer`).

Chat templates are rendered as transformers renders them (`apply_chat_template`): the
same sandboxed Jinja environment (`trim_blocks`, `lstrip_blocks`, loop controls), its
`tojson` filter (no HTML escaping), `raise_exception` and `strftime_now`, and the
special tokens as variables. `tests/generator/test_tokenizer.py` checks the ids, the
text and the rendered conversations against transformers' own.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from generator.weights.jsonfile import read_object

# Tokenizer classes that are `tokenizers`' own tokenizer.json as it is, no Python model.
PLAIN_TOKENIZER_CLASSES = frozenset({"TokenizersBackend", "PreTrainedTokenizerFast"})
# transformers' named special tokens (`SPECIAL_TOKENS_ATTRIBUTES`), in its order.
_NAMED_SPECIAL = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)


class PlainTokenizer:
    """`tokenizer.json` plus the special tokens and chat template of a model directory."""

    def __init__(
        self,
        backend: Tokenizer,
        special: dict[str, str],
        extra_special: list[str],
        chat_template: str | None,
    ) -> None:
        self._backend = backend
        self.special_tokens_map = special
        self.chat_template = chat_template
        named = list(dict.fromkeys(special.values()))
        self.all_special_tokens = named + [t for t in extra_special if t not in named]

    @classmethod
    def read(cls, directory: Path) -> PlainTokenizer | None:
        """The directory's tokenizer, or None when it is not in the plain layout."""
        config = read_object(directory / "tokenizer_config.json")
        if config.get("tokenizer_class") not in PLAIN_TOKENIZER_CLASSES:
            return None
        if not (directory / "tokenizer.json").is_file():
            return None
        template_file = directory / "chat_template.jinja"
        template = config.get("chat_template")
        if template_file.is_file():
            template = template_file.read_text(encoding="utf-8")
        if template is not None and not isinstance(template, str):
            return None  # several named templates: transformers' choice rules apply
        special = {
            name: _content(config[name]) for name in _NAMED_SPECIAL if config.get(name) is not None
        }
        extra = config.get("extra_special_tokens") or config.get("additional_special_tokens")
        extra_tokens = [_content(t) for t in extra] if isinstance(extra, list) else []
        backend = Tokenizer.from_file(str(directory / "tokenizer.json"))
        return cls(backend, special, extra_tokens, template)

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        encoding = self._backend.encode(text, add_special_tokens=add_special_tokens)
        return {"input_ids": list(encoding.ids)}

    def decode(
        self,
        ids: list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool = False,
    ) -> str:
        if clean_up_tokenization_spaces:
            raise ValueError("clean_up_tokenization_spaces is not supported")
        return self._backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def convert_tokens_to_ids(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    @property
    def eos_token_id(self) -> int | None:
        eos = self.special_tokens_map.get("eos_token")
        return None if eos is None else self.convert_tokens_to_ids(eos)

    @property
    def all_special_ids(self) -> list[int]:
        ids = (self.convert_tokens_to_ids(token) for token in self.all_special_tokens)
        return [i for i in ids if i is not None]

    @property
    def added_tokens_decoder(self) -> dict[int, Any]:
        """The added tokens by id (`tokenizers.AddedToken`, as transformers lists them)."""
        return dict(self._backend.get_added_tokens_decoder())

    def get_vocab(self) -> dict[str, int]:
        return dict(self._backend.get_vocab(with_added_tokens=True))

    def __len__(self) -> int:
        return int(self._backend.get_vocab_size(with_added_tokens=True))

    def apply_chat_template(
        self,
        conversation: list[dict[str, Any]],
        add_generation_prompt: bool = False,
        tokenize: bool = False,
    ) -> str:
        if tokenize:
            raise ValueError("render first, then tokenize: tokenize=False only")
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template")
        text: str = _compile(self.chat_template).render(
            messages=conversation,
            tools=None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **self.special_tokens_map,
        )
        return text


@lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    """A chat template compiled once (per distinct template text)."""
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    return environment.from_string(template)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes HTML characters; templates expect plain JSON.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _content(token: Any) -> str:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    return str(token["content"]) if isinstance(token, dict) else str(token)
