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


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool = False


class _OpenAIBase(BaseModel):
    """Fields both OpenAI endpoints share. Unknown fields are refused (naming them), and
    fields the model cannot honour are accepted only at their neutral value."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(None, description="Echoed back; the generator serves one model.")
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: StopString | list[StopString] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    user: str | None = None
    presence_penalty: Literal[0] | None = None
    frequency_penalty: Literal[0] | None = None
    logit_bias: dict[str, Any] | None = Field(None, max_length=0)
    # Extensions (as in vLLM and llama.cpp's servers).
    top_k: int | None = Field(None, ge=0, le=1000)
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0)

    def _params(self, prompt: str, chat: bool, max_new_tokens: int | None) -> GenerationParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > MAX_STOP_SEQUENCES:
            raise InvalidRequest("stop", f"at most {MAX_STOP_SEQUENCES} sequences")
        fields: dict[str, Any] = {
            "prompt": prompt,
            "chat": chat,
            "stop": stop,
            "max_new_tokens": max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
        }
        require_text(prompt, "messages" if chat else "prompt")
        return parse_params({k: v for k, v in fields.items() if v is not None})

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


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
        return self._params(prompt, chat=False, max_new_tokens=self.max_tokens)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_OpenAIBase):
    """`POST /v1/chat/completions`. The generator templates a single user turn, so the
    conversation must be one user message, optionally after one system message (which
    is put before the user's text); other shapes are refused rather than guessed at."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: Literal[False] | None = None

    def to_params(self) -> GenerationParams:
        roles = [message.role for message in self.messages]
        if roles not in (["user"], ["system", "user"], ["developer", "user"]):
            raise InvalidRequest(
                "messages",
                "must be one user message, optionally preceded by one system message "
                f"(multi-turn conversations are not supported); got roles {roles}",
            )
        prompt = "\n\n".join(message.text for message in self.messages if message.text)
        return self._params(
            prompt, chat=True, max_new_tokens=self.max_completion_tokens or self.max_tokens
        )
