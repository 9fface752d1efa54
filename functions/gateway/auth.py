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
from typing import Annotated, Any

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from streamkit.errors import ServiceError


class Unauthorized(ServiceError):
    status_code = 401
    code = "invalid_api_key"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="gateway"'}


# Module-level: FastAPI resolves the (postponed) annotation below from this module's names.
BEARER = HTTPBearer(auto_error=False, description="One of the gateway's API_KEYS.")


def api_key_dependencies(keys: list[str]) -> list[Any]:
    """Route dependencies that admit a request carrying one of `keys`: none when there are
    no keys (the routes are open, and the OpenAPI document says so: no security scheme);
    otherwise a bearer scheme, which the document then declares."""
    if not keys:
        return []
    accepted = [key.encode() for key in keys]

    async def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> None:
        offered = credentials.credentials.encode() if credentials is not None else b""
        # Every key compared, each in constant time: the answer's timing says nothing.
        matches = [hmac.compare_digest(offered, key) for key in accepted]
        if credentials is None or not any(matches):
            raise Unauthorized("a valid API key is required: Authorization: Bearer <key>")

    return [Depends(check)]
