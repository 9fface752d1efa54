"""The wire events: what the generator streams as NDJSON and the gateway relays as SSE.

One definition for every producer and consumer: the generator builds these models and
writes them with `to_ndjson`; the gateway reads them back with `from_ndjson` (a line
that does not fit is a broken stream) and names them on its Server-Sent Events with
`sse_fields`; tests and the benchmark parse both forms with the same functions.

    {"type":"status","state":"queued","position":2}       while the request waits
    {"type":"token","index":0,"text":"Hello"}             one per piece of text
    {"type":"done","finish_reason":"length","usage":{...},"timings":{...}}
    {"type":"error","code":"...","message":"..."}         instead of done

Every stream ends with exactly one `done` or `error` (`TERMINAL`). Fields that are
absent (`position`, `field`, `retry_after_s`) are left out of the line, not sent as
null. Unknown fields are ignored when reading, so a newer producer does not break an
older consumer.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from streamkit.errors import Overloaded, RelayedError, ServiceError

FinishReason = Literal["length", "stop", "eos"]
# The SSE `id` of a terminal event: a browser EventSource that reconnects after the end
# sends it back as Last-Event-ID, which the gateway answers with 204 (stop, don't rerun).
END_ID = "end"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class StatusEvent(_Model):
    """Why the request waits: `queued` (at `position`) or `loading` (a cold start)."""

    type: Literal["status"] = "status"
    state: Literal["queued", "loading"]
    position: int | None = Field(None, ge=0)


class TokenEvent(_Model):
    """The next piece of text; `index` counts the token events of the stream from 0."""

    type: Literal["token"] = "token"
    index: int = Field(ge=0)
    text: str


class Usage(_Model):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)


class Timings(_Model):
    """Milliseconds from the request's arrival; `tokens_per_s` is the decode rate."""

    queue_ms: float
    ttft_ms: float
    total_ms: float
    tokens_per_s: float


class DoneEvent(_Model):
    type: Literal["done"] = "done"
    finish_reason: FinishReason
    usage: Usage
    timings: Timings


class ErrorEvent(_Model):
    """A failure after the stream started: the same `code`/`message`/`field` as the JSON
    body of an HTTP error (`ServiceError.payload`), plus `retry_after_s` for overload."""

    type: Literal["error"] = "error"
    code: str
    message: str
    field: str | None = None
    retry_after_s: int | None = None

    @classmethod
    def from_error(cls, error: ServiceError) -> ErrorEvent:
        retry_after_s = error.retry_after_s if isinstance(error, Overloaded) else None
        return cls(**error.payload(), retry_after_s=retry_after_s)

    def to_error(self) -> RelayedError:
        """The error again, with the HTTP status its code declares (for a hop that answers
        in one piece, such as the non-streamed OpenAI endpoints)."""
        return RelayedError(self.code, self.message, self.field, self.retry_after_s)


# Any one event; pydantic picks the model by `type`.
Event = Annotated[StatusEvent | TokenEvent | DoneEvent | ErrorEvent, Field(discriminator="type")]
TERMINAL = (DoneEvent, ErrorEvent)
_EVENT: TypeAdapter[Event] = TypeAdapter(Event)


def to_ndjson(event: Event) -> bytes:
    """One event as one line of compact JSON (text kept as UTF-8, as short as it is)."""
    return event.model_dump_json(exclude_none=True).encode() + b"\n"


def from_ndjson(line: bytes | str) -> Event:
    """One line back into its event; `pydantic.ValidationError` when it is not one."""
    return _EVENT.validate_json(line)


def from_dict(data: dict[str, Any]) -> Event:
    return _EVENT.validate_python(data)


def sse_fields(event: Event) -> tuple[str, str | None, dict[str, Any]]:
    """The SSE form: (event name, id, data object). Tokens carry their index as the id and
    terminal events `END_ID`; the data is the event without its `type`."""
    data = event.model_dump(exclude={"type"}, exclude_none=True)
    if isinstance(event, TokenEvent):
        return event.type, str(event.index), data
    if isinstance(event, TERMINAL):
        return event.type, END_ID, data
    return event.type, None, data


def from_sse(name: str, data: str) -> Event:
    """An SSE event (its name and data line) back into the event it carries."""
    return from_dict({**json.loads(data), "type": name})
