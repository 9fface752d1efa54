"""The gateway's SigV4 auth for the generator's private Function URL.

Three independent checks: the signature equals botocore's own signer on a fixed
request; it equals a signer written from AWS's specification (itself checked against
AWS's published test vectors); and a real HTTP server that verifies signatures the
way AWS does accepts what httpx actually puts on the wire, streaming included.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import urlsplit

import botocore.auth
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError

from devtools.processes import serving_in_thread
from gateway.sigv4 import SigningUnavailable, SigV4, generator_auth
from streamkit.events import TokenEvent, to_ndjson
from support.sigv4_reference import signature

ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLETOKEN//////////wEaCXVzLWVhc3QtMSJH"
REGION = "eu-west-1"
FROZEN = datetime.datetime(2026, 1, 2, 3, 4, 5)
FROZEN_AMZ_DATE = "20260102T030405Z"
URL = "https://abcdefghij0123456789.lambda-url.eu-west-1.on.aws/v1/generate"
BODY = {"prompt": "Héllo, 世界 🌍", "max_new_tokens": 8, "stop": ["\n\n"]}
AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<scope>[^,]+), "
    r"SignedHeaders=(?P<signed>[^,]+), Signature=(?P<signature>[0-9a-f]{64})"
)


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore reads the time through this one function; freezing it fixes X-Amz-Date."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: FROZEN)


def fixed_request() -> httpx.Request:
    return httpx.Request(
        "POST",
        URL,
        json=BODY,
        headers={"x-request-id": "req-1", "accept": "application/x-ndjson"},
    )


# ---- the oracle against AWS's published Signature Version 4 test vectors ----

AWS_VECTOR = {
    "amz_date": "20150830T123600Z",
    "region": "us-east-1",
    "service": "service",
    "secret_key": SECRET_KEY,
}
AWS_HEADERS = {"Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"}


@pytest.mark.parametrize(
    ("name", "method", "query", "extra_headers", "body", "expected"),
    [
        (
            "get-vanilla",
            "GET",
            "",
            {},
            b"",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "post-vanilla",
            "POST",
            "",
            {},
            b"",
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        ),
        (
            "get-vanilla-query-order-key-case",
            "GET",
            "Param2=value2&Param1=value1",
            {},
            b"",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
        (
            "post-x-www-form-urlencoded",
            "POST",
            "",
            {"Content-Type": "application/x-www-form-urlencoded"},
            b"Param1=value1",
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
        ),
    ],
)
def test_reference_signer_reproduces_aws_test_vectors(
    name: str, method: str, query: str, extra_headers: dict[str, str], body: bytes, expected: str
) -> None:
    _, computed = signature(
        method=method,
        path="/",
        query=query,
        headers={**AWS_HEADERS, **extra_headers},
        body=body,
        **AWS_VECTOR,
    )
    assert computed == expected, name


# ---- a fixed request, fixed credentials, a frozen clock ----


@pytest.mark.usefixtures("frozen_clock")
def test_signature_equals_botocores_signer() -> None:
    request = fixed_request()
    SigV4(Credentials(ACCESS_KEY, SECRET_KEY, TOKEN), REGION).sign(request)

    # What a botocore client would send for the same call: its own request object,
    # its own signer, the same signed headers.
    expected = AWSRequest(
        method="POST",
        url=URL,
        headers={
            "Host": urlsplit(URL).netloc,
            "Content-Type": "application/json",
            "X-Amz-Content-SHA256": hashlib.sha256(request.content).hexdigest(),
        },
        data=request.content,
    )
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, TOKEN), "lambda", REGION).add_auth(expected)

    assert request.headers["authorization"] == expected.headers["Authorization"]
    assert request.headers["x-amz-date"] == expected.headers["X-Amz-Date"] == FROZEN_AMZ_DATE
    assert request.headers["x-amz-security-token"] == TOKEN
    match = AUTHORIZATION.fullmatch(request.headers["authorization"])
    assert match is not None
    assert match["scope"] == f"{FROZEN_AMZ_DATE[:8]}/{REGION}/lambda/aws4_request"
    assert match["signed"] == (
        "content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token"
    )


@pytest.mark.usefixtures("frozen_clock")
def test_signature_equals_the_specification() -> None:
    request = httpx.Request(
        "POST",
        URL,
        params=[("tag", "a b"), ("tag", "ü/ö+"), ("alpha", "1")],
        json=BODY,
        headers={"x-request-id": "req-2"},
    )
    SigV4(Credentials(ACCESS_KEY, SECRET_KEY), REGION).sign(request)

    match = AUTHORIZATION.fullmatch(request.headers["authorization"])
    assert match is not None
    signed = match["signed"].split(";")
    assert "x-amz-security-token" not in signed  # no token, no header
    assert request.headers["x-amz-content-sha256"] == hashlib.sha256(request.content).hexdigest()
    expected_signed, expected = signature(
        method="POST",
        path=request.url.raw_path.split(b"?")[0].decode(),
        query=request.url.query.decode(),
        headers={name: request.headers[name] for name in signed},
        body=request.content,
        amz_date=FROZEN_AMZ_DATE,
        region=REGION,
        service="lambda",
        secret_key=SECRET_KEY,
    )
    assert match["signed"] == expected_signed
    assert match["signature"] == expected


def test_each_request_gets_a_fresh_date_and_the_current_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    times = iter([FROZEN, FROZEN + datetime.timedelta(seconds=1)])
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: next(times))
    credentials = Credentials(ACCESS_KEY, SECRET_KEY, "token-1")
    auth = SigV4(credentials, REGION)
    first, second = fixed_request(), fixed_request()
    auth.sign(first)
    credentials.token = "token-2"  # a refreshed session, as an assumed role gets
    auth.sign(second)
    assert first.headers["x-amz-date"] != second.headers["x-amz-date"]
    assert first.headers["authorization"] != second.headers["authorization"]
    assert (first.headers["x-amz-security-token"], second.headers["x-amz-security-token"]) == (
        "token-1",
        "token-2",
    )


# ---- on the wire: a server that verifies signatures as AWS does ----


class _Verifier(BaseHTTPRequestHandler):
    """Checks the signature of what actually arrived (method, raw path and query, the
    signed headers' values, the body) with the reference signer, then answers like the
    generator: 200 with a few NDJSON lines, or 403 as a Function URL does."""

    received: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        path, _, query = self.path.partition("?")
        verdict = self._verify(path, query, body)
        type(self).received.append(
            {"path": path, "authorization": self.headers.get("authorization"), "ok": verdict}
        )
        if verdict:
            self.send_response(200)
            self.send_header("content-type", "application/x-ndjson")
            self.end_headers()
            for index in range(3):
                self.wfile.write(to_ndjson(TokenEvent(index=index, text="x")))
                self.wfile.flush()
        else:
            self.send_response(403)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"Message":"Forbidden"}')

    do_GET = do_POST = _handle

    def _verify(self, path: str, query: str, body: bytes) -> bool:
        match = AUTHORIZATION.fullmatch(self.headers.get("authorization") or "")
        if match is None or match["key"] != ACCESS_KEY:
            return False
        date, region, service, _ = match["scope"].split("/")
        amz_date = self.headers.get("x-amz-date") or ""
        if service != "lambda" or region != REGION or not amz_date.startswith(date):
            return False
        if self.headers.get("x-amz-content-sha256") != hashlib.sha256(body).hexdigest():
            return False
        names = match["signed"].split(";")
        if not {"host", "x-amz-date"} <= set(names):
            return False
        signed_headers, expected = signature(
            method=self.command,
            path=path,
            query=query,
            headers={name: self.headers.get(name, "") for name in names},
            body=body,
            amz_date=amz_date,
            region=region,
            service=service,
            secret_key=SECRET_KEY,
        )
        return signed_headers == match["signed"] and expected == match["signature"]


@pytest.fixture
def verifier() -> Iterator[str]:
    _Verifier.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Verifier)
    with serving_in_thread(server):
        yield f"http://127.0.0.1:{server.server_address[1]}"


async def _stream_generate(client: httpx.AsyncClient) -> tuple[int, list[str]]:
    """The gateway's call: build the request, send it streaming, read lines as they come."""
    request = client.build_request(
        "POST",
        "/v1/generate",
        json=BODY,
        params={"q": "spaced out é"},
        headers={"x-request-id": "r"},
    )
    response = await client.send(request, stream=True)
    try:
        lines = [line async for line in response.aiter_lines() if line]
    finally:
        await response.aclose()
    return response.status_code, lines


async def test_a_verifying_server_accepts_the_streamed_request(verifier: str) -> None:
    auth = generator_auth(
        "sigv4", region=REGION, credentials=Credentials(ACCESS_KEY, SECRET_KEY, TOKEN)
    )
    assert isinstance(auth, SigV4)
    async with httpx.AsyncClient(base_url=verifier, auth=auth, timeout=10) as client:
        status, lines = await _stream_generate(client)
        readiness = await client.get("/readyz")
    assert status == 200, _Verifier.received
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2]
    assert readiness.status_code == 200  # an empty body signs too
    assert all(item["ok"] for item in _Verifier.received)


