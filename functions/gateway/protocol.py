"""The gateway's wire types: generation parameters, `/start`, and the OpenAI request bodies.

`GenerationParams` is the schema the generator accepts (`streamkit.generation`), so
bad input is refused here, before any stream or upstream request starts, exactly as
the generator would refuse it. Operator-tuned bounds are checked against `Settings`
(`check_limits`), whose limits have the same names and defaults as the generator's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic.json_schema import JsonDict
from pydantic_core import PydanticCustomError

from streamkit.errors import InvalidRequest
from streamkit.generation import (
    MAX_SEED,
    MAX_STOP_SEQUENCES,
    NOT_BLANK,
    GenerationLimits,
    GenerationParams,
    StopString,
    check_limits,
    parse_params,
    require_text,
    whole_number,
)


class StartResponse(BaseModel):
    id: str = Field(description="Opaque, signed, expiring: the parameters themselves.")
    stream_url: str = Field(description="Relative URL of the event stream for this id.")


# -- OpenAI-compatible bodies ----------------------------------------------------------
#
# Tolerant where OpenAI's clients expect tolerance, strict where it matters: a field this
# gateway does not know is accepted and ignored (`ignored_fields` lists it, the route logs
# it once and names it in the X-Ignored-Fields header), as OpenAI-compatible servers do;
# a known field keeps its type and range, and what cannot be honoured (several choices,
# log probabilities, tools, structured output, non-text content) is refused with a 400
# naming the field.


ROLES = ("system", "developer", "user", "assistant")
TEXT: JsonDict = {"type": "string", **NOT_BLANK}
ONE_TEXT: JsonDict = {"type": "array", "items": TEXT, "minItems": 1, "maxItems": 1}
TEXT_PART: JsonDict = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "text"}, "text": TEXT},
}


def _at_most(schema: JsonDict, items: int) -> None:
    """The array branch of a field's schema takes at most `items` (checked in words)."""
    for branch in schema.get("anyOf", []):  # type: ignore[union-attr]
        if isinstance(branch, dict) and branch.get("type") == "array":
            branch["maxItems"] = items


