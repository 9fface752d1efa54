"""Failures on the way to the generator, and how its own refusals are passed on.

Each carries a `kind` (the label of `gateway_upstream_errors_total`) besides its
client-facing `code`, so operators can tell a refused port from a stall.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from streamkit.errors import Overloaded, ServiceError
from streamkit.events import ErrorEvent


class UpstreamError(ServiceError):
    kind = "error"


class UpstreamUnavailable(UpstreamError):
    """The generator could not be reached at all (refused, unresolvable, reset)."""

    status_code = 503
    code = "upstream_unavailable"
    kind = "connect"


class UpstreamTimeout(UpstreamError):
    """The generator went silent for longer than the configured bound."""

    status_code = 504
    code = "upstream_timeout"
    kind = "timeout"


class UpstreamBroken(UpstreamError):
    """The stream broke: the connection died, a line was garbled, or it ended without
    its terminal event. Never passed on as a normal end."""

    status_code = 502
    code = "upstream_failed"
    kind = "broken"

    def __init__(self, message: str, *, kind: str = "broken") -> None:
        super().__init__(message)
        self.kind = kind


class UpstreamRejected(UpstreamError):
    """The generator answered with an HTTP error: its status, code and message pass through."""

    kind = "rejected"

    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        super().__init__(str(payload.get("message") or f"generator answered HTTP {status}"))
        self.status_code = status
        self.code = str(payload.get("code") or "upstream_error")
        field = payload.get("field")
        self.field = str(field) if field is not None else None


class UpstreamOverloaded(Overloaded):
    """The generator's queue is full: 503 + Retry-After, passed on."""

    kind = "overloaded"


class GeneratorFailed(UpstreamError):
    """The generator reported an `error` event of its own (passed through as is)."""

    kind = "generator_error"

    def __init__(self, event: ErrorEvent) -> None:
        super().__init__(event.message, field=event.field)
        self.code = event.code


def from_response(status: int, headers: httpx.Headers, content: bytes) -> ServiceError:
    """Map a non-200 answer of the generator to the error to relay."""
    try:
        payload = json.loads(content).get("error")
    except (ValueError, AttributeError):
        payload = None
    if not isinstance(payload, dict):
        payload = {"code": "upstream_error", "message": f"generator answered HTTP {status}"}
    if status in (429, 503) and payload.get("code") == "overloaded":
        try:
            retry_after = max(1, int(headers.get("retry-after", "1")))
        except ValueError:
            retry_after = 1
        return UpstreamOverloaded(str(payload.get("message")), retry_after_s=retry_after)
    return UpstreamRejected(status, payload)


def error_kind(error: ServiceError) -> str:
    return str(getattr(error, "kind", error.code))
