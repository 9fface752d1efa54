"""Reading the generator's NDJSON event stream in tests.

Every line is read with the wire contract's own parser (`streamkit.events`), so a line
that is not a valid event fails the test; the events come back in their wire form
(plain dicts, absent fields left out), which is what the tests compare.
"""

from __future__ import annotations

from typing import Any

from streamkit.events import from_ndjson


def parse_ndjson(body: str) -> list[dict[str, Any]]:
    return [from_ndjson(line).model_dump(exclude_none=True) for line in body.splitlines() if line]


def streamed_text(events: list[dict[str, Any]]) -> str:
    """The concatenated text of the token events."""
    return "".join(e["text"] for e in events if e["type"] == "token")
