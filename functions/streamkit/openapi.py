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
from pydantic import BaseModel, Field, TypeAdapter

from streamkit.events import DoneEvent, ErrorEvent, Event, StatusEvent, TokenEvent
from streamkit.generation import GenerationLimits, GenerationParams

Schema = dict[str, Any]
Responses = dict[int | str, Schema]


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


READINESS: Responses = {
    200: {"description": "Ready."},
    503: {
        "description": "Not ready yet (loading), or failed: the body says which and why.",
        "headers": RETRY_AFTER,
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
}


def errors(*statuses: int, body: type[BaseModel] = ErrorBody) -> Responses:
    """`responses=` entries for these error statuses, each with its JSON body."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": body, "description": _WHY[status]}
        if status == 503:
            entry["headers"] = RETRY_AFTER
        documented[status] = entry
    return documented


def streamed(media_type: str, description: str, schema: Schema | None = None) -> Responses:
    """`responses=` entry for a 200 whose body is a stream of `media_type`; `schema` is
    what each item of it is (an event, a line), where it has a shape."""
    return {200: {"description": description,
                  "content": {media_type: {"schema": schema or {"type": "string"}}}}}  # fmt: skip


def json_text(schema: Schema) -> Schema:
    """A string holding one JSON value of `schema` (an SSE event's data, say)."""
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}


def ndjson_line() -> Schema:
    """One line of the generator's NDJSON stream: any one event, its `type` naming it."""
    return _inline(TypeAdapter(Event).json_schema())


def sse_event() -> Schema:
    """One Server-Sent Event of the gateway's streams: its name is the event's `type`, its
    data the rest of the event as JSON, its id the token's index or `END_ID` (`sse_fields`)."""
    kinds = []
    for model in (StatusEvent, TokenEvent, DoneEvent, ErrorEvent):
        data = _inline(model.model_json_schema())
        del data["properties"]["type"]
        kind = model.model_fields["type"].default
        kinds.append({"type": "object", "required": ["event", "data"],
                      "properties": {"event": {"const": kind}, "data": json_text(data),
                                     "id": {"type": "string"}}})  # fmt: skip
    return {"oneOf": kinds}


def _inline(schema: Schema) -> Schema:
    """`schema` with its `$defs` written in where they are referred to: a schema that is
    nested inside another document (a `contentSchema`) cannot point at its own root."""
    definitions = schema.pop("$defs", {})
    assert isinstance(definitions, dict)

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                return resolve(definitions[reference.removeprefix("#/$defs/")])
            # A discriminator's mapping names `$defs`: the `const` of each branch says it.
            return {key: resolve(value) for key, value in node.items() if key != "discriminator"}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved = resolve(schema)
    assert isinstance(resolved, dict)
    return resolved


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


def one_of_queries(name: str, *alternatives: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Query parameters that come in alternative sets (one set or another, never mixed),
    as OpenAPI says it: one exploded object parameter whose schema is `oneOf` the sets
    (`name` is only the document's: exploded, its properties are the query's names)."""
    shapes = [
        {
            "type": "object",
            "properties": {p["name"]: p["schema"] for p in parameters},
            "required": [p["name"] for p in parameters if p["required"]],
            "additionalProperties": False,
        }
        for parameters in alternatives
    ]
    return [{"name": name, "in": "query", "required": True, "style": "form", "explode": True,
             "schema": {"oneOf": shapes}}]  # fmt: skip


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
                for name, field in _query_fields(parameter):
                    if name in bounds:
                        _bound(field, bounds[name])


def _query_fields(parameter: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    """Each query name with its schema, inside `one_of_queries`' objects too."""
    shapes = parameter["schema"].get("oneOf")
    if shapes is None:
        yield parameter["name"], parameter["schema"]
        return
    for shape in shapes:
        yield from shape["properties"].items()


def _bound(field: dict[str, Any], bound: dict[str, int]) -> None:
    """Apply `bound` to the branch of `field` it concerns (a string, array or integer)."""
    kinds = {"maxLength": "string", "maxItems": "array", "maximum": "integer"}
    branches = field.get("anyOf", [field])
    for branch in branches:
        for key, value in bound.items():
            if branch.get("type") == kinds[key]:
                branch[key] = min(value, branch.get(key, value))
