"""The gateway's HTTP surface: `create_app(settings)` with thin routes over the relay.

`transport` lets tests (and anything embedding both functions in one process) route
the generator calls to an in-process app, e.g. `httpx.ASGITransport(generator_app)`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.fdlimit import ensure_open_files_headroom
from gateway.metrics import GatewayMetrics
from gateway.openai_api import IGNORED_FIELDS_HEADER, openai_error_response, openai_router
from gateway.protocol import StartResponse
from gateway.relay import Relay, only_error
from gateway.settings import Settings
from gateway.signing import ID_SCHEMA, StartIdSigner
from gateway.sse import event_stream, sse_events
from gateway.upstream import GeneratorClient
from streamkit.errors import InvalidRequest, ServiceError, error_response, install_error_handlers
from streamkit.generation import GenerationParams, check_limits, parse_params
from streamkit.http import BodyLimit, query_params, unless_client_leaves
from streamkit.logs import AccessLog, configure_logging
from streamkit.openapi import (
    READINESS,
    errors,
    one_of_queries,
    query_parameters,
    sse_event,
    streamed,
    with_limits,
)
from streamkit.requestid import HEADER as REQUEST_ID_HEADER
from streamkit.requestid import RequestIdMiddleware


def _render_error(request: Request, error: ServiceError) -> Response:
    """OpenAI's envelope on its routes, the project's own everywhere else."""
    if request.url.path.startswith("/v1/"):
        return openai_error_response(error)
    return error_response(error)


SSE_STREAM = "Server-Sent Events: `status`…, `token`…, then one `done` or `error`."
# The parameters themselves, or `id` from POST /start alone: one or the other.
QUERY = one_of_queries(
    "query",
    query_parameters(),
    [{"name": "id", "required": True, "schema": ID_SCHEMA}],
)


def create_app(
    settings: Settings | None = None, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    ensure_open_files_headroom()  # two sockets per stream: lift the soft limit of 1024
    metrics = GatewayMetrics()
    client = GeneratorClient(settings, transport)
    relay = Relay(settings, client, metrics)
    signer = StartIdSigner.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await client.aclose()

    app = FastAPI(title="gateway", version="0.1.0", lifespan=lifespan)
    app.openapi = with_limits(app, settings)  # type: ignore[method-assign]
    app.state.relay = relay
    # Outermost last: CORS, then the request id, the access log, the body cap.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, render=_render_error)
    app.add_middleware(AccessLog)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=[REQUEST_ID_HEADER, "Retry-After", IGNORED_FIELDS_HEADER],
        max_age=600,
    )
    install_error_handlers(app, _render_error)

    @app.post("/start", response_model=StartResponse, responses=errors(413, 422))
    async def start(params: GenerationParams) -> StartResponse:
        """Validate the parameters and sign them into a stateless, expiring id."""
        check_limits(params, settings)
        start_id = signer.issue(params.model_dump(exclude_defaults=True))
        return StartResponse(id=start_id, stream_url=f"/generate?id={start_id}")

    @app.get(
        "/generate",
        response_class=StreamingResponse,  # documents no JSON 200, as `streamed` says
        responses={**streamed("text/event-stream", SSE_STREAM, sse_event()), **errors(410, 422)},
        openapi_extra={"parameters": QUERY},
    )
    async def generate(request: Request) -> Response:
        """The generation as Server-Sent Events: `token`…, then one `done` or `error`.
        `?id=` from `POST /start`, or the parameters themselves in the query."""
        if "last-event-id" in request.headers:
            # A browser EventSource reconnecting after the stream ended: 204 makes it stop
            # rather than run the generation again.
            return Response(status_code=204)
        query = query_params(request)
        if "id" in query:
            if len(query) > 1:
                raise InvalidRequest("id", "give either id or generation parameters, not both")
            params = parse_params(signer.verify(query["id"]))
        else:
            params = parse_params(query, strict=False)
        return await stream(params, request)

    @app.post(
        "/generate",
        response_class=StreamingResponse,  # documents no JSON 200, as `streamed` says
        responses={**streamed("text/event-stream", SSE_STREAM, sse_event()), **errors(413, 422)},
    )
    async def generate_posted(params: GenerationParams, request: Request) -> Response:
        """The same stream, its parameters in a JSON body: a conversation of any length,
        which neither a start id nor a query string could carry. (A browser reads it with
        `fetch`; `EventSource` only sends GET.)"""
        return await stream(params, request)

    async def stream(params: GenerationParams, request: Request) -> Response:
        check_limits(params, settings)
        try:
            opening = relay.open(params, request.state.request_id, "generate")
            relayed = await unless_client_leaves(request, opening)
        except ServiceError as error:
            # The gateway's own checks passed; whatever comes now (this gateway full, the
            # generator down, overloaded, timing out, or a refusal only it can make, such
            # as a prompt that overflows the model's context) is a 200 stream with one
            # `error` event, which EventSource can read (not the body of a non-200 answer).
            return event_stream(sse_events(only_error(error)), settings)
        return event_stream(sse_events(relayed.events()), settings, on_close=relayed.close)

    app.include_router(openai_router(relay))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The gateway process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", responses=READINESS)
    async def readyz() -> JSONResponse:
        """200 when the generator answers its own /readyz with 200; 503 otherwise."""
        ready, info = await client.readiness()
        body = {"status": "ready" if ready else "not_ready", "generator": info}
        return JSONResponse(
            body, status_code=200 if ready else 503, headers={} if ready else {"Retry-After": "1"}
        )

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
