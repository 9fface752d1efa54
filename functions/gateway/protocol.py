"""The gateway's wire types: generation parameters, `/start`, and the OpenAI request bodies.

`GenerationParams` is the schema the generator accepts (`streamkit.generation`), so
bad input is refused here, before any stream or upstream request starts, exactly as
the generator would refuse it. Operator-tuned bounds are checked against `Settings`
(`check_limits`), whose limits have the same names and defaults as the generator's.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from streamkit.errors import InvalidRequest
from streamkit.generation import (
    MAX_SEED,
    MAX_STOP_SEQUENCES,
    GenerationParams,
    StopString,
    parse_params,
    require_text,
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


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: str


def _extra_names(model: BaseModel, prefix: str = "") -> list[str]:
    return [prefix + name for name in (model.model_extra or {})]


class _OpenAIBase(BaseModel):
    """Fields both OpenAI endpoints share."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = Field(None, description="Echoed back; the generator serves one model.")
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: StopString | list[StopString] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = Field(1, description="Only one choice per request.")
    user: str | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, Any] | None = Field(None, max_length=0)
    response_format: ResponseFormat | None = Field(None, description='Only {"type": "text"}.')
    # Extensions (as in vLLM and llama.cpp's servers).
    top_k: int | None = Field(None, ge=0, le=1000)
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0)

    def _params(self, fields: dict[str, Any], max_new_tokens: int | None) -> GenerationParams:
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
        return parse_params({k: v for k, v in fields.items() if v is not None})

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

    prompt: str | list[str]
    echo: Literal[False] = False
    logprobs: None = None
    best_of: Literal[1] | None = None
    suffix: None = None

    def to_params(self) -> GenerationParams:
        prompt = self.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise InvalidRequest("prompt", "exactly one prompt per request is supported")
            prompt = prompt[0]
        require_text(prompt, "prompt")
        return self._params({"prompt": prompt}, max_new_tokens=self.max_tokens)


class ChatMessage(BaseModel):
    """One message as OpenAI's clients send it. The roles and content the model can take
    are checked in `ChatCompletionRequest.to_params`, each refusal naming its field."""

    model_config = ConfigDict(extra="allow", strict=True)

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
    logprobs: Literal[False] | None = None
    top_logprobs: Literal[0] | None = Field(None, description="Log probabilities: not supported.")
    tools: list[Any] | None = Field(None, max_length=0, description="Tool calling: not supported.")
    tool_choice: Literal["none"] | None = None
    functions: list[Any] | None = Field(None, max_length=0)
    function_call: Literal["none"] | None = None

    def to_params(self) -> GenerationParams:
        turns: list[dict[str, str]] = []
        for index, message in enumerate(self.messages):
            field = f"messages.{index}"
            role = "system" if message.role == "developer" else message.role
            if role not in ("system", "user", "assistant"):
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
            {"messages": turns}, max_new_tokens=self.max_completion_tokens or self.max_tokens
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
        texts.append(text)
    return "".join(texts)
