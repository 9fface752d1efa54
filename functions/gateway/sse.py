"""The browser-facing event stream: the generator's events as named Server-Sent Events.

```
id: 0
event: token
data: {"index":0,"text":"Hello"}

id: end
event: done
data: {"finish_reason":"length","usage":{...},"timings":{...}}
```
Which event gets which name and id is `streamkit.events.sse_fields`. Terminal events
carry `id: end`: a client that reconnects after the end (browser `EventSource` does so
by itself when a response finishes) sends it back as `Last-Event-ID`, and
`GET /generate` answers such reconnects with 204, which tells `EventSource` to stop
instead of starting the generation again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from gateway.settings import Settings
from streamkit.events import Event, sse_fields
from streamkit.http import STREAM_HEADERS

log = logging.getLogger("gateway.sse")

SEPARATOR = "\n"
# Characters some line readers (Python's str.splitlines, hence httpx's aiter_lines) take
# for line ends; JSON may escape them, so the data line never breaks, for any client.
_LINE_BREAKERS = {ord(c): f"\\u{ord(c):04x}" for c in "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def dumps(data: Any) -> str:
    """Compact JSON that keeps text as UTF-8 but can never split an SSE data line."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).translate(_LINE_BREAKERS)


def to_sse(event: Event) -> ServerSentEvent:
    name, event_id, data = sse_fields(event)
    return ServerSentEvent(dumps(data), event=name, id=event_id, sep=SEPARATOR)


async def sse_events(events: AsyncIterator[Event]) -> AsyncIterator[ServerSentEvent]:
    async for event in events:
        yield to_sse(event)


class _ClosingEventSource(EventSourceResponse):
    """Runs `on_close` when the response ends, however it ends (done, client gone)."""

    def __init__(self, *args: Any, on_close: Callable[[], Awaitable[None]], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except* SendTimeoutError:
            # A client too slow to take an event within SEND_TIMEOUT_S: dropping it is
            # the design, not an error of the app (no traceback in the log).
            log.warning("client too slow: stream dropped", extra={"fields": {"reason": "send"}})
        finally:
            await self._on_close()


async def _nothing() -> None:
    return None


def event_stream(
    content: AsyncIterator[ServerSentEvent],
    settings: Settings,
    headers: dict[str, str] | None = None,
    on_close: Callable[[], Awaitable[None]] = _nothing,
) -> EventSourceResponse:
    """An SSE response with comment pings, a bounded send, and no proxy buffering; it ends
    right after the terminal event, and then `on_close` runs (a relayed stream's
    `close`, so its upstream connection closes even if `content` never started)."""
    return _ClosingEventSource(
        content,
        headers={**STREAM_HEADERS, **(headers or {})},
        ping=settings.ping_interval_s,
        ping_message_factory=lambda: ServerSentEvent(comment="ping", sep=SEPARATOR),
        sep=SEPARATOR,
        send_timeout=settings.send_timeout_s,
        on_close=on_close,
    )
