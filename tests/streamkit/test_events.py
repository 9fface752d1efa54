"""The wire events (`streamkit.events`): the exact bytes each one travels as, and what a
consumer refuses."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from streamkit.errors import InvalidRequest, Overloaded
from streamkit.events import (
    END_ID,
    DoneEvent,
    ErrorEvent,
    StatusEvent,
    Timings,
    TokenEvent,
    Usage,
    from_ndjson,
    from_sse,
    sse_fields,
    to_ndjson,
)

DONE = DoneEvent(
    finish_reason="length",
    usage=Usage(prompt_tokens=4, completion_tokens=2),
    timings=Timings(queue_ms=0.4, ttft_ms=41.2, total_ms=80.5, tokens_per_s=24.6),
)
EVENTS = [
    StatusEvent(state="queued", position=2),
    StatusEvent(state="loading"),
    TokenEvent(index=0, text="Hello"),
    TokenEvent(index=1, text=" 👋 世界\n"),
    DONE,
    ErrorEvent(code="generation_failed", message="boom"),
    ErrorEvent.from_error(Overloaded("busy", retry_after_s=2)),
]


def test_lines_are_the_contracts_bytes() -> None:
    """Compact, `type` first, text as UTF-8 (not escaped), absent fields left out."""
    assert to_ndjson(TokenEvent(index=0, text="Hi é")) == (
        '{"type":"token","index":0,"text":"Hi é"}\n'.encode()
    )
    assert to_ndjson(StatusEvent(state="loading")) == b'{"type":"status","state":"loading"}\n'
    assert json.loads(to_ndjson(DONE)) == {
        "type": "done",
        "finish_reason": "length",
        "usage": {"prompt_tokens": 4, "completion_tokens": 2},
        "timings": {"queue_ms": 0.4, "ttft_ms": 41.2, "total_ms": 80.5, "tokens_per_s": 24.6},
    }


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_every_event_reads_back_as_itself(event) -> None:
    line = to_ndjson(event)
    assert line.count(b"\n") == 1  # one line, whatever the text holds
    assert from_ndjson(line) == event
    name, _, data = sse_fields(event)
    assert from_sse(name, json.dumps(data)) == event


def test_sse_ids_number_tokens_and_mark_the_end() -> None:
    assert sse_fields(TokenEvent(index=7, text="x"))[:2] == ("token", "7")
    assert sse_fields(DONE)[:2] == ("done", END_ID)
    assert sse_fields(ErrorEvent(code="c", message="m"))[:2] == ("error", END_ID)
    assert sse_fields(StatusEvent(state="loading"))[:2] == ("status", None)


def test_an_error_event_carries_the_errors_payload_and_its_status_back() -> None:
    event = ErrorEvent.from_error(InvalidRequest("max_new_tokens", "too many"))
    assert event.model_dump(exclude_none=True) == {
        "type": "error",
        "code": "invalid_request",
        "message": "max_new_tokens: too many",
        "field": "max_new_tokens",
    }
    overloaded = ErrorEvent.from_error(Overloaded("busy", retry_after_s=3)).to_error()
    assert (overloaded.status_code, overloaded.headers()) == (503, {"Retry-After": "3"})
    assert ErrorEvent(code="no_such_code", message="?").to_error().status_code == 502


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"token","index":0}',  # no text
        b'{"type":"token","index":-1,"text":"x"}',
        b'{"type":"status","state":"sleeping"}',
        b'{"type":"done","finish_reason":"length"}',  # no usage, no timings
        b'{"type":"error","message":"no code"}',
        b'{"type":"thought","text":"x"}',
        b'["token"]',
        b"not json",
    ],
)
def test_lines_that_are_not_events_are_refused(line: bytes) -> None:
    with pytest.raises(ValidationError):
        from_ndjson(line)


def test_unknown_fields_are_ignored_so_a_newer_producer_does_not_break_a_consumer() -> None:
    assert from_ndjson(b'{"type":"token","index":0,"text":"x","logprob":-0.1}') == TokenEvent(
        index=0, text="x"
    )
