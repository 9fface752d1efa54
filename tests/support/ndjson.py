"""Parsing the generator's NDJSON event stream."""

from __future__ import annotations

import json
from typing import Any


def parse_ndjson(body: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines() if line]


def streamed_text(events: list[dict[str, Any]]) -> str:
    """The concatenated text of the token events."""
    return "".join(e["text"] for e in events if e["type"] == "token")
