"""The generator's wire types: the request body and the NDJSON events it streams back.

Static bounds (types, ranges that hold for any model) live on the fields here;
bounds an operator tunes (prompt length, max_new_tokens) are checked against
`Settings` by `check_limits`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from generator.settings import Settings
from streamkit.errors import InvalidRequest

MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 64
MAX_SEED = 2**63 - 1

StopString = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STOP_CHARS)]


class GenerateRequest(BaseModel):
    """Body of `POST /v1/generate`. Strict: `"5"` is not an int, unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, description="Text to continue (or the user turn when chat).")
    max_new_tokens: int | None = Field(
        None, ge=1, description="Tokens to generate at most; default and cap come from settings."
    )
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 = greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int = Field(0, ge=0, le=1000, description="Sample among the k likeliest; 0 = off.")
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0, description="1.0 = off.")
    stop: list[StopString] = Field(
        default_factory=list,
        max_length=MAX_STOP_SEQUENCES,
        description="Strings that end generation; they are not emitted.",
    )
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Makes sampling reproducible.")
    chat: bool = Field(False, description="Wrap the prompt in the model's chat template.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def check_limits(request: GenerateRequest, settings: Settings) -> int:
    """Check the operator-tuned bounds; return the effective `max_new_tokens`."""
    if not request.prompt.strip():
        raise InvalidRequest("prompt", "must contain non-whitespace text")
    if len(request.prompt) > settings.max_prompt_chars:
        raise InvalidRequest(
            "prompt", f"is {len(request.prompt)} characters; at most {settings.max_prompt_chars}"
        )
    max_new = request.max_new_tokens or settings.default_max_new_tokens
    if max_new > settings.max_new_tokens_limit:
        raise InvalidRequest(
            "max_new_tokens", f"must be at most {settings.max_new_tokens_limit}, got {max_new}"
        )
    return max_new


FinishReason = Literal["length", "stop", "eos"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class Timings(BaseModel):
    """Milliseconds from the request's arrival; `tokens_per_s` is the decode rate."""

    queue_ms: float
    ttft_ms: float
    total_ms: float
    tokens_per_s: float


def token_event(index: int, text: str) -> dict[str, Any]:
    return {"type": "token", "index": index, "text": text}


def status_event(
    state: Literal["queued", "loading"], position: int | None = None
) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "status", "state": state}
    if position is not None:
        event["position"] = position
    return event


def done_event(finish_reason: FinishReason, usage: Usage, timings: Timings) -> dict[str, Any]:
    return {
        "type": "done",
        "finish_reason": finish_reason,
        "usage": usage.model_dump(),
        "timings": timings.model_dump(),
    }


def error_event(payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": "error", **payload}


def ndjson_line(event: dict[str, Any]) -> bytes:
    """One event as one line. `ensure_ascii=False` keeps the line as short as the text."""
    return (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