async def test_the_verifier_rejects_a_wrong_key(verifier: str) -> None:
    """The server above really checks: a signature made with another secret fails."""
    auth = SigV4(Credentials(ACCESS_KEY, "not-the-secret"), REGION)
    async with httpx.AsyncClient(base_url=verifier, auth=auth, timeout=10) as client:
        status, _ = await _stream_generate(client)
    assert status == 403


async def test_mode_none_sends_no_signature(verifier: str) -> None:
    auth = generator_auth("none")
    assert auth is None
    async with httpx.AsyncClient(base_url=verifier, auth=auth, timeout=10) as client:
        status, _ = await _stream_generate(client)
    assert status == 403
    assert [item["authorization"] for item in _Verifier.received] == [None]


# ---- the factory: signing only when asked, and failing clearly when it cannot ----


@pytest.mark.usefixtures("no_aws_environment")
def test_sigv4_reads_the_lambda_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # What Lambda puts in every execution environment.
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    auth = generator_auth("sigv4")
    assert isinstance(auth, SigV4)
    request = fixed_request()
    auth.sign(request)
    match = AUTHORIZATION.fullmatch(request.headers["authorization"])
    assert match is not None
    assert match["key"] == ACCESS_KEY
    assert match["scope"].endswith(f"/{REGION}/lambda/aws4_request")
    assert request.headers["x-amz-security-token"] == TOKEN


