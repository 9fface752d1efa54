"""One small exception hierarchy and the single place that maps it to HTTP.

Every failure a client can see is a `ServiceError`: before a stream starts it becomes
an HTTP status with a JSON body, after it starts it becomes the in-stream `error`
event. Both shapes come from `ServiceError.payload()`, so they never drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route


class ServiceError(Exception):
    """Base of every error a client sees. `code` is stable; `message` is for people.
    Each subclass declares its `code` and `status_code` once; `status_for` finds the
    status of a code that arrives as text (in another hop's `error` event)."""

    status_code = 500
    code = "internal_error"
    _status_by_code: ClassVar[dict[str, int]] = {"internal_error": 500}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            ServiceError._status_by_code.setdefault(cls.code, cls.status_code)

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def payload(self) -> dict[str, Any]:
        """The `{"code", "message"[, "field"]}` object used both in bodies and events."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(ServiceError):
    """Bad input. The message always names the offending field."""

    status_code = 422
    code = "invalid_request"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", field=field)


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class Overloaded(ServiceError):
    """The bounded queue is full: come back later (503 + Retry-After)."""

    status_code = 503
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ModelUnavailable(ServiceError):
    """The model failed to load; nothing can be generated until the process restarts."""

    status_code = 503
    code = "model_unavailable"


class GenerationFailed(ServiceError):
    """The model loop raised mid-generation."""

    status_code = 500
    code = "generation_failed"


class HTTPError(ServiceError):
    """A refusal by the HTTP layer itself (an unknown path, a method not allowed), with
    its headers (a 405's `Allow`, which RFC 9110 requires)."""

    def __init__(
        self, status_code: int, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = "not_found" if status_code == 404 else "http_error"
        self._headers = dict(headers or {})

    def headers(self) -> dict[str, str]:
        return self._headers


class PayloadTooLarge(ServiceError):
    """The request body is over the operator's limit: refused before it is parsed."""

    status_code = 413
    code = "payload_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"body: the request body is larger than {limit} bytes (MAX_BODY_BYTES)", field="body"
        )


class RelayedError(ServiceError):
    """An error another hop reported in its stream, raised again here: its code, message
    and field as they were, with the status its code declares (502 for a code this
    process does not know: the other hop failed)."""

    def __init__(
        self, code: str, message: str, field: str | None = None, retry_after_s: int | None = None
    ) -> None:
        super().__init__(message, field=field)
        self.code = code
        self.status_code = status_for(code)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s else {}


def status_for(code: str) -> int:
    """The HTTP status the error class with this `code` declares; 502 when none does."""
    return ServiceError._status_by_code.get(code, 502)


def error_response(error: ServiceError) -> JSONResponse:
    """The HTTP form of an error, for failures before a stream has started."""
    return JSONResponse(
        {"error": error.payload()}, status_code=error.status_code, headers=error.headers()
    )


def describe_validation_error(errors: Sequence[Any]) -> InvalidRequest:
    """Turn pydantic's error list into one `InvalidRequest` naming the first bad field."""
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
    field = ".".join(location) or "body"
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "extra_forbidden":
        message = "unknown field"
    elif first.get("type") == "json_invalid":
        field, message = "body", "request body is not valid JSON"
    return InvalidRequest(field, message)


def _allowed_methods(request: Request, headers: Mapping[str, str] | None) -> str:
    """Every method some route serves at this path. Starlette's 405 names only the first
    matching route's, and `GET` and `POST /generate` are two routes (RFC 9110 wants all):
    its list, joined by those of the app's other routes at this path."""
    methods = {m.strip() for m in (headers or {}).get("Allow", "").split(",") if m.strip()}
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


Renderer = Callable[[Request, ServiceError], Response]


def render_error(_: Request, error: ServiceError) -> Response:
    """The default renderer: the project's own envelope (`error_response`)."""
    return error_response(error)


def install_error_handlers(app: FastAPI, render: Renderer | None = None) -> None:
    """Route every error through one renderer (default `error_response`): no HTML pages,
    no tracebacks. `render` lets an app pick the body shape per request (the gateway
    answers its OpenAI-compatible routes in OpenAI's error envelope)."""
    draw = render or render_error

    async def on_service_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return draw(request, exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return draw(request, describe_validation_error(exc.errors()))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400:
            # FastAPI's one 400: a body it could not decode (not UTF-8, say). The same
            # bad input as malformed JSON, so the same answer: 422 naming the body.
            return draw(request, InvalidRequest("body", "request body is not valid JSON"))
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(request, headers)}
        return draw(request, HTTPError(exc.status_code, str(exc.detail), headers))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return draw(request, ServiceError("internal error"))

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
