"""The generation parameters both functions speak: one schema, validated at both hops.

The gateway refuses bad input before any stream or upstream request starts; the
generator checks again because it is callable on its own. Both use this model and
`check_limits`, so the two can never disagree about what a valid request is.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from streamkit.errors import InvalidRequest, describe_validation_error

MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 64
# The largest integer every JSON reader keeps exactly (a JavaScript number, a float64
# schema validator): a seed must arrive as the number that was sent.
MAX_SEED = 2**53 - 1


def whole_number(value: object) -> object:
    """For a `mode="before"` validator of an integer field: `5.0` is read as `5`. JSON has
    one number type and JSON Schema counts 5.0 as an integer, so a client (or a generated
    one) that writes it so is understood; `5.5` still fails as not an integer."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


StopString = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STOP_CHARS)]
Role = Literal["system", "user", "assistant"]
# Text that holds something besides whitespace: one pattern for the schemas (so clients
# and fuzzers know it) and for `require_text`. Whitespace as JSON Schema's regular
# expressions (ECMAScript's) define it, spelled out: Python's `\s` and `str.isspace` also
# count the control characters \x1c-\x1f and \x85, which would make the two disagree.
_WHITESPACE = r"\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
NOT_BLANK: JsonDict = {"pattern": f"[^{_WHITESPACE}]"}
_SOMETHING = re.compile(f"[^{_WHITESPACE}]")


class Message(BaseModel):
    """One turn of a conversation, as text."""

    model_config = ConfigDict(extra="forbid", strict=True)

    role: Role
    content: str = Field(json_schema_extra=NOT_BLANK)


def _one_of_the_two(schema: JsonDict) -> None:
    """In the schema: exactly one of `prompt` and `messages`, neither of them null."""
    schema["oneOf"] = [{"required": ["prompt"]}, {"required": ["messages"]}]
    properties = schema["properties"]
    assert isinstance(properties, dict)
    for name in ("prompt", "messages"):
        field = properties[name]
        assert isinstance(field, dict)
        branches = field.pop("anyOf")
        assert isinstance(branches, list)
        (typed,) = [b for b in branches if isinstance(b, dict) and b.get("type") != "null"]
        assert isinstance(typed, dict)
        field.pop("default", None)
        field.update(typed)


