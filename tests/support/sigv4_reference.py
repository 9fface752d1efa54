"""An independent SigV4 signer written from AWS's specification, as the tests' oracle.

It shares no code with botocore, so agreeing with it (and it with AWS's published
test vectors) shows the gateway's signatures are right, not merely self-consistent.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote, unquote


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _encode(value: str) -> str:
    return quote(value, safe="-_.~")


def canonical_query(query: str) -> str:
    pairs = []
    for item in query.split("&") if query else []:
        key, _, value = item.partition("=")
        pairs.append((_encode(unquote(key)), _encode(unquote(value))))
    return "&".join(f"{key}={value}" for key, value in sorted(pairs))


def signature(
    *,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    amz_date: str,
    region: str,
    service: str,
    secret_key: str,
) -> tuple[str, str]:
    """(signed headers, hex signature) for a request; `headers` are the ones to sign."""
    # Non-S3 services: each path segment is URI-encoded once more (the raw path is already
    # encoded once on the wire).
    canonical_path = "/".join(_encode(segment) for segment in path.split("/")) or "/"
    lowered = {name.lower(): " ".join(value.split()) for name, value in headers.items()}
    names = sorted(lowered)
    canonical_request = "\n".join(
        [
            method,
            canonical_path,
            canonical_query(query),
            "".join(f"{name}:{lowered[name]}\n" for name in names),
            ";".join(names),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = _hmac(f"AWS4{secret_key}".encode(), amz_date[:8])
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return ";".join(names), hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
