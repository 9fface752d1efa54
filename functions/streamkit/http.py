"""What both functions' HTTP surfaces share: a stream's headers, and generation
parameters read from a query string (`GET /` on the generator, `GET /generate` on the
gateway)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

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
