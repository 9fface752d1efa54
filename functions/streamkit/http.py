"""What both functions' HTTP surfaces share: a stream's headers, generation parameters
read from a query string (`GET /` on the generator, `GET /generate` on the gateway), and
the cap on a request body's size."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamkit.errors import PayloadTooLarge, Renderer, ServiceError

T = TypeVar("T")

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


class ClientGone(ServiceError):
    """The client left before the answer began (nobody reads this; the access log shows
    499, as nginx names a request its client closed)."""

    status_code = 499
    code = "client_closed_request"


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result, or `ClientGone` as soon as the client disconnects, `work` then
    cancelled. Before a response starts nothing else watches the connection: a client
    that leaves while the gateway waits for the generator's first answer (a cold start)
    would otherwise hold its stream's place until a timeout."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    async def do(group: TaskGroup) -> None:
        try:
            outcome.append(await work)
        except Exception as exc:  # raised below, outside the task group (not grouped)
            failure.append(exc)
        group.cancel_scope.cancel()

    async def watch(group: TaskGroup) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        group.cancel_scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(do, group)
        group.start_soon(watch, group)
    if failure:
        raise failure[0]
    if not outcome:
        raise ClientGone("the client closed the connection")
    return outcome[0]


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
