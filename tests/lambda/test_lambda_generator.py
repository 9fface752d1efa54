"""The generator's Mangum handler under the four HTTP event sources Lambda supports.

Mangum buffers: one invocation returns the whole NDJSON stream, which must still end
with exactly one `done` (Starlette's StreamingResponse must not be cut short by the
disconnect Mangum sends once the body is complete).
"""

from __future__ import annotations

import json

import pytest

from support.lambda_events import SOURCES, Invoke
from support.ndjson import parse_ndjson

pytestmark = pytest.mark.parametrize("source", list(SOURCES))


def test_generate_returns_the_whole_ndjson_stream(generator_handler: Invoke, source: str) -> None:
    response = generator_handler(
        source,
        "POST",
        "/v1/generate",
        body={"prompt": "Hello", "max_new_tokens": 6, "temperature": 0, "seed": 1},
    )
    assert response.status == 200, response.body
    assert response.headers["content-type"].startswith("application/x-ndjson")
    # Served as text, so API Gateway REST passes it through without binary media types.
    assert not response.base64
    events = parse_ndjson(response.body)
    while events and events[0]["type"] == "status":  # queued behind the previous request
        events.pop(0)
    assert [e["type"] for e in events] == ["token"] * 6 + ["done"]
    assert [e["index"] for e in events[:-1]] == list(range(6))
    done = events[-1]
    assert done["finish_reason"] == "length"
    assert done["usage"]["completion_tokens"] == 6


def test_plain_text_endpoint_with_query(generator_handler: Invoke, source: str) -> None:
    """`GET /?prompt=...`: the query string survives each source's encoding."""
    greedy = {"prompt": "Grüße & 你好", "max_new_tokens": "5", "temperature": "0"}
    response = generator_handler(source, "GET", "/", query=greedy)
    assert response.status == 200, response.body
    expected = generator_handler(
        source, "POST", "/v1/generate", body={**greedy, "max_new_tokens": 5, "temperature": 0}
    )
    tokens = "".join(e["text"] for e in parse_ndjson(expected.body) if e["type"] == "token")
    assert response.body == tokens


def test_health_and_readiness(generator_handler: Invoke, source: str) -> None:
    assert generator_handler(source, "GET", "/healthz").status == 200
    ready = generator_handler(source, "GET", "/readyz")
    assert ready.status == 200
    assert json.loads(ready.body)["status"] == "ready"


def test_bad_field_is_a_422_naming_it(generator_handler: Invoke, source: str) -> None:
    response = generator_handler(
        source, "POST", "/v1/generate", body={"prompt": "Hi", "max_new_tokens": -3}
    )
    assert response.status == 422
    error = json.loads(response.body)["error"]
    assert error["field"] == "max_new_tokens"
    assert "max_new_tokens" in error["message"]


def test_unknown_route_is_404(generator_handler: Invoke, source: str) -> None:
    assert generator_handler(source, "GET", "/nope").status == 404
