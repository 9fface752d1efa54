"""What both functions' HTTP surfaces share: a stream's headers, generation parameters
read from a query string (`GET /` on the generator, `GET /generate` on the gateway), and
the cap on a request body's size."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamkit.errors import PayloadTooLarge, Renderer

# A stream must reach the client as it is written: no cache may keep it, and proxies
# (nginx, some CDNs) must not buffer it.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def query_params(request: Request) -> dict[str, Any]:
    """The query string as generation parameters: one value per name, except `stop`,
    which may repeat (`?stop=a&stop=b`) and is always a list."""
    params: dict[str, Any] = dict(request.query_params)
    if "stop" in params:
        params["stop"] = request.query_params.getlist("stop")
    return params


class BodyLimit:
    """Refuse a request body larger than `max_bytes` with a 413, before anything reads or
    parses it: a declared Content-Length at once, a chunked body as soon as it passes the
    limit (held here until complete, then handed on). Pure ASGI, so a streamed response
    and a client's disconnect pass through untouched."""

    def __init__(self, app: ASGIApp, max_bytes: int, render: Renderer) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)  # the server holds it to its length
            return
        held: list[Message] = []
        size = 0
        while True:
            message = await receive()
            held.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body"):
                break

        async def replay() -> Message:
            return held.pop(0) if held else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = self.render(Request(scope), PayloadTooLarge(self.max_bytes))
        await response(scope, receive, send)
