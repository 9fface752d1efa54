"""The generator's wire types: the request body and the NDJSON events it streams back.

The request schema is shared with the gateway (`streamkit.generation`); bounds an
operator tunes (prompt length, max_new_tokens) are checked against `Settings`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel

from generator.settings import Settings
from streamkit.generation import GenerationParams, check_limits

# The request body of `POST /v1/generate` is the schema both functions share.
GenerateRequest = GenerationParams


def effective_max_new_tokens(request: GenerateRequest, settings: Settings) -> int:
    """Check the operator-tuned bounds; return the `max_new_tokens` to use."""
    check_limits(request, settings)
    return request.max_new_tokens or settings.default_max_new_tokens


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
