"""API keys for the OpenAI-compatible routes (`/v1/*`).

With API_KEYS set (one key or several, comma-separated, so a key can be rotated without
a gap), every `/v1/*` request needs `Authorization: Bearer <key>`; otherwise a 401 in
OpenAI's envelope, which the official clients raise as `AuthenticationError`. Unset,
the routes are open (local use). The page's routes (`/start`, `/generate`) never take a
key: a static page cannot keep one secret; they are bounded instead (limits, MAX_STREAMS,
and the deployment's rate limit).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import Request

from streamkit.errors import ServiceError


class Unauthorized(ServiceError):
    status_code = 401
    code = "invalid_api_key"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="gateway"'}


def require_api_key(keys: list[str]) -> Callable[[Request], Awaitable[None]]:
    """A route dependency that admits a request carrying one of `keys` (none: everyone)."""
    accepted = [key.encode() for key in keys]

    async def check(request: Request) -> None:
        if not accepted:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        offered = token.strip().encode()
        # Every key compared, each in constant time: the answer's timing says nothing.
        matches = [hmac.compare_digest(offered, key) for key in accepted]
        if scheme.lower() != "bearer" or not any(matches):
            raise Unauthorized("a valid API key is required: Authorization: Bearer <key>")

    return check
