"""SigV4 signing of the gateway's requests to the generator, for a private Function URL.

Deployed, the generator's Function URL has `AuthType: AWS_IAM`: only callers whose
IAM role may invoke it get through, and they prove it by signing each request with
AWS Signature Version 4 for the service `lambda`. The signing itself is botocore's
(`SigV4Auth`) so the canonicalisation is the one AWS maintains; this module only
adapts it to httpx and picks what to sign.

What is signed, and why:
- the method, path and query; the query is also rewritten on the request in SigV4's
  own encoding, so the bytes sent are the bytes signed;
- `host`, `content-type` and the `x-amz-*` headers, and no others: hop-by-hop headers
  such as `connection` may be rewritten on the way, which would break a signature
  that covered them;
- the body's SHA-256, also sent as `x-amz-content-sha256`. The gateway sends small JSON
  bodies (`json=`), so httpx already holds the bytes; `requires_request_body` makes it
  read them before signing even for a streamed body. Only the *response* streams.

Credentials come from botocore's default chain, which on Lambda means the execution
role's temporary keys in the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN`); the region from `AWS_REGION`, which Lambda sets.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Generator
from typing import Any
from urllib.parse import quote

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.exceptions import BotoCoreError
from botocore.session import Session

from gateway.settings import GeneratorAuthMode

SERVICE = "lambda"
CONTENT_SHA256 = "x-amz-content-sha256"


def _encode(value: str) -> str:
    return quote(value, safe="-_.~")


class SigningUnavailable(RuntimeError):
    """SigV4 was asked for but cannot work here (no region or no credentials)."""


class SigV4(httpx.Auth):
    """An `httpx.Auth` that signs every request with botocore's SigV4 signer."""

    requires_request_body = True

    def __init__(self, credentials: Credentials, region: str, service: str = SERVICE) -> None:
        self._credentials = credentials
        self._region = region
        self._service = service

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        try:
            self.sign(request)
        except BotoCoreError as exc:
            # An httpx error, so the gateway reports "generator unreachable" (a clean 503)
            # instead of an unexpected exception.
            raise httpx.RequestError(f"cannot sign the request: {exc}", request=request) from exc
        yield request

    def sign(self, request: httpx.Request) -> None:
        """Add `Authorization`, `X-Amz-Date`, `x-amz-content-sha256` and, with temporary
        credentials, `X-Amz-Security-Token` to `request`."""
        # Refreshable credentials (an assumed role) rotate; freeze one consistent set.
        frozen: ReadOnlyCredentials = self._credentials.get_frozen_credentials()
        body = request.content
        # The query goes out exactly as SigV4 canonicalises values (`%20`, never `+`), so
        # no server can decode it differently from what was signed.
        params = request.url.params.multi_items()
        query = "&".join(f"{_encode(key)}={_encode(value)}" for key, value in params)
        request.url = request.url.copy_with(query=query.encode("ascii") or None)
        url = request.url
        origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
        path = url.raw_path.split(b"?", 1)[0].decode("ascii")
        headers = {"host": request.headers.get("host") or url.netloc.decode("ascii")}
        if "content-type" in request.headers:
            headers["content-type"] = request.headers["content-type"]
        headers[CONTENT_SHA256] = hashlib.sha256(body).hexdigest()
        aws_request = AWSRequest(
            method=request.method,
            url=origin + path,
            # Decoded parameters: botocore encodes and sorts them itself.
            params=params,
            headers=headers,
            data=body,
        )
        signer = SigV4Auth(
            Credentials(frozen.access_key, frozen.secret_key, frozen.token),
            self._service,
            self._region,
        )
        signer.add_auth(aws_request)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token", CONTENT_SHA256):
            value = aws_request.headers.get(name)
            if value is not None:
                request.headers[name] = value


def default_credentials() -> Credentials | None:
    """botocore's default chain: environment, shared config, container or instance role."""
    credentials: Any = Session().get_credentials()
    return credentials


def generator_auth(
    mode: GeneratorAuthMode,
    *,
    region: str | None = None,
    credentials: Credentials | None = None,
) -> httpx.Auth | None:
    """The auth for the gateway's generator client: `None` for `none` (local runs, a
    public or in-process generator), `SigV4` for `sigv4` (a Function URL with
    `AuthType: AWS_IAM`). Fails at start-up, not on the first request, when signing
    cannot work."""
    if mode == "none":
        return None
    if mode != "sigv4":
        raise ValueError(f"GENERATOR_AUTH must be 'none' or 'sigv4', not {mode!r}")
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise SigningUnavailable("GENERATOR_AUTH=sigv4 needs a region: set AWS_REGION")
    credentials = credentials or default_credentials()
    if credentials is None:
        raise SigningUnavailable(
            "GENERATOR_AUTH=sigv4 found no AWS credentials (botocore's default chain: "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or a role)"
        )
    return SigV4(credentials, region)