def _only(accepted: bool | int | str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value != accepted:
            raise PydanticCustomError("unsupported", f"only {json.dumps(accepted)} is supported")
        return value

    return check


# Fields that take the one value the gateway can honour. Strictly typed, unlike `Literal`,
# for which `0` is `false` and `true` is `1`: a client that sends `"echo": 0` meant
# something, and is told what is supported.
Off = Annotated[bool, AfterValidator(_only(False)), WithJsonSchema({"const": False})]
One = Annotated[int, AfterValidator(_only(1)), WithJsonSchema({"const": 1})]
Zero = Annotated[int, AfterValidator(_only(0)), WithJsonSchema({"const": 0})]
NoTools = Annotated[str, AfterValidator(_only("none")), WithJsonSchema({"const": "none"})]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: str = Field(json_schema_extra={"const": "text"})  # refused in words otherwise


def _extra_names(model: BaseModel, prefix: str = "") -> list[str]:
    return [prefix + name for name in (model.model_extra or {})]


class _OpenAIBase(BaseModel):
    """Fields both OpenAI endpoints share."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = Field(None, description="Echoed back; the generator serves one model.")
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: StopString | list[StopString] | None = Field(
        None, json_schema_extra=lambda schema: _at_most(schema, MAX_STOP_SEQUENCES)
    )
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: One = Field(1, description="Only one choice per request.")
    user: str | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, Any] | None = Field(None, max_length=0)
    response_format: ResponseFormat | None = Field(None, description='Only {"type": "text"}.')
    # Extensions (as in vLLM and llama.cpp's servers).
    top_k: int | None = Field(None, ge=0, le=1000)
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0)

    _integers = field_validator("max_tokens", "seed", "top_k", mode="before")(whole_number)

    def _params(
        self, fields: dict[str, Any], max_new_tokens: int | None, limits: GenerationLimits
    ) -> GenerationParams:
        """The generation parameters, within the operator's limits: each token cap the
        client gave is checked, the one that is used and the one that is not."""
        for name in ("max_tokens", "max_completion_tokens"):
            value = getattr(self, name, None)
            if value is not None and value > limits.max_new_tokens_limit:
                raise InvalidRequest(
                    name, f"must be at most {limits.max_new_tokens_limit}, got {value}"
                )
        if self.response_format is not None and self.response_format.type != "text":
            raise InvalidRequest(
                "response_format.type", 'only "text" is supported (no JSON mode or schema)'
            )
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > MAX_STOP_SEQUENCES:
            raise InvalidRequest("stop", f"at most {MAX_STOP_SEQUENCES} sequences")
        fields = {
            **fields,
            "stop": stop,
            "max_new_tokens": max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
            "seed": self.seed,
        }
        params = parse_params({k: v for k, v in fields.items() if v is not None})
        check_limits(params, limits)
        return params

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def ignored_fields(self) -> list[str]:
        """The fields of the request this gateway does not know (nested ones dotted)."""
        names = _extra_names(self)
        if self.stream_options is not None:
            names += _extra_names(self.stream_options, "stream_options.")
        return names


class CompletionRequest(_OpenAIBase):
    """`POST /v1/completions`: one prompt, continued as plain text."""

    prompt: str | list[str] = Field(
        json_schema_extra={"anyOf": [TEXT, ONE_TEXT]},
        description="The text to continue, or a list of exactly one such text.",
    )
    echo: Off = False
    logprobs: None = None
    best_of: One | None = None
    suffix: None = None

    def to_params(self, limits: GenerationLimits) -> GenerationParams:
        prompt = self.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise InvalidRequest("prompt", "exactly one prompt per request is supported")
            prompt = prompt[0]
        require_text(prompt, "prompt")
        return self._params({"prompt": prompt}, self.max_tokens, limits)


def _message_schema(schema: JsonDict) -> None:
    """The schema of what `ChatCompletionRequest.to_params` accepts: the types stay loose
    in Python so that each refusal there can name its field in words."""
    properties = schema["properties"]
    assert isinstance(properties, dict)
    properties["role"] = {"type": "string", "enum": list(ROLES)}
    properties["content"] = {
        "anyOf": [TEXT, {"type": "array", "minItems": 1, "items": TEXT_PART}],
        "description": "Text, or text parts (joined: the parts together are one turn, "
        "within MAX_PROMPT_CHARS like any other).",
    }
    properties["tool_calls"] = {
        "anyOf": [{"type": "array", "maxItems": 0}, {"type": "null"}],
        "description": "Tool calls: not supported.",
    }
    schema["required"] = ["role", "content"]


class ChatMessage(BaseModel):
    """One message as OpenAI's clients send it. The roles and content the model can take
    are checked in `ChatCompletionRequest.to_params`, each refusal naming its field."""

    model_config = ConfigDict(extra="allow", strict=True, json_schema_extra=_message_schema)

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None


class ChatCompletionRequest(_OpenAIBase):
    """`POST /v1/chat/completions`: a conversation of any number of turns, rendered by the
    generator with the model's own chat template. `developer` is a system message, as in
    OpenAI's API; leading system/developer messages form the system turn."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    _tokens = field_validator("max_completion_tokens", mode="before")(whole_number)
    logprobs: Off | None = None
    top_logprobs: Zero | None = Field(None, description="Log probabilities: not supported.")
    tools: list[Any] | None = Field(None, max_length=0, description="Tool calling: not supported.")
    tool_choice: NoTools | None = None
    functions: list[Any] | None = Field(None, max_length=0)
    function_call: NoTools | None = None

    def to_params(self, limits: GenerationLimits) -> GenerationParams:
        turns: list[dict[str, str]] = []
        for index, message in enumerate(self.messages):
            field = f"messages.{index}"
            role = "system" if message.role == "developer" else message.role
            if message.role not in ROLES:
                raise InvalidRequest(
                    f"{field}.role",
                    f"{message.role!r} is not supported (system, developer, user, assistant)",
                )
            if message.tool_calls:
                raise InvalidRequest(f"{field}.tool_calls", "tool calls are not supported")
            text = _text(message.content, f"{field}.content")
            require_text(text, f"{field}.content")
            if role == "system" and turns and all(t["role"] == "system" for t in turns):
                turns[0]["content"] += "\n\n" + text  # leading system messages: one turn
            else:
                turns.append({"role": role, "content": text})
        return self._params(
            {"messages": turns}, self.max_completion_tokens or self.max_tokens, limits
        )

    def ignored_fields(self) -> list[str]:
        names = super().ignored_fields()
        for message in self.messages:
            names += [n for n in _extra_names(message, "messages.*.") if n not in names]
        return names


def _text(content: str | list[dict[str, Any]] | None, field: str) -> str:
    """A message's text: a string, or its text parts joined; anything else is refused."""
    if content is None:
        raise InvalidRequest(field, "required: the message's text")
    if isinstance(content, str):
        return content
    if not content:
        raise InvalidRequest(field, "needs at least one text part")
    texts = []
    for index, part in enumerate(content):
        kind = part.get("type")
        if kind != "text":
            raise InvalidRequest(
                f"{field}.{index}.type", f"only text content is supported, not {kind!r}"
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise InvalidRequest(f"{field}.{index}.text", "must be a string")
        require_text(text, f"{field}.{index}.text")
        texts.append(text)
    return "".join(texts)