class GenerationParams(BaseModel):
    """One generation's parameters. Strict: `"5"` is not an int; unknown fields are errors
    (query strings are validated with `strict=False`, so `?max_new_tokens=5` works).
    Exactly one of `prompt` (a text) and `messages` (a conversation) is given."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_one_of_the_two)

    # Plain optionals (errors name `prompt` and `messages.0.role`, not a union's branches);
    # the schema leaves their null out (`_one_of_the_two`).
    prompt: str | None = Field(
        None,
        min_length=1,
        description="Text to continue (or the user turn when chat).",
        json_schema_extra=NOT_BLANK,
    )
    messages: list[Message] | None = Field(
        None,
        min_length=1,
        description="A conversation, rendered with the model's chat template; the answer is "
        "the next assistant turn. Instead of `prompt`.",
    )
    max_new_tokens: int | None = Field(
        None, ge=1, description="Tokens to generate at most; default and cap come from settings."
    )
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 = greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int = Field(0, ge=0, le=1000, description="Sample among the k likeliest; 0 = off.")
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0, description="1.0 = off.")
    frequency_penalty: float = Field(
        0.0,
        ge=-2.0,
        le=2.0,
        description="Subtracted from a token's logit once per time it was generated (OpenAI's).",
    )
    presence_penalty: float = Field(
        0.0,
        ge=-2.0,
        le=2.0,
        description="Subtracted from a token's logit once it was generated at all (OpenAI's).",
    )
    stop: list[StopString] = Field(
        default_factory=list,
        max_length=MAX_STOP_SEQUENCES,
        description="Strings that end generation; they are not emitted.",
    )
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Makes sampling reproducible.")
    chat: bool = Field(
        False, description="Wrap `prompt` in the model's chat template (as one user turn)."
    )

    _integers = field_validator("max_new_tokens", "top_k", "seed", mode="before")(whole_number)

    @field_validator("prompt", "messages", mode="before")
    @classmethod
    def _absent_rather_than_null(cls, value: object) -> object:
        # Runs only for values a client gave: an explicit null would otherwise slip past
        # the schema's "one of the two", which says each is a string or a list, or absent.
        if value is None:
            raise PydanticCustomError("null_given", "must be left out rather than null")
        return value

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def wire_body(self) -> dict[str, Any]:
        """The JSON body for the generator (unset optionals left out: its defaults apply)."""
        return self.model_dump(exclude_none=True)


def parse_params(data: dict[str, Any], *, strict: bool = True) -> GenerationParams:
    """`data` as generation parameters, or `InvalidRequest` naming the first bad field.
    `strict=False` for query strings, where every value arrives as text."""
    try:
        return GenerationParams.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise describe_validation_error(exc.errors()) from None


def require_text(text: str, field: str) -> None:
    """A prompt (or a conversation) must hold something besides whitespace."""
    if not _SOMETHING.search(text):
        raise InvalidRequest(field, "must contain non-whitespace text")


class GenerationLimits(BaseModel):
    """The operator-tuned bounds, a base of both functions' `Settings` (environment
    variables MAX_PROMPT_CHARS, MAX_MESSAGES, MAX_NEW_TOKENS_LIMIT), so the two always
    agree. The model's context is the last bound, checked where the prompt is tokenized."""

    max_prompt_chars: int = Field(
        64_000,
        ge=1,
        description="Longest accepted prompt, or turn of a conversation, in characters (the "
        "default leaves the default model's 8192-token context as the real bound).",
    )
    max_messages: int = Field(256, ge=1, description="Most turns a conversation may have.")
    max_body_bytes: int = Field(
        1_048_576,
        ge=1024,
        description="Largest request body, in bytes; a larger one is refused with 413 "
        "before it is parsed.",
    )
    max_new_tokens_limit: int = Field(1024, ge=1, description="Largest accepted `max_new_tokens`.")


def check_limits(params: GenerationParams, limits: GenerationLimits) -> None:
    """Check the bounds an operator tunes and the shape of a conversation; raise
    `InvalidRequest` naming the field."""
    if params.messages is not None:
        if params.prompt is not None:
            raise InvalidRequest("messages", "give either prompt or messages, not both")
        check_conversation(params.messages, limits)
    elif params.prompt is None:
        raise InvalidRequest("prompt", "required: the text to continue (or give messages)")
    else:
        require_text(params.prompt, "prompt")
        if len(params.prompt) > limits.max_prompt_chars:
            raise InvalidRequest(
                "prompt", f"is {len(params.prompt)} characters; at most {limits.max_prompt_chars}"
            )
    if params.max_new_tokens is not None and params.max_new_tokens > limits.max_new_tokens_limit:
        raise InvalidRequest(
            "max_new_tokens",
            f"must be at most {limits.max_new_tokens_limit}, got {params.max_new_tokens}",
        )


def check_conversation(messages: list[Message], limits: GenerationLimits) -> None:
    """Every turn holds text, and the conversation is within the operator's bounds: the
    number of turns, and the length of each turn (the request's body size bounds their
    sum, the model's context what it costs)."""
    if len(messages) > limits.max_messages:
        raise InvalidRequest(
            "messages", f"has {len(messages)} turns; at most {limits.max_messages}"
        )
    for index, message in enumerate(messages):
        field = f"messages.{index}.content"
        require_text(message.content, field)
        if len(message.content) > limits.max_prompt_chars:
            raise InvalidRequest(
                field, f"is {len(message.content)} characters; at most {limits.max_prompt_chars}"
            )
