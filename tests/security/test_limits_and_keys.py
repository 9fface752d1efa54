"""Limits before work, and keys on the OpenAI routes, against a real gateway process (over
a scripted stand-in generator that can hold a stream open):

- a body over MAX_BODY_BYTES is refused with 413 naming `body` and the limit, whether it
  says its length or streams it chunked, in OpenAI's envelope on `/v1/*`;
- streams beyond MAX_STREAMS are refused with `overloaded` and the retry hint (an
  `error` event on the page's routes, 503 + `Retry-After` on `/v1/*`), and admitted
  again once the held ones end;
- with API_KEYS set, `/v1/*` needs one of the keys (401 in OpenAI's envelope otherwise,
  which the official client raises as `AuthenticationError`), the page's routes none;
- a wrong method is 405 with every method the path serves in `Allow`;
- every request leaves one JSON access line: method, path, status, duration, request id.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest

from devtools.processes import ServerProcess
from support.gateway import API_KEY, gateway_process
from support.sse import check_stream, read_events
from support.upstreams import ScriptedUpstream, Silent

HOLD = "hold this stream"  # the stand-in answers nothing: the stream stays open
MAX_BODY_BYTES = 4096
MAX_STREAMS = 2
RETRY_AFTER_S = 3


@pytest.fixture(scope="module")
def standin() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream({HOLD: Silent()}) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(standin: ScriptedUpstream) -> Iterator[ServerProcess]:
    with gateway_process(
        standin.url, log_level="info", API_KEYS=f"other-key,{API_KEY}",
        MAX_BODY_BYTES=str(MAX_BODY_BYTES), MAX_STREAMS=str(MAX_STREAMS),
        RETRY_AFTER_S=str(RETRY_AFTER_S), FIRST_TOKEN_TIMEOUT_S="60", PING_INTERVAL_S="0",
    ) as server:  # fmt: skip
        yield server


@pytest.fixture
async def client(gateway: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        yield client


def authorized() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


# -- the body cap ---------------------------------------------------------------------------


def big_body() -> bytes:
    return json.dumps({"prompt": "x" * MAX_BODY_BYTES}).encode()


async def chunked(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 1000):
        yield data[start : start + 1000]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_over_the_cap_is_refused_with_413_naming_it(
    client: httpx.AsyncClient, framing: str
) -> None:
    content = big_body() if framing == "content-length" else chunked(big_body())
    refused = await client.post(
        "/start", content=content, headers={"Content-Type": "application/json"}
    )
    assert refused.status_code == 413
    error = refused.json()["error"]
    assert error["code"] == "payload_too_large"
    assert error["field"] == "body"
    assert str(MAX_BODY_BYTES) in error["message"]


async def test_a_body_over_the_cap_on_v1_is_refused_in_openais_envelope(
    client: httpx.AsyncClient,
) -> None:
    refused = await client.post(
        "/v1/completions", content=big_body(),
        headers={**authorized(), "Content-Type": "application/json"},
    )  # fmt: skip
    assert refused.status_code == 413
    error = refused.json()["error"]
    assert error["param"] == "body"
    assert error["type"] == "invalid_request_error"
    assert str(MAX_BODY_BYTES) in error["message"]


async def test_a_body_under_the_cap_is_served(client: httpx.AsyncClient) -> None:
    accepted = await client.post("/start", json={"prompt": "x" * (MAX_BODY_BYTES // 2)})
    assert accepted.status_code == 200


# -- the stream cap -------------------------------------------------------------------------


async def test_streams_beyond_max_streams_are_refused_with_a_retry_hint(
    client: httpx.AsyncClient, gateway: ServerProcess
) -> None:
    held = [
        asyncio.create_task(read_events(client, "/generate", params={"prompt": HOLD}))
        for _ in range(MAX_STREAMS)
    ]
    try:
        await until_active_streams(client, MAX_STREAMS)
        await assert_refused_with_a_retry_hint(client, gateway)
    finally:
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
    await until_active_streams(client, 0)
    admitted = check_stream(await read_events(client, "/generate", params={"prompt": "hi"}))
    assert admitted.event == "done"


async def assert_refused_with_a_retry_hint(
    client: httpx.AsyncClient, gateway: ServerProcess
) -> None:
    refused = check_stream(await read_events(client, "/generate", params={"prompt": "hi"}))
    assert refused.event == "error"
    assert refused.data["code"] == "overloaded"
    assert refused.data["retry_after_s"] == RETRY_AFTER_S

    official = openai.OpenAI(base_url=gateway.url + "/v1", api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.APIStatusError) as overloaded:
        official.completions.create(model="m", prompt="hi", max_tokens=2)
    assert overloaded.value.status_code == 503
    assert overloaded.value.response.headers["retry-after"] == str(RETRY_AFTER_S)
    assert overloaded.value.code == "overloaded"


async def until_active_streams(client: httpx.AsyncClient, count: int) -> None:
    for _ in range(200):
        metrics = (await client.get("/metrics")).text
        line = next(m for m in metrics.splitlines() if m.startswith("gateway_active_streams "))
        if float(line.split()[1]) == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"gateway_active_streams never reached {count}")


# -- API keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-key", f"Basic {API_KEY}", f"Bearer {API_KEY}x", "Bearer"]
)
async def test_v1_without_a_valid_key_is_401_in_openais_envelope(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    refused = await client.get("/v1/models", headers=headers)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    error = refused.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "invalid_request_error"


def test_the_official_client_raises_authentication_error_and_works_with_a_key(
    gateway: ServerProcess,
) -> None:
    wrong = openai.OpenAI(base_url=gateway.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.completions.create(model="m", prompt="hi", max_tokens=2)
    for key in ("other-key", API_KEY):  # either key of the list: rotation without a gap
        right = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
        completion = right.completions.create(model="m", prompt="hi", max_tokens=2)
        assert completion.choices[0].finish_reason == "length"


async def test_the_pages_routes_take_no_key(client: httpx.AsyncClient) -> None:
    started = await client.post("/start", json={"prompt": "hi", "max_new_tokens": 2})
    assert started.status_code == 200
    done = check_stream(await read_events(client, started.json()["stream_url"]))
    assert done.event == "done"


# -- methods --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("PUT", "/generate", "GET, POST"), ("DELETE", "/v1/models", "GET"), ("GET", "/start", "POST")],
)
async def test_a_wrong_method_is_405_with_allow(
    client: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    refused = await client.request(method, path, headers=authorized())
    assert refused.status_code == 405
    assert refused.headers["allow"] == allowed


# -- the access log -------------------------------------------------------------------------


async def test_every_request_leaves_one_json_access_line(
    client: httpx.AsyncClient, gateway: ServerProcess
) -> None:
    answer = await client.get("/generate", params={"prompt": "hi", "max_new_tokens": 2})
    request_id = answer.headers["x-request-id"]
    await asyncio.sleep(0.2)  # the line is written as the response ends
    lines = [json.loads(line) for line in gateway.logs().splitlines() if request_id in line]
    access = [line for line in lines if line["logger"] == "access"]
    assert len(access) == 1, lines
    assert access[0]["method"] == "GET"
    assert access[0]["path"] == "/generate"  # no query string: it may carry a prompt
    assert access[0]["status"] == 200
    assert access[0]["duration_ms"] >= 0
