"""Structured logging: one JSON object per line, carrying the current request id, and the
access log (`AccessLog`), which never records a query string or a body: no prompt,
conversation or generated text reaches a log line."""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


class JsonFormatter(logging.Formatter):
    """Renders records as JSON; fields passed as `extra={"fields": {...}}` are merged in."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str) -> None:
    """Send this process's logs, uvicorn's included, to stderr as JSON lines (idempotent).
    uvicorn's access log (plain text, the full URL with its query string) is silenced:
    `AccessLog` writes the access lines; httpx's per-request lines are dropped below
    warnings (the gateway's calls to the generator are in its own log lines)."""
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root.handlers = [handler]
    root.setLevel(level.upper())
    # uvicorn's own lines (startup, shutdown, protocol errors) as JSON lines too: through
    # the root handler, not the plain-text one uvicorn configured before the app existed.
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("httpx").setLevel(logging.WARNING)


access_log = logging.getLogger("access")


class AccessLog:
    """One JSON line per request once its response has ended: method, path (never the
    query string, which may carry a prompt or a start id), status, duration and the
    request id (so it goes inside `RequestIdMiddleware`). Pure ASGI, like that one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            fields = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status or None,  # None: the client left before an answer
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            }
            access_log.info("request", extra={"fields": fields})
