"""OpenAI-compatible endpoints over the same relay: `/v1/completions`,
`/v1/chat/completions` (streamed or not) and `/v1/models`.

Errors use OpenAI's envelope `{"error": {"message", "type", "code", "param"}}` so the
official clients raise their usual exceptions: before a stream, as an HTTP status
(503/429 keep `Retry-After`, which the clients honour when retrying); during a
stream, as a `data: {"error": ...}` chunk followed by `data: [DONE]`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import PurePath
from typing import Any
from urllib.parse import quote

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sse_starlette import ServerSentEvent

from gateway.auth import api_key_dependencies
from gateway.errors import UpstreamUnavailable
from gateway.protocol import ChatCompletionRequest, CompletionRequest
from gateway.relay import Relay
from gateway.sse import SEPARATOR, dumps, event_stream
from streamkit.errors import ServiceError
from streamkit.events import DoneEvent, ErrorEvent, Event, TokenEvent
from streamkit.http import unless_client_leaves
from streamkit.openapi import errors, json_text

FINISH_REASONS = {"length": "length", "stop": "stop", "eos": "stop"}
DEFAULT_MODEL_ID = "default"
# Names the request fields this gateway accepted but does not use.
IGNORED_FIELDS_HEADER = "X-Ignored-Fields"
_MAX_LOGGED_FIELDS = 256  # client-chosen names: remembered up to a bound, and shortened
_logged_fields: set[str] = set()

log = logging.getLogger("gateway.openai")


def ignored_fields_header(names: list[str]) -> dict[str, str]:
    """The response header listing `names`; each name is logged the first time it is seen
    (the name only, never a value)."""
    names = [name[:64] for name in names]
    new = [name for name in names if name not in _logged_fields]
    if new and len(_logged_fields) < _MAX_LOGGED_FIELDS:
        _logged_fields.update(new)
        log.info("ignoring request fields it does not use", extra={"fields": {"ignored": new}})
    # Percent-encoded: a header is ASCII, and a client's field name may be anything
    # (even empty, written `""`: a header value cannot end in a separator).
    listed = ", ".join(quote(name, safe=".*") or '""' for name in names)
    return {IGNORED_FIELDS_HEADER: listed} if names else {}


def openai_error_response(error: ServiceError) -> JSONResponse:
    """An error in OpenAI's envelope. Bad input is 400 there (422 elsewhere)."""
    status = 400 if error.status_code == 422 else error.status_code
    return JSONResponse(
        {"error": openai_error_body(error)}, status_code=status, headers=error.headers()
    )


def openai_error_body(error: ServiceError) -> dict[str, Any]:
    kind = "invalid_request_error" if 400 <= error.status_code < 500 else "server_error"
    return {"message": error.message, "type": kind, "code": error.code, "param": error.field}


class _Shape:
    """What differs between the two endpoints' payloads."""

    def __init__(self, chat: bool, model: str) -> None:
        self.chat = chat
        self.model = model
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())

    def envelope(self, object_name: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": object_name,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def chunk(self, text: str | None, finish_reason: str | None, *, role: bool = False) -> Any:
        if self.chat:
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return self.envelope("chat.completion.chunk", [choice])
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        return self.envelope("text_completion", [choice])

    def complete(self, text: str, finish_reason: str, usage: dict[str, int]) -> dict[str, Any]:
        if self.chat:
            message = {"role": "assistant", "content": text, "refusal": None}
            choice = {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            body = self.envelope("chat.completion", [choice])
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
            body = self.envelope("text_completion", [choice])
        body["usage"] = usage
        return body


def _usage(done: DoneEvent) -> dict[str, int]:
    prompt, completion = done.usage.prompt_tokens, done.usage.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="`invalid_request_error` (4xx) or `server_error`.")
    code: str
    param: str | None = Field(description="The request field at fault, dotted.")


class OpenAIErrorBody(BaseModel):
    error: OpenAIErrorDetail


DONE = "[DONE]"  # the data of a streamed completion's last event, as OpenAI sends it
# One event of a streamed completion: unnamed, its data a JSON chunk, the last `[DONE]`.
CHUNK_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"const": "message"},  # unnamed: an SSE client reads it as a "message"
        "data": {"anyOf": [{"const": DONE}, json_text({"type": "object"})]},
    },
}
COMPLETION = {
    200: {
        "description": "The completion: one JSON object, or with `stream` true a stream of "
        "`data:` chunks ending with `data: [DONE]`.",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {"schema": CHUNK_EVENT},
        },
    },
    **errors(400, 401, 413, 500, 502, 503, 504, body=OpenAIErrorBody),
}


