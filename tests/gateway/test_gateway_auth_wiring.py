"""GENERATOR_AUTH: the gateway signs its generator calls when, and only when, told to.

The template deploys the gateway with GENERATOR_AUTH=sigv4 next to a generator whose
Function URL demands IAM; everywhere else (local runs, tests, containers) it is `none`.
The real generator client is used, with a transport that records what it would send.
"""

from __future__ import annotations

import re

import httpx
import pytest
from pydantic import ValidationError

from gateway.settings import Settings
from gateway.sigv4 import SigningUnavailable, SigV4
from gateway.upstream import GeneratorClient
from streamkit.events import DoneEvent, Timings, Usage, to_ndjson

AUTHORIZATION = re.compile(r"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/\d{8}/eu-west-1/lambda/")
DONE = DoneEvent(
    finish_reason="length",
    usage=Usage(prompt_tokens=1, completion_tokens=0),
    timings=Timings(queue_ms=0, ttft_ms=0, total_ms=0, tokens_per_s=0),
)


@pytest.fixture
def lambda_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """What Lambda gives every execution environment, and nothing from this machine."""
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token")


async def _sent_headers(settings: Settings) -> list[httpx.Headers]:
    sent: list[httpx.Headers] = []

    def generator(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers)
        if request.url.path == "/readyz":
            return httpx.Response(200, json={"status": "ready"})
        return httpx.Response(200, content=to_ndjson(DONE))

    client = GeneratorClient(settings, transport=httpx.MockTransport(generator))
    try:
        ready, _ = await client.readiness()
        assert ready
        stream = await client.open({"prompt": "hi"}, request_id="r-1")
        async for _ in stream.events():
            pass
        await stream.aclose()
    finally:
        await client.aclose()
    return sent


def test_the_default_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENERATOR_AUTH", raising=False)
    assert Settings().generator_auth == "none"


def test_an_unknown_mode_is_a_clear_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENERATOR_AUTH", "basic")
    with pytest.raises(ValidationError, match="generator_auth"):
        Settings()


@pytest.mark.usefixtures("lambda_environment")
async def test_none_sends_no_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even with AWS credentials around, `none` never signs."""
    monkeypatch.setenv("GENERATOR_AUTH", "none")
    settings = Settings()
    assert GeneratorClient(settings).http.auth is None
    sent = await _sent_headers(settings)
    assert len(sent) == 2
    for headers in sent:
        assert "authorization" not in headers
        assert "x-amz-date" not in headers


@pytest.mark.usefixtures("lambda_environment")
async def test_sigv4_signs_every_generator_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENERATOR_AUTH", "sigv4")
    settings = Settings()
    assert isinstance(GeneratorClient(settings).http.auth, SigV4)
    sent = await _sent_headers(settings)
    assert len(sent) == 2  # /readyz and the streamed /v1/generate
    for headers in sent:
        assert AUTHORIZATION.match(headers["authorization"])
        assert headers["x-amz-security-token"] == "session-token"


@pytest.mark.usefixtures("no_aws_environment")
def test_sigv4_without_credentials_stops_the_gateway_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("GENERATOR_AUTH", "sigv4")
    with pytest.raises(SigningUnavailable, match="no AWS credentials"):
        GeneratorClient(Settings())
