"""A small helper to read a gateway event stream into a list (with httpx-sse).

Each event is read with the wire contract's own parser (`streamkit.events.from_sse`), so
an event that does not fit it fails the test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from streamkit.events import from_sse


@dataclass
class Event:
    event: str
    id: str
    data: dict[str, Any]


async def read_events(
    client: httpx.AsyncClient, url: str, *, method: str = "GET", **kwargs: Any
) -> list[Event]:
    async with aconnect_sse(client, method, url, **kwargs) as source:
        source.response.raise_for_status()
        return [
            Event(
                sse.event,
                sse.id,
                from_sse(sse.event, sse.data).model_dump(exclude={"type"}, exclude_none=True),
            )
            async for sse in source.aiter_sse()
        ]


def token_text(events: list[Event]) -> str:
    return "".join(event.data["text"] for event in events if event.event == "token")


def check_stream(events: list[Event]) -> Event:
    """The contract every stream keeps: tokens numbered from 0, then exactly one terminal
    event, last. Returns the terminal event."""
    terminal = [event for event in events if event.event in ("done", "error")]
    assert len(terminal) == 1, events
    assert events[-1] is terminal[0], events
    tokens = [event for event in events if event.event == "token"]
    assert [int(event.id) for event in tokens] == list(range(len(tokens)))
    assert [event.data["index"] for event in tokens] == list(range(len(tokens)))
    return terminal[0]
