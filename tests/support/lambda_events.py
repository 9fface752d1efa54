"""Real Lambda event payloads (from `sam local generate-event`), adapted per request.

The four event sources that invoke a function over HTTP each have their own payload
shape; `lambda_event` rewrites a committed SAM fixture (tests/lambda/events/) with a
request's method, path, query, headers and body, and `decode_response` reads back what
the handler returned, whatever the shape. Used in-process (tests/lambda) and inside the
`lambda` image (tests/images).
"""

from __future__ import annotations

import base64
import copy
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENTS_DIR = Path(__file__).resolve().parents[1] / "lambda" / "events"

# Source name -> fixture file.
SOURCES = {
    "apigw-rest-v1": "apigw-rest-v1.json",
    "apigw-http-v2": "apigw-http-v2.json",
    "function-url": "function-url.json",
    "alb": "alb.json",
}


def lambda_event(
    source: str,
    method: str,
    path: str,
    *,
    query: dict[str, str | list[str]] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | str | dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fixture of `source` carrying this request (a JSON `body` dict is encoded)."""
    event: dict[str, Any] = json.loads((EVENTS_DIR / SOURCES[source]).read_text())
    event = copy.deepcopy(event)
    headers = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body)
        headers.setdefault("content-type", "application/json")
    raw = body.encode() if isinstance(body, str) else body
    multi = {
        key: value if isinstance(value, list) else [value] for key, value in (query or {}).items()
    }

    if source == "apigw-rest-v1":
        event["httpMethod"] = event["requestContext"]["httpMethod"] = method
        event["path"] = path
        event["pathParameters"] = {"proxy": path.lstrip("/")}
        event["requestContext"]["path"] = f"/{event['requestContext']['stage']}{path}"
        event["queryStringParameters"] = {k: v[-1] for k, v in multi.items()} or None
        event["multiValueQueryStringParameters"] = multi or None
        event["headers"] = {**event["headers"], **headers}
        event["multiValueHeaders"] = {
            **event["multiValueHeaders"],
            **{key: [value] for key, value in headers.items()},
        }
    elif source in ("apigw-http-v2", "function-url"):
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
        event["requestContext"]["http"]["method"] = method
        event["rawQueryString"] = urllib.parse.urlencode(multi, doseq=True)
        event["queryStringParameters"] = {k: ",".join(v) for k, v in multi.items()} or None
        event["headers"] = {**event["headers"], **{k.lower(): v for k, v in headers.items()}}
    elif source == "alb":
        event["httpMethod"] = method
        event["path"] = path
        # An ALB passes query values as the client encoded them (it does not decode).
        event["queryStringParameters"] = {
            urllib.parse.quote_plus(k): urllib.parse.quote_plus(v[-1]) for k, v in multi.items()
        }
        event["headers"] = {**event["headers"], **{k.lower(): v for k, v in headers.items()}}
    else:
        raise ValueError(f"unknown event source {source!r}")

    if raw is None:
        event["body"] = None
        event["isBase64Encoded"] = False
    elif event.get("isBase64Encoded"):
        event["body"] = base64.b64encode(raw).decode()
    else:
        event["body"] = raw.decode()
    return event


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that handlers read."""

    function_name: str = "test-function"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 3008
    aws_request_id: str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    log_group_name: str = "/aws/lambda/test-function"
    log_stream_name: str = "2026/01/01/[$LATEST]0123456789abcdef"
    remaining_ms: int = 300_000
    extra: dict[str, Any] = field(default_factory=dict)

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class LambdaResponse:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: str
    base64: bool


def decode_response(response: dict[str, Any]) -> LambdaResponse:
    """Status, headers and body text of a handler's response, whatever the event source."""
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    for key, values in (response.get("multiValueHeaders") or {}).items():
        headers[key.lower()] = values[-1]
    encoded = bool(response.get("isBase64Encoded"))
    body = response.get("body") or ""
    text = base64.b64decode(body).decode() if encoded else body
    return LambdaResponse(int(response["statusCode"]), headers, text, encoded)


# A handler fixture: invoke(source, method, path, query=..., headers=..., body=...).
Invoke = Callable[..., LambdaResponse]
