"""The browser-facing event stream: the generator's events as named Server-Sent Events.

```
id: 0
event: token
data: {"index":0,"text":"Hello"}

id: end
event: done
data: {"finish_reason":"length","usage":{...},"timings":{...}}
```
Terminal events carry `id: end`: a client that reconnects after the end (browser
`EventSource` does so by itself when a response finishes) sends it back as
`Last-Event-ID`, and `GET /generate` answers such reconnects with 204, which tells
`EventSource` to stop instead of starting the generation again.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent

from gateway.relay import Event
from gateway.settings import Settings

SEPARATOR = "\n"
END_ID = "end"
# Characters some line readers (Python's str.splitlines, hence httpx's aiter_lines) take
# for line ends; JSON may escape them, so the data line never breaks, for any client.
_LINE_BREAKERS = {ord(c): f"\\u{ord(c):04x}" for c in "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def dumps(data: Any) -> str:
    """Compact JSON that keeps text as UTF-8 but can never split an SSE data line."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).translate(_LINE_BREAKERS)


def to_sse(event: Event) -> ServerSentEvent:
    kind = event["type"]
    body = {key: value for key, value in event.items() if key != "type"}
    if kind == "token":
        return ServerSentEvent(dumps(body), event="token", id=str(event["index"]), sep=SEPARATOR)
    if kind in ("done", "error"):
        return ServerSentEvent(dumps(body), event=kind, id=END_ID, sep=SEPARATOR)
    return ServerSentEvent(dumps(body), event=kind, sep=SEPARATOR)


async def sse_events(events: AsyncIterator[Event]) -> AsyncIterator[ServerSentEvent]:
    async for event in events:
        yield to_sse(event)


def event_stream(
    content: AsyncIterator[ServerSentEvent], settings: Settings
) -> EventSourceResponse:
    """An SSE response with comment pings, a bounded send, and no proxy buffering.
    The response ends right after the terminal event."""
    return EventSourceResponse(
        content,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        ping=settings.ping_interval_s,
        ping_message_factory=lambda: ServerSentEvent(comment="ping", sep=SEPARATOR),
        sep=SEPARATOR,
        send_timeout=settings.send_timeout_s,
    )
