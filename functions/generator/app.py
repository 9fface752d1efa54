"""The generator's HTTP surface: `create_app(settings)` with thin routes over the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from generator.metrics import GeneratorMetrics
from generator.serving.engine import Engine, Job
from generator.serving.protocol import GenerateRequest, effective_max_new_tokens
from generator.settings import Settings
from streamkit.errors import install_error_handlers, render_error
from streamkit.events import ErrorEvent, TokenEvent, to_ndjson
from streamkit.generation import parse_params
from streamkit.http import STREAM_HEADERS, BodyLimit, query_params
from streamkit.logs import AccessLog, configure_logging
from streamkit.openapi import (
    READINESS,
    errors,
    ndjson_line,
    query_parameters,
    streamed,
    with_limits,
)
from streamkit.requestid import RequestIdMiddleware

NDJSON_STREAM = "One JSON event a line: `status`…, `token`…, then one `done` or `error`."
PLAIN_STREAM = "The generated text as it comes; a failure ends it with an `[error] …` line."


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the app. Pass `engine` to share one loaded model between apps (tests, Lambda)."""
    settings = settings or Settings()
    engine = engine or Engine(settings, GeneratorMetrics())
    configure_logging(settings.log_level)
    model_name = settings.served_name  # read once: /readyz is polled

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start_loading()  # idempotent: Mangum may run the lifespan per invocation
        yield

    app = FastAPI(title="generator", version="0.1.0", lifespan=lifespan)
    app.openapi = with_limits(app, settings)  # type: ignore[method-assign]
    app.state.engine = engine
    # Outermost last: the request id, then the access log, then the body cap.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, render=render_error)
    app.add_middleware(AccessLog)
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)

    async def accept(request: GenerateRequest) -> tuple[Job, Any]:
        """Validate against the limits, tokenize when the model is up, take a queue place.
        Everything that can be refused is refused here, before the stream starts."""
        job = Job(request=request, max_new_tokens=effective_max_new_tokens(request, settings))
        if engine.load_error is not None:
            raise engine.load_error
        if engine.ready:
            job.prompt_ids = await run_in_threadpool(engine.encode, job)
        try:
            ticket = engine.admission.enter()
        except Exception as exc:
            engine.metrics.requests.labels(outcome=getattr(exc, "code", "error")).inc()
            raise
        return job, ticket

    @app.post(
        "/v1/generate",
        response_class=StreamingResponse,
        responses={
            **streamed("application/x-ndjson", NDJSON_STREAM, ndjson_line()),
            **errors(413, 422, 503),
        },
    )
    async def generate(request: GenerateRequest) -> StreamingResponse:
        """Stream NDJSON events: optional `status`, `token`…, then one `done` or `error`."""
        job, ticket = await accept(request)

        async def lines() -> AsyncIterator[bytes]:
            async for event in engine.stream(job, ticket):
                yield to_ndjson(event)

        return StreamingResponse(lines(), media_type="application/x-ndjson", headers=STREAM_HEADERS)

    @app.get(
        "/",
        response_class=StreamingResponse,  # its media type is its own: errors stay JSON
        responses={**streamed("text/plain", PLAIN_STREAM), **errors(422, 503)},
        openapi_extra={"parameters": query_parameters(required=("prompt",))},
    )
    async def generate_plain(http_request: Request) -> StreamingResponse:
        """The original design's endpoint: `GET /?prompt=...`, the text streamed as it comes.
        A failure after the first byte is written as a final `[error] ...` line."""
        request = parse_params(query_params(http_request), strict=False)
        job, ticket = await accept(request)

        async def text() -> AsyncIterator[str]:
            async for event in engine.stream(job, ticket):
                if isinstance(event, TokenEvent):
                    yield event.text
                elif isinstance(event, ErrorEvent):
                    yield f"\n[error] {event.code}: {event.message}\n"

        return StreamingResponse(
            text(), media_type="text/plain; charset=utf-8", headers=STREAM_HEADERS
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive (the model may still be loading)."""
        return {"status": "ok"}

    @app.get("/readyz", responses=READINESS)
    async def readyz() -> JSONResponse:
        """200 once the model is loaded; 503 while loading or after a failed load."""
        if engine.ready:
            return JSONResponse(
                {"status": "ready", "model": settings.model, "model_name": model_name}
            )
        error = engine.load_error
        body: dict[str, Any] = {
            "status": "failed" if error else "loading",
            "model": settings.model,
            "model_name": model_name,
        }
        if error:
            body["error"] = error.payload()
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest(engine.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