@pytest.mark.usefixtures("no_aws_environment")
def test_sigv4_without_a_region_fails_at_start_up() -> None:
    with pytest.raises(SigningUnavailable, match="AWS_REGION"):
        generator_auth("sigv4", credentials=Credentials(ACCESS_KEY, SECRET_KEY))


@pytest.mark.usefixtures("no_aws_environment")
def test_sigv4_without_credentials_fails_at_start_up() -> None:
    with pytest.raises(SigningUnavailable, match="no AWS credentials"):
        generator_auth("sigv4", region=REGION)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="GENERATOR_AUTH"):
        generator_auth("basic")  # type: ignore[arg-type]


class _Broken(Credentials):
    def get_frozen_credentials(self) -> Any:
        raise BotoCoreError()


async def test_a_signing_failure_is_an_httpx_error(verifier: str) -> None:
    """The gateway maps httpx errors to a clean 503, so a refresh that fails mid-life
    must surface as one rather than as an unexpected exception."""
    auth = SigV4(_Broken(ACCESS_KEY, SECRET_KEY), REGION)
    async with httpx.AsyncClient(base_url=verifier, auth=auth, timeout=10) as client:
        with pytest.raises(httpx.RequestError, match="cannot sign"):
            await client.get("/readyz")
    assert _Verifier.received == []
