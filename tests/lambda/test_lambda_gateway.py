"""The gateway's Mangum handler under the four HTTP event sources, calling a real
generator process over HTTP.

Mangum buffers: `GET /generate` returns the complete SSE body in one response — every
token event, then exactly one `done` — which is correct, only not streamed.
"""

from __future__ import annotations

import json
import urllib.parse

import httpx
import pytest

from devtools.processes import ServerProcess
from support.lambda_events import SOURCES, Invoke
from support.ndjson import parse_ndjson, streamed_text

pytestmark = pytest.mark.parametrize("source", list(SOURCES))

GREEDY = {"prompt": "Héllo wörld 🙂", "max_new_tokens": 6, "temperature": 0}


def parse_sse(body: str) -> list[tuple[str, str, dict]]:
    """(event, id, data) of each event in a complete SSE body; comments are skipped."""
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        if "data" in fields:
            events.append(
                (fields.get("event", "message"), fields.get("id", ""), json.loads(fields["data"]))
            )
    return events


def check_buffered_stream(body: str, tokens: int) -> str:
    """Optional `status` events (queued behind the previous request), tokens 0..n-1,
    then exactly one `done`, last; returns the text."""
    events = parse_sse(body)
    while events and events[0][0] == "status":
        events.pop(0)
    assert [kind for kind, _, _ in events] == ["token"] * tokens + ["done"], body
    assert [data["index"] for _, _, data in events[:-1]] == list(range(tokens))
    assert events[-1][2]["usage"]["completion_tokens"] == tokens
    return "".join(data["text"] for kind, _, data in events if kind == "token")


def generator_text(server: ServerProcess, params: dict) -> str:
    """The same generation, asked of the generator directly."""
    response = httpx.post(server.url + "/v1/generate", json=params, timeout=60)
    response.raise_for_status()
    return streamed_text(parse_ndjson(response.text))


def test_generate_returns_a_complete_sse_body(
    gateway_handler: Invoke, module_generator_server: ServerProcess, source: str
) -> None:
    query = {key: str(value) for key, value in GREEDY.items()}
    response = gateway_handler(source, "GET", "/generate", query=query)
    assert response.status == 200, response.body
    assert response.headers["content-type"].startswith("text/event-stream")
    assert not response.base64
    text = check_buffered_stream(response.body, GREEDY["max_new_tokens"])
    assert text == generator_text(module_generator_server, GREEDY)


def test_start_then_generate_by_id(gateway_handler: Invoke, source: str) -> None:
    started = gateway_handler(source, "POST", "/start", body=GREEDY)
    assert started.status == 200, started.body
    start = json.loads(started.body)
    url = urllib.parse.urlsplit(start["stream_url"])
    assert url.path == "/generate"
    query = dict(urllib.parse.parse_qsl(url.query))
    assert query == {"id": start["id"]}
    response = gateway_handler(source, "GET", url.path, query=query)
    assert response.status == 200, response.body
    check_buffered_stream(response.body, GREEDY["max_new_tokens"])


def test_forged_start_id_is_refused(gateway_handler: Invoke, source: str) -> None:
    response = gateway_handler(source, "GET", "/generate", query={"id": "forged.id"})
    assert 400 <= response.status < 500
    assert json.loads(response.body)["error"]["field"] == "id"


def test_health_and_readiness(gateway_handler: Invoke, source: str) -> None:
    assert gateway_handler(source, "GET", "/healthz").status == 200
    ready = gateway_handler(source, "GET", "/readyz")
    assert ready.status == 200, ready.body
    assert json.loads(ready.body)["status"] == "ready"


def test_bad_fields_are_422_naming_them(gateway_handler: Invoke, source: str) -> None:
    response = gateway_handler(
        source, "GET", "/generate", query={"prompt": "Hi", "max_new_tokens": "-1"}
    )
    assert response.status == 422, response.body
    assert json.loads(response.body)["error"]["field"] == "max_new_tokens"

    response = gateway_handler(source, "POST", "/start", body={"prompt": "Hi", "temperature": 9})
    assert response.status == 422, response.body
    assert json.loads(response.body)["error"]["field"] == "temperature"


def test_openai_stream_is_buffered_to_done(gateway_handler: Invoke, source: str) -> None:
    body = {"model": "any", "prompt": "Hi", "max_tokens": 4, "temperature": 0, "stream": True}
    response = gateway_handler(source, "POST", "/v1/completions", body=body)
    assert response.status == 200, response.body
    lines = [line for line in response.body.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert chunks
    assert all(chunk["object"] == "text_completion" for chunk in chunks)
