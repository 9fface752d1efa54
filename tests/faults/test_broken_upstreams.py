"""A generator that answers, but wrongly: garbage instead of HTTP or instead of an event, a
stream cut mid-line or ending without its terminal event, tokens out of order, an event
nobody knows, its own `error`, a refusal; or that answers so slowly (silence, a line
trickled a byte at a time) that no line completes within the timeout. Played by the
scripted stand-in (`support.upstreams`), which can do what the real generator never would.

Each time the client gets exactly one terminal `error` event carrying the right code (or,
from the non-streamed OpenAI endpoint, the HTTP error that code declares), within the
silence the gateway's setting promises (a fault it can see is reported well inside that
bound, a silence or a trickle at it); the gateway counts the failure by kind, closes
its connection to a stand-in that would have held it open forever, and comes out healthy
with no more open files or tasks than before (`support.faults.assert_recovered`).
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from devtools.metrics import metric, scrape
from streamkit.events import ErrorEvent, to_ndjson
from support.faults import (
    FIRST_TOKEN_TIMEOUT_S,
    MARGIN_S,
    TOKEN_TIMEOUT_S,
    assert_recovered,
    assert_within,
    read_events_quiet_since,
    steady_state,
    within,
)
from support.sse import check_stream, read_events
from support.upstreams import Lines, Raw, Script, Silent, Trickle, token

CLIENT_TIMEOUT_S = 60.0

TOKEN = token(0, "Hi")
BOOM = to_ndjson(ErrorEvent(code="generation_failed", message="boom"))


@pytest.mark.parametrize(
    ("script", "code", "kind", "bound_s"),
    [
        # Ends without done/error: never passed on as a normal end.
        pytest.param(Lines([TOKEN]), "upstream_failed", "broken", TOKEN_TIMEOUT_S,
                     id="no_terminal_event"),
        pytest.param(Lines([TOKEN, b'{"type":"token","ind']), "upstream_failed", "broken",
                     TOKEN_TIMEOUT_S, id="ends_mid_line"),
        pytest.param(Lines([TOKEN, b"not json\n"]), "upstream_failed", "malformed",
                     TOKEN_TIMEOUT_S, id="garbage_line"),
        pytest.param(Lines([TOKEN, token(5)]), "upstream_failed", "malformed",
                     TOKEN_TIMEOUT_S, id="tokens_out_of_order"),
        pytest.param(Lines([TOKEN, TOKEN]), "upstream_failed", "malformed",
                     TOKEN_TIMEOUT_S, id="token_repeated"),
        pytest.param(Lines([b'{"type":"mystery"}\n']), "upstream_failed", "malformed",
                     FIRST_TOKEN_TIMEOUT_S, id="unknown_event"),
        pytest.param(Raw(b"HELLO garbage\r\n\r\n"), "upstream_unavailable", "connect",
                     FIRST_TOKEN_TIMEOUT_S, id="garbage_instead_of_http"),
        pytest.param(Lines([TOKEN, BOOM]), "generation_failed", "generator_error",
                     TOKEN_TIMEOUT_S, id="generator_error_event"),
    ],
)  # fmt: skip
async def test_broken_upstream_streams(
    standin, standin_gateway, request, script: Script, code: str, kind: str, bound_s: float
):
    prompt = request.node.callspec.id
    standin.scripts[prompt] = script
    url = standin_gateway.url
    baseline = await steady_state(url)
    errors_before = _upstream_errors(url, kind)
    async with httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT_S) as client:
        events, quiet_since = await read_events_quiet_since(client, {"prompt": prompt})
        assert_within(quiet_since, bound_s, f"{prompt} → error")
        error = check_stream(events)
        assert error.event == "error"
        assert error.data["code"] == code

        started = time.monotonic()
        r = await client.post("/v1/completions", json={"prompt": prompt})
        assert_within(started, bound_s, f"{prompt} → OpenAI error")
        assert r.status_code >= 500
        assert r.json()["error"]["code"] == code
    assert "gateway_upstream_errors_total{kind=" in scrape(url)
    assert _upstream_errors(url, kind) == errors_before + 2
    await assert_recovered(url, baseline)


async def test_upstream_rejection_is_relayed_naming_the_field(standin, standin_gateway):
    body = b'{"error":{"code":"invalid_request","message":"prompt: too long","field":"prompt"}}'
    standin.scripts["rejected"] = Lines([body], status=422, content_type="application/json")
    url = standin_gateway.url
    baseline = await steady_state(url)
    async with httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT_S) as client:
        # SSE: an `error` event that EventSource can read, still naming the field.
        error = check_stream(await read_events(client, "/generate", params={"prompt": "rejected"}))
        assert error.event == "error"
        assert error.data["code"] == "invalid_request"
        assert error.data["field"] == "prompt"
        r = await client.post("/v1/completions", json={"prompt": "rejected"})
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "prompt"
    await assert_recovered(url, baseline)


async def test_generator_silent_before_first_token(standin, standin_gateway):
    """The connection is accepted and the request read; no answer ever comes."""
    standin.scripts["silent"] = standin.scripts["silent chat"] = Silent()
    url = standin_gateway.url
    baseline = await steady_state(url)
    chat = {"messages": [{"role": "user", "content": "silent chat"}]}
    async with httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT_S) as client:
        (events, quiet_since), r = await asyncio.gather(
            read_events_quiet_since(client, {"prompt": "silent"}),
            within(
                FIRST_TOKEN_TIMEOUT_S,
                "silent → OpenAI 504",
                client.post("/v1/chat/completions", json=chat),
            ),
        )
    assert_within(quiet_since, FIRST_TOKEN_TIMEOUT_S, "silent → error")
    error = check_stream(events)
    assert error.data["code"] == "upstream_timeout"
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "upstream_timeout"
    _assert_let_go(standin, "silent")
    _assert_let_go(standin, "silent chat")
    await assert_recovered(url, baseline)


@pytest.mark.parametrize(
    ("lines", "bound_s"),
    [
        pytest.param([], FIRST_TOKEN_TIMEOUT_S, id="before_the_first_token"),
        pytest.param([TOKEN], TOKEN_TIMEOUT_S, id="mid_stream"),
    ],
)
async def test_generator_trickles_a_line_that_never_completes(
    standin, standin_gateway, request, lines: list[bytes], bound_s: float
):
    """Bytes keep arriving, five a second, but never a whole line: arriving bytes are not
    progress, only complete events are."""
    prompt = f"trickle {request.node.callspec.id}"
    standin.scripts[prompt] = Trickle(lines, interval_s=0.2)
    url = standin_gateway.url
    baseline = await steady_state(url)
    async with httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT_S) as client:
        events, quiet_since = await read_events_quiet_since(client, {"prompt": prompt})
    assert_within(quiet_since, bound_s, f"{prompt} → error")
    error = check_stream(events)
    assert error.data["code"] == "upstream_timeout"
    assert len(events) == len(lines) + 1
    _assert_let_go(standin, prompt)
    await assert_recovered(url, baseline)


def _assert_let_go(standin, prompt: str) -> None:
    """The gateway has closed its connection to the stand-in, having given up on it."""
    standin.wait_closed(prompt, MARGIN_S)
    del standin.closed_at[prompt]


def _upstream_errors(url: str, kind: str) -> float:
    try:
        return metric(url, "gateway_upstream_errors_total", kind=kind)
    except LookupError:
        return 0.0
