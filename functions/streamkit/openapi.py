"""What both apps' OpenAPI documents say beyond what FastAPI infers: the error bodies, the
streamed content types, the query parameters of the `GET` streams, and the limits an
operator sets (they depend on `Settings`, so they are written in when the app is built).

The documents are tested against the running code with schemathesis (every check), so a
status, a content type or a constraint the code enforces but the document omits fails
the build.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from streamkit.generation import GenerationLimits, GenerationParams


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable: `invalid_request`, `overloaded`…")
    message: str = Field(description="For people; names the field when one is at fault.")
    field: str | None = Field(None, description="The request field at fault, dotted.")


class ErrorBody(BaseModel):
    """Every error answered before a stream starts."""

    error: ErrorDetail


_WHY = {
    400: "Bad input (OpenAI's status for it): the message and `param` name the field.",
    401: "API key missing or wrong (only when API_KEYS is set).",
    404: "Not found.",
    410: "The start id has expired.",
    413: "The request body is larger than MAX_BODY_BYTES.",
    422: "Bad input: the message and `field` name the field.",
    500: "The generation failed.",
    502: "The generator answered something that is not the wire contract.",
    503: "Overloaded (with Retry-After), or the generator or its model is unavailable.",
    504: "The generator went silent for longer than its timeout.",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.",
                               "schema": {"type": "integer"}}}  # fmt: skip


READINESS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Ready."},
    503: {
        "description": "Not ready yet (loading), or failed: the body says which and why.",
        "headers": RETRY_AFTER,
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
}


def errors(*statuses: int, body: type[BaseModel] = ErrorBody) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these error statuses, each with its JSON body."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": body, "description": _WHY[status]}
        if status == 503:
            entry["headers"] = RETRY_AFTER
        documented[status] = entry
    return documented


def streamed(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` entry for a 200 whose body is a stream of `media_type` text."""
    return {200: {"description": description,
                  "content": {media_type: {"schema": {"type": "string"}}}}}  # fmt: skip


def query_parameters(required: Iterable[str] = ("prompt",)) -> list[dict[str, Any]]:
    """The generation parameters as query parameters (everything but `messages`, which a
    query string cannot carry), each with the schema of its body field."""
    schema = GenerationParams.model_json_schema()
    parameters = []
    for name, field in schema["properties"].items():
        if name == "messages":
            continue
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": _without_null(field),
        }
        if field.get("type") == "array":
            parameter.update(style="form", explode=True)
        parameters.append(parameter)
    return parameters


def _without_null(field: dict[str, Any]) -> dict[str, Any]:
    """An optional field's schema without its `null` branch (a query has no null)."""
    options = [option for option in field.get("anyOf", []) if option.get("type") != "null"]
    if len(options) == 1:
        rest = {key: value for key, value in field.items() if key not in ("anyOf", "default")}
        return {**options[0], **rest}
    return {key: value for key, value in field.items() if key != "default"}


def with_limits(app: FastAPI, limits: GenerationLimits) -> Callable[[], dict[str, Any]]:
    """An `app.openapi` that writes the operator's limits into the schemas: the longest
    prompt or turn, the most turns, the largest `max_new_tokens`, wherever they appear."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )  # fmt: skip
            _write_limits(schema, limits)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def _write_limits(schema: dict[str, Any], limits: GenerationLimits) -> None:
    components = schema.get("components", {}).get("schemas", {})
    bounds = {
        "prompt": {"maxLength": limits.max_prompt_chars},
        "content": {"maxLength": limits.max_prompt_chars},
        "messages": {"maxItems": limits.max_messages},
        "max_new_tokens": {"maximum": limits.max_new_tokens_limit},
        "max_tokens": {"maximum": limits.max_new_tokens_limit},
        "max_completion_tokens": {"maximum": limits.max_new_tokens_limit},
    }
    for model in components.values():
        for name, field in model.get("properties", {}).items():
            if name in bounds:
                _bound(field, bounds[name])
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] in bounds:
                    _bound(parameter["schema"], bounds[parameter["name"]])


def _bound(field: dict[str, Any], bound: dict[str, int]) -> None:
    """Apply `bound` to the branch of `field` it concerns (a string, array or integer)."""
    kinds = {"maxLength": "string", "maxItems": "array", "maximum": "integer"}
    branches = field.get("anyOf", [field])
    for branch in branches:
        for key, value in bound.items():
            if branch.get("type") == kinds[key]:
                branch[key] = min(value, branch.get(key, value))