def openai_router(relay: Relay) -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=api_key_dependencies(relay.settings.keys))

    async def run(
        request: Request,
        body: CompletionRequest | ChatCompletionRequest,
        shape: _Shape,
        endpoint: str,
    ) -> Response:
        params = body.to_params(relay.settings)
        headers = ignored_fields_header(body.ignored_fields())
        request_id = request.state.request_id
        try:
            relayed = await unless_client_leaves(request, relay.open(params, request_id, endpoint))
        except ServiceError as error:
            response: Response = openai_error_response(error)
        else:
            if body.stream:
                chunks = _chunks(relayed.events(), shape, body.include_usage)
                return event_stream(chunks, relay.settings, headers, on_close=relayed.close)
            events = relayed.events()
            try:
                response = await _collect(request, events, shape)
            finally:
                await events.aclose()  # its accounting now, not when collected
                await relayed.close()
        response.headers.update(headers)
        return response

    @router.post("/completions", responses=COMPLETION)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        """OpenAI text completion: the prompt continued as plain text."""
        shape = _Shape(chat=False, model=body.model or DEFAULT_MODEL_ID)
        return await run(request, body, shape, "completions")

    @router.post("/chat/completions", responses=COMPLETION)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        """OpenAI chat completion: the next assistant turn of a conversation."""
        shape = _Shape(chat=True, model=body.model or DEFAULT_MODEL_ID)
        return await run(request, body, shape, "chat_completions")

    @router.get("/models", responses=errors(401, 503, body=OpenAIErrorBody))
    async def models() -> Response:
        """The one model the generator serves, by its name: MODEL_NAME when the gateway has
        it (no call to the generator, which may be asleep), else the generator's answer."""
        card: dict[str, Any] = {"object": "model", "created": 0, "owned_by": "generator"}
        if relay.settings.model_name:
            card["id"] = relay.settings.model_name
        else:
            ready, info = await relay.client.readiness()
            name, model = info.get("model_name"), info.get("model")
            if not isinstance(model, str):
                return openai_error_response(
                    UpstreamUnavailable("generator is not reachable; model unknown")
                )
            if not isinstance(name, str):  # an older generator: its directory or hub id
                name = PurePath(model).name if model.startswith(("/", ".")) else model
            card.update(id=name, ready=ready)
        return JSONResponse({"object": "list", "data": [card]})

    return router


async def _collect(request: Request, events: AsyncIterator[Event], shape: _Shape) -> Response:
    """Non-streamed: wait for the end and answer in one piece (or with the HTTP error).
    A client that hangs up meanwhile cancels the wait, which closes the upstream stream."""
    parts: list[str] = []
    answer: Response | None = None

    async def consume() -> None:
        nonlocal answer
        async for event in events:
            if isinstance(event, TokenEvent):
                parts.append(event.text)
            elif isinstance(event, DoneEvent):
                finish = FINISH_REASONS[event.finish_reason]
                answer = JSONResponse(shape.complete("".join(parts), finish, _usage(event)))
            elif isinstance(event, ErrorEvent):
                # With the HTTP status its code declares (503 + Retry-After for overload).
                answer = openai_error_response(event.to_error())

    async with anyio.create_task_group() as tasks:

        async def consume_then_stop() -> None:
            await consume()
            tasks.cancel_scope.cancel()

        async def stop_on_disconnect() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            tasks.cancel_scope.cancel()

        tasks.start_soon(consume_then_stop)
        tasks.start_soon(stop_on_disconnect)
    return answer or Response(status_code=499)


async def _chunks(
    events: AsyncIterator[Event], shape: _Shape, include_usage: bool
) -> AsyncIterator[ServerSentEvent]:
    def data(payload: Any) -> ServerSentEvent:
        if include_usage and isinstance(payload, dict) and "choices" in payload:
            payload.setdefault("usage", None)
        return ServerSentEvent(
            payload if isinstance(payload, str) else dumps(payload), sep=SEPARATOR
        )

    if shape.chat:
        yield data(shape.chunk("", None, role=True))
    async for event in events:
        if isinstance(event, TokenEvent):
            yield data(shape.chunk(event.text, None))
        elif isinstance(event, DoneEvent):
            finish = FINISH_REASONS[event.finish_reason]
            yield data(shape.chunk(None if shape.chat else "", finish))
            if include_usage:
                final = shape.envelope(shape.chunk(None, None)["object"], [])
                final["usage"] = _usage(event)
                yield data(final)
        elif isinstance(event, ErrorEvent):
            yield data({"error": openai_error_body(event.to_error())})
    yield data(DONE)
